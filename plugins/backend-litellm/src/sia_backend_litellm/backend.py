"""The ``litellm`` backend: any litellm model for the Meta/Feedback agents and as task model.

- Roles: :func:`sia_core.services.agents.meta_step` / :func:`~sia_core.services.agents.feedback_step` over a
  :class:`LiteLLMAdapter`. Where the provider supports tool calling
  (``litellm.supports_function_calling``) the tools go as OpenAI ``tools``; elsewhere (e.g. an
  unknown model on a local server) a text protocol: the tools are described in the system prompt
  and the model answers with fenced ``tool`` blocks holding ``{"name", "arguments"}`` JSON.
- Task model: :class:`LiteLLMTaskModel` sends the scaffold's OpenAI chat requests through
  ``litellm.completion`` (``drop_params``: a provider that lacks a parameter ignores it).

Model strings are litellm's: ``openai/gpt-4o-mini``, ``anthropic/claude-haiku-4-5``,
``ollama/llama3``, or ``openai/<name>`` with ``api_base`` for any OpenAI-compatible server.
Settings (``--backend-opt KEY=VALUE``): ``api_base`` / ``api_key`` (both roles),
``meta_api_base`` / ``meta_api_key`` / ``task_api_base`` / ``task_api_key`` (one role),
``tool_mode`` (auto | native | text), ``num_retries`` (3; never after a timeout), ``timeout_s``
(600; each call's output is capped to fit the model's context and measured speed, see
:mod:`.calls`),
``temperature`` (of the agent's calls; unset: the provider's default) and the agent limits of
:class:`sia_core.services.agents.AgentLimits`. ``LITELLM_LOCAL_MODEL_COST_MAP=True`` is set before litellm
is imported (unless set already), so start-up never fetches litellm's price table.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any

import attrs

from sia_core.contracts.backend import (
    AgentOutcome,
    BackendOptions,
    FeedbackRequest,
    MetaRequest,
    TaskModel,
)
from sia_core.contracts.errors import SiaError
from sia_core.services.agents import AgentLimits, ToolCall, ToolSpec, Turn, feedback_step, meta_step
from sia_core.services.gateway import UpstreamError

from .calls import CallFitter, CallTimeout

SETTINGS = frozenset(
    {
        "api_base",
        "api_key",
        "meta_api_base",
        "meta_api_key",
        "task_api_base",
        "task_api_key",
        "tool_mode",
        "num_retries",
        "timeout_s",
        "temperature",
    }
    | {f.name for f in attrs.fields(AgentLimits)}
)
TOOL_MODES = ("auto", "native", "text")
_FENCE = re.compile(r"```[ \t]*(tool|json)?[ \t]*\n(.*?)```", re.S)


def litellm_module() -> Any:
    """litellm, imported with its offline price table."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm

    litellm.suppress_debug_info = True
    return litellm


def _cost(litellm: Any, response: Any) -> tuple[float, bool]:
    try:
        return float(litellm.completion_cost(completion_response=response) or 0.0), True
    except Exception:  # a model missing from the price table (e.g. a local server)
        return 0.0, False


def _usage(litellm: Any, response: Any) -> dict[str, Any]:
    usage = getattr(response, "usage", None)
    cost, priced = _cost(litellm, response)
    out = {
        "input_tokens": int(getattr(usage, "prompt_tokens", 0) or 0),
        "output_tokens": int(getattr(usage, "completion_tokens", 0) or 0),
        "cost_usd": cost,
    }
    if not priced:
        out["priced"] = False
    return out


# --------------------------------------------------------------------------------------------
# The agent adapter
# --------------------------------------------------------------------------------------------


def default_key(model: str, api_base: str | None, api_key: str | None) -> str | None:
    """A placeholder key for a key-less local OpenAI-compatible server (litellm's ``openai/``
    route refuses to call without one); an explicit key or ``OPENAI_API_KEY`` wins."""
    if api_key or not api_base or not model.startswith("openai/"):
        return api_key
    return None if os.environ.get("OPENAI_API_KEY") else "sk-none"


def text_protocol(tools: list[ToolSpec]) -> str:
    """The system-prompt addendum that replaces native tool calling."""
    lines = [
        "## How to call tools",
        "",
        "Call a tool by ending your reply with a fenced block like this (one block per call):",
        "",
        "```tool",
        '{"name": "read_file", "arguments": {"path": "run/context.md"}}',
        "```",
        "",
        "The results come back in the next message. The tools and their JSON arguments:",
        "",
    ]
    for t in tools:
        lines.append(f"- {t.name}: {t.description}")
        lines.append(f"  arguments: {json.dumps(t.parameters.get('properties', {}))}")
        if t.parameters.get("required"):
            lines.append(f"  required: {', '.join(t.parameters['required'])}")
    return "\n".join(lines)


def parse_tool_blocks(text: str, prefix: str) -> list[ToolCall]:
    """Tool calls written as fenced JSON blocks; a ``tool`` block that is not valid JSON is
    kept with ``arguments=None`` so the model hears what was wrong."""
    calls = []
    for k, match in enumerate(_FENCE.finditer(text or "")):
        label, body = match.group(1), match.group(2).strip()
        try:
            data = json.loads(body)
        except ValueError:
            if label == "tool":
                calls.append(
                    ToolCall(id=f"{prefix}_{k}", name="(unparsed)", arguments=None, raw=body)
                )
            continue
        if not isinstance(data, dict) or not isinstance(data.get("name", data.get("tool")), str):
            continue
        args = data.get("arguments", data.get("args", data.get("input", {})))
        if isinstance(args, str):
            try:
                args = json.loads(args)
            except ValueError:
                pass
        name = str(data.get("name", data.get("tool")))
        if isinstance(args, dict):
            calls.append(ToolCall(id=f"{prefix}_{k}", name=name, arguments=args))
        else:
            calls.append(ToolCall(id=f"{prefix}_{k}", name=name, arguments=None, raw=str(args)))
    return calls


def to_openai_messages(
    system: str, messages: list[dict[str, Any]], native: bool
) -> list[dict[str, Any]]:
    """Neutral agent messages -> OpenAI chat messages (tool results as ``tool`` messages, or as
    a user message in the text protocol)."""
    out: list[dict[str, Any]] = [{"role": "system", "content": system}]
    for m in messages:
        if m["role"] == "user":
            out.append({"role": "user", "content": m["content"]})
        elif m["role"] == "assistant":
            msg: dict[str, Any] = {"role": "assistant", "content": m.get("content") or ""}
            if native and m.get("tool_calls"):
                msg["tool_calls"] = [
                    {
                        "id": c["id"],
                        "type": "function",
                        "function": {"name": c["name"], "arguments": json.dumps(c["arguments"])},
                    }
                    for c in m["tool_calls"]
                ]
            out.append(msg)
        elif native:
            for r in m["results"]:
                out.append({"role": "tool", "tool_call_id": r["id"], "content": r["content"]})
        else:
            parts = [
                f"### {r['name']} ({'ERROR' if r['is_error'] else 'ok'})\n{r['content']}"
                for r in m["results"]
            ]
            out.append({"role": "user", "content": "Tool results:\n\n" + "\n\n".join(parts)})
    return out


class LiteLLMAdapter:
    """:class:`sia_core.services.agents.ModelAdapter` on ``litellm.completion``."""

    def __init__(
        self,
        model: str,
        *,
        api_base: str | None = None,
        api_key: str | None = None,
        tool_mode: str = "auto",
        num_retries: int = 3,
        timeout_s: float = 600.0,
        temperature: float | None = None,
    ) -> None:
        self.model = model
        self.api_base = api_base
        self.api_key = default_key(model, api_base, api_key)
        self.tool_mode = tool_mode
        self.fitter = CallFitter(
            litellm_module, model, api_base=api_base, timeout_s=timeout_s, num_retries=num_retries
        )
        self.temperature = temperature
        self._native: bool | None = None
        self._turns = 0

    @property
    def native(self) -> bool:
        """Whether tools go natively (``tool_mode``, else what litellm knows of the model)."""
        if self._native is None:
            if self.tool_mode == "auto":
                try:
                    self._native = bool(litellm_module().supports_function_calling(self.model))
                except Exception:
                    self._native = False
            else:
                self._native = self.tool_mode == "native"
        return self._native

    def send(
        self,
        system: str,
        messages: list[dict[str, Any]],
        tools: list[ToolSpec],
        max_output_tokens: int,
    ) -> Turn:
        litellm = litellm_module()
        self._turns += 1
        native = self.native
        if not native:
            system = system + "\n\n" + text_protocol(tools)
        wire = to_openai_messages(system, messages, native)
        kwargs: dict[str, Any] = {
            "model": self.model,
            "messages": wire,
            "max_tokens": self.fitter.cap(max_output_tokens, len(json.dumps(wire))),
        }
        if native:
            kwargs["tools"] = [
                {
                    "type": "function",
                    "function": {
                        "name": t.name,
                        "description": t.description,
                        "parameters": t.parameters,
                    },
                }
                for t in tools
            ]
        if self.temperature is not None:
            kwargs["temperature"] = self.temperature
        if self.api_base:
            kwargs["api_base"] = self.api_base
        if self.api_key:
            kwargs["api_key"] = self.api_key
        response = self.fitter.complete(**kwargs)
        choice = response.choices[0]
        self.fitter.note_cut(str(choice.finish_reason or ""))
        text = choice.message.content or ""
        if native:
            calls = []
            for c in choice.message.tool_calls or []:
                raw = c.function.arguments or "{}"
                try:
                    args = json.loads(raw) if isinstance(raw, str) else raw
                except ValueError:
                    args = None
                ok = isinstance(args, dict)
                calls.append(
                    ToolCall(
                        id=c.id or f"t{self._turns}",
                        name=c.function.name,
                        arguments=args if ok else None,
                        raw="" if ok else str(raw),
                    )
                )
        else:
            calls = parse_tool_blocks(text, f"t{self._turns}")
        return Turn(
            text=text,
            tool_calls=tuple(calls),
            usage=_usage(litellm, response),
            stop_reason=str(choice.finish_reason or ""),
            model=str(getattr(response, "model", "") or self.model),
        )


# --------------------------------------------------------------------------------------------
# The task model
# --------------------------------------------------------------------------------------------


class LiteLLMTaskModel(TaskModel):
    """The :class:`~sia_core.contracts.backend.TaskModel` the gateway routes scaffold calls to."""

    trainable = False

    def __init__(
        self,
        model: str,
        *,
        api_base: str | None = None,
        api_key: str | None = None,
        num_retries: int = 3,
        timeout_s: float = 600.0,
    ) -> None:
        self.name = model
        self.api_base = api_base
        self.api_key = default_key(model, api_base, api_key)
        self.fitter = CallFitter(
            litellm_module, model, api_base=api_base, timeout_s=timeout_s, num_retries=num_retries
        )

    def chat(self, body: dict[str, Any]) -> dict[str, Any]:
        litellm = litellm_module()
        kwargs = {k: v for k, v in body.items() if k not in ("model", "stream", "stream_options")}
        kwargs.update(model=self.name, drop_params=True)
        if self.api_base:
            kwargs["api_base"] = self.api_base
        if self.api_key:
            kwargs["api_key"] = self.api_key
        try:
            response = self.fitter.complete(**kwargs)
        except CallTimeout as exc:
            raise UpstreamError(504, str(exc)) from exc
        except Exception as exc:
            status = getattr(exc, "status_code", None)
            status = status if isinstance(status, int) and 400 <= status < 600 else 502
            raise UpstreamError(status, f"{self.name}: {type(exc).__name__}: {exc}") from exc
        out: dict[str, Any] = response.model_dump()
        cost, priced = _cost(litellm, response)
        out.setdefault("usage", {})
        if priced:
            out["usage"]["cost"] = cost
        return out

    def close(self) -> None:
        """Nothing to release."""


# --------------------------------------------------------------------------------------------
# The backend
# --------------------------------------------------------------------------------------------

NEEDS_MODEL = (
    "the litellm backend needs a model: --meta_model and/or --task_model with a litellm model "
    "string, e.g. openai/gpt-4o-mini, anthropic/claude-haiku-4-5, ollama/llama3, or "
    "openai/<name> with --backend-opt api_base=http://127.0.0.1:8080/v1 for a local server"
)


class LiteLLMBackend:
    """Any litellm model for the Meta/Feedback roles (``--meta_model``) and as task model
    (``--task_model``); one of them stands in for the other when only one is given."""

    name = "litellm"

    def __init__(self, options: BackendOptions | None = None) -> None:
        self.options = options or BackendOptions()
        s = self.options.known_settings("litellm", SETTINGS)
        meta = self.options.meta_model or self.options.task_model
        task = self.options.task_model or self.options.meta_model
        if not meta or not task:
            raise SiaError(NEEDS_MODEL)
        mode = str(s.get("tool_mode", "auto"))
        if mode not in TOOL_MODES:
            raise SiaError(f"--backend-opt tool_mode={mode}: choose one of {', '.join(TOOL_MODES)}")
        try:
            retries = int(s.get("num_retries", 3))
            timeout = float(s.get("timeout_s", 600))
            temperature = float(s["temperature"]) if "temperature" in s else None
        except ValueError as exc:
            raise SiaError(f"--backend-opt for the litellm backend: {exc}") from None
        self.limits = AgentLimits.from_settings(s)
        self.adapter = LiteLLMAdapter(
            meta,
            api_base=s.get("meta_api_base") or s.get("api_base"),
            api_key=s.get("meta_api_key") or s.get("api_key"),
            tool_mode=mode,
            num_retries=retries,
            timeout_s=timeout,
            temperature=temperature,
        )
        self._task_model = LiteLLMTaskModel(
            task,
            api_base=s.get("task_api_base") or s.get("api_base"),
            api_key=s.get("task_api_key") or s.get("api_key"),
            num_retries=retries,
            timeout_s=timeout,
        )

    def meta(self, request: MetaRequest) -> AgentOutcome:
        return meta_step(self.adapter, request, self.limits)

    def feedback(self, request: FeedbackRequest) -> AgentOutcome:
        return feedback_step(self.adapter, request, self.limits)

    def task_model(self) -> LiteLLMTaskModel:
        return self._task_model

    def close(self) -> None:
        """Nothing to release (litellm keeps no per-run state here)."""
