"""The ``claude`` backend: Meta/Feedback agents and the task model on Anthropic's Messages API.

- Roles: :func:`sia_core.agent.meta_step` / :func:`~sia_core.agent.feedback_step` over a
  :class:`ClaudeAdapter` (tool use, streamed replies, prompt caching on tools, system prompt and
  the conversation so far, usage and cost per call).
- Task model: :class:`ClaudeTaskModel` turns the scaffold's OpenAI chat requests into Messages
  API calls and the replies back (text, tool calls, usage with ``cost``).
- Retries: the SDK retries 408/409/429/5xx/529 answers with exponential backoff (honouring
  ``retry-after``), ``max_retries`` times; an ``error`` event in the middle of a stream (e.g.
  ``overloaded_error``) or a tool input that is not valid JSON is retried here, ``stream_retries``
  times with the same backoff.

Environment: ``ANTHROPIC_API_KEY`` (or ``ANTHROPIC_AUTH_TOKEN``), ``ANTHROPIC_BASE_URL`` (e.g. a
proxy). Settings (``--backend-opt KEY=VALUE``): ``stream`` (1), ``max_retries`` (4),
``stream_retries`` (3), ``backoff_s`` (1.0), ``timeout_s`` (600), ``cache`` (1), ``base_url``,
``price_input`` / ``price_output`` (USD per million tokens, for a model not in the price table),
``task_max_tokens`` (1024, when a scaffold's call sets none), ``sampling`` (1: forward
``temperature``/``top_p``), and the agent limits of :class:`sia_core.agent.AgentLimits` (``max_turns``, ``max_tokens``, ...).
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import attrs

from sia_core.agent import AgentLimits, ToolCall, ToolSpec, Turn, feedback_step, meta_step
from sia_core.backend import AgentOutcome, BackendOptions, FeedbackRequest, MetaRequest
from sia_core.errors import SiaError
from sia_core.gateway import UpstreamError

from .models import resolve_model, usage_with_cost

SETTINGS = frozenset(
    {
        "stream",
        "max_retries",
        "stream_retries",
        "backoff_s",
        "timeout_s",
        "cache",
        "base_url",
        "price_input",
        "price_output",
        "task_max_tokens",
        "sampling",
    }
    | {f.name for f in attrs.fields(AgentLimits)}
)
EPHEMERAL = {"type": "ephemeral"}
#: error types of an ``error`` event inside a stream that are worth another try
RETRY_STREAM_ERRORS = ("overloaded_error", "api_error", "rate_limit_error")


def _flag(value: Any) -> bool:
    return str(value).strip().lower() not in ("0", "false", "no", "off", "")


def _num(settings: dict[str, Any], key: str, default: float) -> float:
    try:
        return float(settings.get(key, default))
    except (TypeError, ValueError):
        raise SiaError(f"--backend-opt {key}={settings[key]!r}: expected a number") from None


def make_client(settings: dict[str, Any]) -> Any:
    """An ``anthropic.Anthropic`` client from the environment and the backend settings."""
    if not (os.environ.get("ANTHROPIC_API_KEY") or os.environ.get("ANTHROPIC_AUTH_TOKEN")):
        raise SiaError(
            "the claude backend needs an API key: set ANTHROPIC_API_KEY "
            "(or choose --backend local for the offline default)"
        )
    import anthropic

    kwargs: dict[str, Any] = {
        "max_retries": int(_num(settings, "max_retries", 4)),
        "timeout": _num(settings, "timeout_s", 600.0),
    }
    if settings.get("base_url"):
        kwargs["base_url"] = str(settings["base_url"])
    return anthropic.Anthropic(**kwargs)


def _price(settings: dict[str, Any]) -> tuple[float, float] | None:
    if "price_input" in settings or "price_output" in settings:
        return (_num(settings, "price_input", 0.0), _num(settings, "price_output", 0.0))
    return None


# --------------------------------------------------------------------------------------------
# The agent adapter
# --------------------------------------------------------------------------------------------


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
    """:class:`sia_core.agent.ModelAdapter` on the Messages API."""

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


# --------------------------------------------------------------------------------------------
# The task model
# --------------------------------------------------------------------------------------------

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


class ClaudeTaskModel:
    """The :class:`~sia_core.backend.TaskModel` the gateway routes scaffold calls to."""

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


# --------------------------------------------------------------------------------------------
# The backend
# --------------------------------------------------------------------------------------------


class ClaudeBackend:
    """Claude for the Meta/Feedback roles (``--meta_model``, default ``haiku``) and as task
    model (``--task_model``, default ``haiku``)."""

    name = "claude"

    def __init__(self, options: BackendOptions | None = None) -> None:
        self.options = options or BackendOptions()
        settings = self.options.known_settings("claude", SETTINGS)
        self.settings = settings
        self.limits = AgentLimits.from_settings(settings)
        self.meta_model = resolve_model(self.options.meta_model)
        self.task_model_id = resolve_model(self.options.task_model)
        self.client: Any = make_client(settings)
        self.adapter = ClaudeAdapter(
            self.client,
            self.meta_model,
            stream=_flag(settings.get("stream", 1)),
            cache=_flag(settings.get("cache", 1)),
            stream_retries=int(_num(settings, "stream_retries", 3)),
            backoff_s=_num(settings, "backoff_s", 1.0),
            price=_price(settings),
        )
        self._task_model: ClaudeTaskModel | None = None

    def meta(self, request: MetaRequest) -> AgentOutcome:
        return meta_step(self.adapter, request, self.limits)

    def feedback(self, request: FeedbackRequest) -> AgentOutcome:
        return feedback_step(self.adapter, request, self.limits)

    def task_model(self) -> ClaudeTaskModel:
        if self._task_model is None:
            self._task_model = ClaudeTaskModel(
                self.client,
                self.task_model_id,
                max_tokens=int(_num(self.settings, "task_max_tokens", 1024)),
                price=_price(self.settings),
                sampling=_flag(self.settings.get("sampling", 1)),
            )
        return self._task_model

    def close(self) -> None:
        client, self.client = self.client, None
        if client is not None:
            client.close()
