"""Claude as the task model: the scaffold's OpenAI chat requests as Messages API calls.

:func:`openai_to_anthropic` turns an OpenAI ``chat.completions`` body into ``messages.create``
arguments; :class:`ClaudeTaskModel` sends it and turns the reply back into an OpenAI completion
(text, tool calls, usage with ``cost``).
"""

from __future__ import annotations

import json
import time
from typing import Any

from sia_core.contracts.backend import TaskModel
from sia_core.services.gateway import UpstreamError

from .models import usage_with_cost

#: Messages API ``stop_reason`` -> OpenAI ``finish_reason``
FINISH = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
}


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            str(p.get("text", "")) for p in content if isinstance(p, dict) and "text" in p
        )
    return "" if content is None else str(content)


def openai_to_anthropic(
    body: dict[str, Any], model: str, default_max: int, forward_sampling: bool = True
) -> dict[str, Any]:
    """An OpenAI ``chat.completions`` body -> ``messages.create`` keyword arguments."""
    system: list[str] = []
    messages: list[dict[str, Any]] = []

    def add(role: str, blocks: list[dict[str, Any]]) -> None:
        if messages and messages[-1]["role"] == role:
            messages[-1]["content"].extend(blocks)
        else:
            messages.append({"role": role, "content": blocks})

    for m in body.get("messages") or []:
        role = m.get("role")
        if role in ("system", "developer"):
            system.append(_text(m.get("content")))
        elif role == "tool":
            add(
                "user",
                [
                    {
                        "type": "tool_result",
                        "tool_use_id": str(m.get("tool_call_id", "")),
                        "content": _text(m.get("content")) or "(empty)",
                    }
                ],
            )
        elif role == "assistant":
            blocks: list[dict[str, Any]] = []
            if _text(m.get("content")):
                blocks.append({"type": "text", "text": _text(m.get("content"))})
            for c in m.get("tool_calls") or []:
                fn = c.get("function") or {}
                try:
                    args = json.loads(fn.get("arguments") or "{}")
                except ValueError:
                    args = {}
                blocks.append(
                    {"type": "tool_use", "id": c.get("id"), "name": fn.get("name"), "input": args}
                )
            add("assistant", blocks or [{"type": "text", "text": "(empty)"}])
        else:
            add("user", [{"type": "text", "text": _text(m.get("content")) or "(empty)"}])
    if not messages or messages[0]["role"] != "user":
        messages.insert(0, {"role": "user", "content": [{"type": "text", "text": "(start)"}]})
    kwargs: dict[str, Any] = {
        "model": model,
        "messages": messages,
        "max_tokens": int(
            body.get("max_completion_tokens") or body.get("max_tokens") or default_max
        ),
    }
    if system:
        kwargs["system"] = "\n\n".join(system)
    # SDK 1.0 dropped the sampling keywords; the API still takes them in the body (models that
    # reject them answer 400, which reaches the scaffold as an error: --backend-opt sampling=0)
    sampling = {k: body[k] for k in ("temperature", "top_p") if body.get(k) is not None}
    if sampling and forward_sampling:
        kwargs["extra_body"] = sampling
    stop = body.get("stop")
    if stop:
        kwargs["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    tools = body.get("tools")
    if tools:
        kwargs["tools"] = [
            {
                "name": t["function"]["name"],
                "description": t["function"].get("description", ""),
                "input_schema": t["function"].get("parameters") or {"type": "object"},
            }
            for t in tools
            if t.get("type") == "function"
        ]
        choice = body.get("tool_choice")
        if choice == "required":
            kwargs["tool_choice"] = {"type": "any"}
        elif choice == "none":
            kwargs["tool_choice"] = {"type": "none"}
        elif isinstance(choice, dict) and choice.get("function"):
            kwargs["tool_choice"] = {"type": "tool", "name": choice["function"]["name"]}
    return kwargs


class ClaudeTaskModel(TaskModel):
    """The :class:`~sia_core.contracts.backend.TaskModel` the gateway routes scaffold calls to."""

    trainable = False

    def __init__(
        self,
        client: Any,
        model: str,
        *,
        max_tokens: int = 1024,
        price: Any = None,
        sampling: bool = True,
    ) -> None:
        self.client = client
        self.sampling = sampling
        self.name = model
        self.max_tokens = max_tokens
        self.price = price

    def chat(self, body: dict[str, Any]) -> dict[str, Any]:
        import anthropic

        kwargs = openai_to_anthropic(body, self.name, self.max_tokens, self.sampling)
        try:
            message = self.client.messages.create(**kwargs)
        except anthropic.APIStatusError as exc:
            raise UpstreamError(exc.status_code, f"Claude: {exc.message}") from exc
        except anthropic.APIConnectionError as exc:
            raise UpstreamError(502, f"cannot reach Claude: {exc}") from exc
        text = "".join(b.text for b in message.content if b.type == "text")
        tool_calls = [
            {
                "id": b.id,
                "type": "function",
                "function": {"name": b.name, "arguments": json.dumps(b.input)},
            }
            for b in message.content
            if b.type == "tool_use"
        ]
        usage = usage_with_cost(self.name, message.usage.model_dump(), self.price)
        prompt = usage["input_tokens"]  # cached tokens included
        reply: dict[str, Any] = {"role": "assistant", "content": text}
        if tool_calls:
            reply["tool_calls"] = tool_calls
        return {
            "id": message.id,
            "object": "chat.completion",
            "created": int(time.time()),
            "model": message.model,
            "choices": [
                {
                    "index": 0,
                    "message": reply,
                    "finish_reason": FINISH.get(str(message.stop_reason), "stop"),
                }
            ],
            "usage": {
                "prompt_tokens": prompt,
                "completion_tokens": usage["output_tokens"],
                "total_tokens": prompt + usage["output_tokens"],
                "cost": usage["cost_usd"],
            },
        }

    def close(self) -> None:
        """Nothing to release (the client belongs to the backend)."""
