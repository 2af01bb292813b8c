"""The OpenAI wire format as the gateway speaks it.

The reply and error bodies it sends, the request headers it reads, token estimates for calls
whose usage is missing, the translation between ``/v1/completions`` and chat calls, and the
re-cutting of a complete reply into server-sent stream events.
"""

from __future__ import annotations

import json
import re
import secrets
import time
from typing import Any, Protocol

import attrs

_PIECE = re.compile(r"\S+\s*|\s+")
_STREAM_PIECE_CHARS = 64
# completions-only fields that have no (or a differently typed) chat counterpart
_COMPLETIONS_ONLY = ("prompt", "echo", "best_of", "suffix", "logprobs")


class _Headers(Protocol):
    def get(self, name: str, /) -> str | None: ...


@attrs.frozen
class _Reply:
    status: int
    body: bytes
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()


class _BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _error(
    status: int,
    message: str,
    kind: str,
    code: str | None = None,
    headers: tuple[tuple[str, str], ...] = (),
) -> _Reply:
    body = {"error": {"message": message, "type": kind, "param": None, "code": code}}
    return _Reply(status, json.dumps(body).encode(), headers=headers)


def _json(body: Any) -> _Reply:
    return _Reply(200, json.dumps(body).encode())


def _estimate_tokens(text: str) -> int:
    return (len(text) + 3) // 4


def _prompt_text(body: dict[str, Any]) -> str:
    parts: list[str] = []
    for message in body.get("messages") or ():
        if not isinstance(message, dict):
            continue
        content = message.get("content")
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):
            parts.extend(
                str(p.get("text", "")) for p in content if isinstance(p, dict) and "text" in p
            )
    return "\n".join(parts)


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _float(value: Any) -> float:
    try:
        return float(value or 0)
    except (TypeError, ValueError):
        return 0.0


def _completions_to_chat(body: dict[str, Any]) -> dict[str, Any]:
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise _BadRequest(
            400, "'prompt' must be a string (batched or token-id prompts are not supported)"
        )
    chat = {k: v for k, v in body.items() if k not in _COMPLETIONS_ONLY}
    chat["messages"] = [{"role": "user", "content": prompt}]
    return chat


def _chat_to_completions(resp: dict[str, Any]) -> dict[str, Any]:
    ident = str(resp.get("id") or "")
    choices = []
    for i, choice in enumerate(resp["choices"]):
        message = choice.get("message") if isinstance(choice.get("message"), dict) else {}
        choices.append(
            {
                "index": choice.get("index", i),
                "text": message.get("content") or "",
                "logprobs": None,
                "finish_reason": choice.get("finish_reason"),
            }
        )
    return {
        "id": "cmpl-" + ident.removeprefix("chatcmpl-")
        if ident
        else f"cmpl-{secrets.token_hex(12)}",
        "object": "text_completion",
        "created": resp.get("created") or int(time.time()),
        "model": resp.get("model", ""),
        "choices": choices,
        "usage": resp.get("usage"),
    }


def _pieces(text: str) -> list[str]:
    """``text`` cut at word boundaries into pieces of about ``_STREAM_PIECE_CHARS``."""
    pieces: list[str] = []
    current = ""
    for word in _PIECE.findall(text):
        if current and len(current) + len(word) > _STREAM_PIECE_CHARS:
            pieces.append(current)
            current = ""
        current += word
    if current:
        pieces.append(current)
    return pieces


def _sse_events(
    resp: dict[str, Any], *, completions: bool, include_usage: bool
) -> list[dict[str, Any]]:
    """A complete response re-cut as OpenAI stream chunks (``chat.completion.chunk`` or
    ``text_completion``). Usage rides on the last chunk, or on its own chunk with empty
    ``choices`` when the client asked for ``stream_options.include_usage`` (as OpenAI does)."""
    head: dict[str, Any] = {
        "id": resp.get("id") or f"chatcmpl-{secrets.token_hex(12)}",
        "object": "text_completion" if completions else "chat.completion.chunk",
        "created": resp.get("created") or int(time.time()),
        "model": resp.get("model", ""),
    }
    if not completions and resp.get("system_fingerprint"):
        head["system_fingerprint"] = resp["system_fingerprint"]
    events: list[dict[str, Any]] = []

    def add(index: int, part: dict[str, Any], finish: str | None) -> None:
        events.append({**head, "choices": [{"index": index, **part, "finish_reason": finish}]})

    for i, choice in enumerate(resp["choices"]):
        index = choice.get("index", i)
        finish = choice.get("finish_reason") or "stop"
        if completions:
            for piece in _pieces(choice.get("text") or ""):
                add(index, {"text": piece, "logprobs": None}, None)
            add(index, {"text": "", "logprobs": None}, finish)
            continue
        message = choice.get("message") if isinstance(choice.get("message"), dict) else {}
        add(index, {"delta": {"role": message.get("role") or "assistant", "content": ""}}, None)
        for piece in _pieces(message.get("content") or ""):
            add(index, {"delta": {"content": piece}}, None)
        tool_calls = message.get("tool_calls")
        if isinstance(tool_calls, list) and tool_calls:
            deltas = [{"index": j, **tc} for j, tc in enumerate(tool_calls) if isinstance(tc, dict)]
            add(index, {"delta": {"tool_calls": deltas}}, None)
        add(index, {"delta": {}}, finish)
    usage = resp.get("usage")
    if include_usage:
        events.append({**head, "choices": [], "usage": usage})
    elif events:
        events[-1]["usage"] = usage
    return events
