"""The Meta/Feedback agents' model adapter on Anthropic's Messages API.

:class:`ClaudeAdapter` is the :class:`sia_core.services.agents.ModelAdapter` the ``claude``
backend's agents run on: tool use, streamed replies, prompt caching on tools, system prompt and
the conversation so far, usage and cost per call. An ``error`` event in the middle of a stream
(e.g. ``overloaded_error``) or a tool input that is not valid JSON is retried here.
"""

from __future__ import annotations

import json
import time
from typing import Any

from sia_core.services.agents import ToolCall, ToolSpec, Turn

from .models import usage_with_cost

EPHEMERAL = {"type": "ephemeral"}
#: error types of an ``error`` event inside a stream that are worth another try
RETRY_STREAM_ERRORS = ("overloaded_error", "api_error", "rate_limit_error")


def to_anthropic_messages(messages: list[dict[str, Any]], cache: bool) -> list[dict[str, Any]]:
    """Neutral agent messages -> Messages API ``messages`` (roles alternate; cache breakpoint
    on the last block so the next turn reads the conversation so far from the cache)."""
    out: list[dict[str, Any]] = []
    for m in messages:
        if m["role"] == "user":
            role, blocks = "user", [{"type": "text", "text": m["content"] or "(empty)"}]
        elif m["role"] == "assistant":
            role, blocks = "assistant", []
            if m.get("content"):
                blocks.append({"type": "text", "text": m["content"]})
            for c in m.get("tool_calls") or []:
                blocks.append(
                    {"type": "tool_use", "id": c["id"], "name": c["name"], "input": c["arguments"]}
                )
            blocks = blocks or [{"type": "text", "text": "(no reply)"}]
        else:
            role = "user"
            blocks = [
                {
                    "type": "tool_result",
                    "tool_use_id": r["id"],
                    "content": r["content"] or "(empty)",
                    "is_error": bool(r["is_error"]),
                }
                for r in m["results"]
            ]
        if out and out[-1]["role"] == role:
            out[-1]["content"].extend(blocks)
        else:
            out.append({"role": role, "content": blocks})
    if cache and out:
        last = out[-1]["content"][-1]
        out[-1]["content"][-1] = {**last, "cache_control": EPHEMERAL}
    return out


class ClaudeAdapter:
    """:class:`sia_core.services.agents.ModelAdapter` on the Messages API."""

    def __init__(
        self,
        client: Any,
        model: str,
        *,
        stream: bool = True,
        cache: bool = True,
        stream_retries: int = 3,
        backoff_s: float = 1.0,
        price: tuple[float, float] | None = None,
    ) -> None:
        self.client = client
        self.model = model
        self.stream = stream
        self.cache = cache
        self.stream_retries = stream_retries
        self.backoff_s = backoff_s
        self.price = price

    def request(
        self,
        system: str,
        messages: list[dict[str, Any]],
        tools: list[ToolSpec],
        max_output_tokens: int,
    ) -> dict[str, Any]:
        """The keyword arguments of ``messages.create`` / ``messages.stream``."""
        api_tools: list[dict[str, Any]] = [
            {"name": t.name, "description": t.description, "input_schema": t.parameters}
            for t in tools
        ]
        system_block: dict[str, Any] = {"type": "text", "text": system}
        if self.cache:
            system_block["cache_control"] = EPHEMERAL
            if api_tools:
                api_tools[-1] = {**api_tools[-1], "cache_control": EPHEMERAL}
        return {
            "model": self.model,
            "max_tokens": max_output_tokens,
            "system": [system_block],
            "tools": api_tools,
            "messages": to_anthropic_messages(messages, self.cache),
        }

    def send(
        self,
        system: str,
        messages: list[dict[str, Any]],
        tools: list[ToolSpec],
        max_output_tokens: int,
    ) -> Turn:
        import anthropic

        kwargs = self.request(system, messages, tools, max_output_tokens)
        for attempt in range(self.stream_retries + 1):
            try:
                if self.stream:
                    with self.client.messages.stream(**kwargs) as stream:
                        message = stream.get_final_message()
                else:
                    message = self.client.messages.create(**kwargs)
                return self._turn(message)
            except anthropic.APIStatusError as exc:
                # HTTP errors were retried by the SDK already; an error event inside a 200
                # stream was not
                kind = (exc.body or {}).get("error", {}) if isinstance(exc.body, dict) else {}
                in_stream = exc.status_code < 400
                if not (in_stream and kind.get("type") in RETRY_STREAM_ERRORS):
                    raise
                if attempt == self.stream_retries:
                    raise RuntimeError(
                        f"Claude stream broke with {kind.get('type')} "
                        f"{self.stream_retries + 1} times: {kind.get('message', '')}"
                    ) from exc
            except ValueError as exc:  # the SDK could not parse a streamed tool input
                if "tool parameter JSON" not in str(exc):
                    raise
                if attempt == self.stream_retries:
                    raise RuntimeError(
                        f"Claude sent tool input that is not valid JSON "
                        f"{self.stream_retries + 1} times: {str(exc)[:300]}"
                    ) from exc
            time.sleep(self.backoff_s * 2**attempt)
        raise AssertionError("unreachable")  # pragma: no cover

    def _turn(self, message: Any) -> Turn:
        texts, calls = [], []
        for block in message.content:
            if block.type == "text":
                texts.append(block.text)
            elif block.type == "tool_use":
                args = block.input
                if isinstance(args, dict):
                    calls.append(ToolCall(id=block.id, name=block.name, arguments=args))
                else:
                    raw = args if isinstance(args, str) else json.dumps(args, default=str)
                    calls.append(ToolCall(id=block.id, name=block.name, arguments=None, raw=raw))
        raw_usage = message.usage.model_dump() if message.usage is not None else {}
        return Turn(
            text="".join(texts),
            tool_calls=tuple(calls),
            usage=usage_with_cost(self.model, raw_usage, self.price),
            stop_reason=str(message.stop_reason or ""),
            model=str(message.model or self.model),
        )
