"""What :mod:`.openai_stub` answers: completion objects, their event stream, error bodies.

:func:`completion_body` builds the ``chat.completion`` or ``text_completion`` object for a
request and a reply text (usage counts whitespace-separated words; ``max_tokens`` cuts the reply
with ``finish_reason: "length"``); :func:`stream_chunks` sends the same completion the way
``stream: true`` gets it, as server-sent events ending with ``data: [DONE]``. Only the standard
library is used.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from typing import Any

from .stub_http import count_tokens

__all__ = ["completion_body", "error_body", "message_text", "stream_chunks"]

_PIECE = re.compile(r"\S+\s*|\s+")


def message_text(message: dict[str, Any]) -> str:
    """The text of one chat message (a string ``content`` or its ``text`` parts joined)."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            str(part.get("text", ""))
            for part in content
            if isinstance(part, dict) and part.get("type") == "text"
        )
    return ""


def error_body(status: int, message: str) -> dict[str, Any]:
    """An OpenAI error body for HTTP ``status``."""
    if status == 429:
        kind, code = "requests", "rate_limit_exceeded"
    elif status >= 500:
        kind, code = "server_error", None
    elif status == 401:
        kind, code = "invalid_request_error", "invalid_api_key"
    else:
        kind, code = "invalid_request_error", None
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


def completion_body(
    body: dict[str, Any], *, seq: int, chat: bool, text: str, null: bool, default_model: str
) -> dict[str, Any]:
    """The completion answering request ``body`` (number ``seq``) with ``text`` in every choice.

    ``chat``: a ``chat.completion`` (else a ``text_completion``); ``null`` sends
    ``content: null``; the model is the request's, else ``default_model``.
    """
    if chat:
        prompt_tokens = sum(
            count_tokens(message_text(m)) for m in body["messages"] if isinstance(m, dict)
        )
    else:
        prompt_tokens = count_tokens(body["prompt"])
    finish = "stop"
    limit = body.get("max_completion_tokens") or body.get("max_tokens")
    if isinstance(limit, int) and count_tokens(text) > limit:
        text, finish = " ".join(text.split()[:limit]), "length"
    completion_tokens = count_tokens(text)
    usage = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }
    n = body.get("n")
    n_choices = n if isinstance(n, int) and n > 0 else 1
    if chat:
        ident, obj = f"chatcmpl-stub-{seq}", "chat.completion"
        choices: list[dict[str, Any]] = [
            {
                "index": i,
                "message": {"role": "assistant", "content": None if null else text},
                "logprobs": None,
                "finish_reason": finish,
            }
            for i in range(n_choices)
        ]
    else:
        ident, obj = f"cmpl-stub-{seq}", "text_completion"
        choices = [
            {"index": i, "text": text, "logprobs": None, "finish_reason": finish}
            for i in range(n_choices)
        ]
    return {
        "id": ident,
        "object": obj,
        "created": int(time.time()),
        "model": body.get("model") or default_model,
        "system_fingerprint": "stub",
        "choices": choices,
        "usage": usage,
    }


def stream_chunks(completion: dict[str, Any], include_usage: bool) -> Iterator[bytes]:
    """``completion`` as ``stream: true`` sends it: one event per word of each choice, a last
    event per choice with its ``finish_reason``, the usage (when ``include_usage``), ``[DONE]``.
    """
    for event in _stream_events(completion, include_usage):
        yield f"data: {json.dumps(event)}\n\n".encode()
    yield b"data: [DONE]\n\n"


def _stream_events(completion: dict[str, Any], include_usage: bool) -> Iterator[dict[str, Any]]:
    chat = completion["object"] == "chat.completion"
    obj = "chat.completion.chunk" if chat else "text_completion"
    head = {
        "id": completion["id"],
        "object": obj,
        "created": completion["created"],
        "model": completion["model"],
    }

    def chunk(index: int, piece: str | None, finish_reason: str | None) -> dict[str, Any]:
        if chat:
            delta: dict[str, Any] = {} if piece is None else {"content": piece}
            if piece == "" and finish_reason is None:
                delta["role"] = "assistant"
            choice = {"index": index, "delta": delta, "logprobs": None}
        else:
            choice = {"index": index, "text": piece or "", "logprobs": None}
        return {**head, "choices": [{**choice, "finish_reason": finish_reason}]}

    for choice in completion["choices"]:
        index = choice["index"]
        text = (choice["message"]["content"] if chat else choice["text"]) or ""
        if chat:
            yield chunk(index, "", None)
        for piece in _PIECE.findall(text):
            yield chunk(index, piece, None)
        yield chunk(index, None, choice["finish_reason"])
    if include_usage:
        yield {**head, "choices": [], "usage": completion["usage"]}
