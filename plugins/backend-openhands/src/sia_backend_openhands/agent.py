"""The Meta/Feedback step as an OpenHands agent (``openhands-sdk``).

The tools are sia's provider-neutral agent tools (:class:`sia_core.services.agents.AgentTools`:
``list_files``, ``read_file``, ``write_scaffold``, ``test_scaffold``, ``decide``), each wrapped as
an OpenHands tool, so the allowlist of readable files (never ``data/private``, ``sealed/`` or a
generation's working folders) and the decision's validation are the same as for every other
backend. OpenHands runs the conversation: the prompt, tool-call parsing (native, or its
prompt-mocked ``<function=...>`` format for models without tool calling), retries, the turn cap
and stuck detection. Every event of the conversation goes into the transcript.

This module imports ``openhands`` at import time; the backend imports it only when a role runs.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

# before litellm is imported (openhands imports it): never fetch the cost map from the network
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("OPENHANDS_SUPPRESS_BANNER", "1")

from openhands.sdk import (
    LLM,
    Action,
    Agent,
    Conversation,
    Observation,
    TextContent,
    ToolDefinition,
)
from openhands.sdk.conversation import ConversationExecutionStatus
from openhands.sdk.tool import Tool, ToolAnnotations, ToolExecutor, register_tool
from pydantic import Field, create_model

from sia_core.services.agents import (
    AgentLimits,
    AgentRun,
    AgentTools,
    ToolCall,
    ToolSpec,
    usage_total,
)

__all__ = ["make_llm", "run_openhands"]

NUDGE = (
    "You have not called the decide tool yet. Use the tools (list_files, read_file, "
    "write_scaffold, test_scaffold) and finish by calling decide."
)


class SiaToolObservation(Observation):
    """The text a sia agent tool returned."""


# --------------------------------------------------------------------------------------------
# sia tool specs -> OpenHands tools
# --------------------------------------------------------------------------------------------

_ACTION_TYPES: dict[str, type[Action]] = {}
_LOCK = threading.Lock()

_JSON_TYPES: dict[str, Any] = {
    "string": str,
    "integer": int,
    "number": float,
    "boolean": bool,
    "object": dict,
    "array": list,
}


def _field_type(schema: dict[str, Any]) -> Any:
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return Literal[tuple(schema["enum"])]
    return _JSON_TYPES.get(str(schema.get("type")), Any)


def action_type(spec: ToolSpec) -> type[Action]:
    """An OpenHands ``Action`` class with the arguments of a sia tool spec (made once per
    schema: OpenHands registers action classes by name)."""
    key = json.dumps([spec.name, spec.parameters], sort_keys=True)
    with _LOCK:
        if key in _ACTION_TYPES:
            return _ACTION_TYPES[key]
        props: dict[str, Any] = spec.parameters.get("properties") or {}
        required = set(spec.parameters.get("required") or ())
        fields: dict[str, Any] = {}
        for name, schema in props.items():
            kind = _field_type(schema)
            desc = str(schema.get("description") or name)
            if name in required:
                fields[name] = (kind, Field(description=desc))
            else:
                fields[name] = (kind | None, Field(default=None, description=desc))
        camel = "".join(part.capitalize() for part in spec.name.split("_"))
        taken = {c.__name__ for c in _ACTION_TYPES.values()}
        name, n = f"Sia{camel}Action", 1
        while name in taken:  # the same tool with other arguments (e.g. decide for meta)
            n += 1
            name = f"Sia{camel}{n}Action"
        cls = create_model(name, __base__=Action, **fields)
        _ACTION_TYPES[key] = cls
        return cls


class _SiaExecutor(ToolExecutor):  # type: ignore[type-arg]
    """Runs one sia tool; ends the conversation once a decision is recorded."""

    def __init__(self, tools: AgentTools, spec: ToolSpec, fields: Sequence[str]) -> None:
        self.tools, self.spec, self.fields = tools, spec, tuple(fields)
        self.calls = 0

    def __call__(self, action: Action, conversation: Any = None) -> SiaToolObservation:
        self.calls += 1
        args = {f: getattr(action, f) for f in self.fields if getattr(action, f) is not None}
        call = ToolCall(id=f"{self.spec.name}-{self.calls}", name=self.spec.name, arguments=args)
        text, is_error = self.tools.call(call)
        if self.spec.name == "decide" and not is_error and conversation is not None:
            conversation.pause()  # the step is done: no further model call
        return SiaToolObservation(content=[TextContent(text=text)], is_error=is_error)


class SiaTool(ToolDefinition[Action, SiaToolObservation]):
    """Base of sia's agent tools as OpenHands tools (one subclass per tool name)."""

    @classmethod
    def create(cls, *args: Any, **params: Any) -> Sequence[SiaTool]:
        raise NotImplementedError("made by tool_definitions()")


_TOOL_CLASSES: dict[str, type[SiaTool]] = {}


def tool_class(name: str) -> type[SiaTool]:
    """The OpenHands tool class of one sia tool (made once: OpenHands serializes tools by class
    name, and the tool's name is a class attribute)."""
    with _LOCK:
        if name not in _TOOL_CLASSES:
            camel = "".join(part.capitalize() for part in name.split("_"))
            _TOOL_CLASSES[name] = type(f"Sia{camel}Tool", (SiaTool,), {"name": name})
        return _TOOL_CLASSES[name]


def tool_definitions(tools: AgentTools) -> list[ToolDefinition[Any, Any]]:
    """OpenHands tool definitions for every tool of ``tools``."""
    out: list[ToolDefinition[Any, Any]] = []
    for spec in tools.specs():
        fields = list((spec.parameters.get("properties") or {}).keys())
        out.append(
            tool_class(spec.name)(
                description=spec.description,
                action_type=action_type(spec),
                observation_type=SiaToolObservation,
                executor=_SiaExecutor(tools, spec, fields),
                annotations=ToolAnnotations(
                    title=spec.name,
                    readOnlyHint=True,  # nothing outside the step's own state is changed
                    destructiveHint=False,
                    idempotentHint=spec.name in ("list_files", "read_file"),
                    openWorldHint=False,
                ),
            )
        )
    return out


# --------------------------------------------------------------------------------------------
# The LLM and the conversation
# --------------------------------------------------------------------------------------------


def make_llm(
    model: str,
    *,
    base_url: str | None = None,
    api_key: str | None = None,
    native_tool_calling: bool = True,
    max_output_tokens: int = 16_000,
    temperature: float | None = None,
    seed: int | None = None,
    num_retries: int = 3,
    retry_min_wait: int = 1,
    retry_max_wait: int = 8,
    timeout_s: int = 600,
    max_input_tokens: int | None = None,
    free: bool = False,
) -> LLM:
    """An OpenHands LLM from a litellm model string (``openai/NAME`` + ``base_url`` for any
    OpenAI-compatible server, e.g. the local llama.cpp one)."""
    kwargs: dict[str, Any] = {}
    if api_key is not None:
        from pydantic import SecretStr

        kwargs["api_key"] = SecretStr(api_key)
    if max_input_tokens is not None:
        kwargs["max_input_tokens"] = max_input_tokens
    if free:  # a local model: no price lookup (litellm's map does not know it)
        kwargs.update(input_cost_per_token=0.0, output_cost_per_token=0.0)
    return LLM(
        usage_id="sia-agent",
        model=model,
        base_url=base_url,
        native_tool_calling=native_tool_calling,
        max_output_tokens=max_output_tokens,
        temperature=temperature,
        seed=seed,
        num_retries=num_retries,
        retry_min_wait=retry_min_wait,
        retry_max_wait=retry_max_wait,
        timeout=timeout_s,
        stream=False,
        reasoning_effort=None,
        caching_prompt=False,
        log_completions=False,
        **kwargs,
    )


def _event_record(event: Any) -> dict[str, Any]:
    try:
        data: dict[str, Any] = event.model_dump(mode="json", exclude_none=True)
    except Exception as exc:  # never lose the step over a transcript detail
        data = {"kind": type(event).__name__, "unserializable": f"{type(exc).__name__}: {exc}"}
    data.setdefault("kind", type(event).__name__)
    return {"type": "openhands_event", "t": round(time.time(), 3), "event": data}


def run_openhands(
    llm: LLM,
    *,
    system: str,
    prompt: str,
    tools: AgentTools,
    limits: AgentLimits,
    workspace: Path,
) -> AgentRun:
    """Run the OpenHands agent until it decides, a limit is hit, or it stops without deciding
    (it is nudged up to ``limits.max_no_tool_replies`` times)."""
    run = AgentRun()
    definitions = tool_definitions(tools)
    # register under unique names: the registry is process-wide, each step has its own tools
    specs: list[Tool] = []
    for definition in definitions:
        reg_name = f"sia-{id(tools)}-{definition.name}"
        register_tool(reg_name, definition)
        specs.append(Tool(name=reg_name))
    agent = Agent(
        llm=llm,
        tools=specs,
        include_default_tools=["FinishTool"],
        system_prompt=system,
        security_policy_filename="",
    )
    workspace.mkdir(parents=True, exist_ok=True)
    lock = threading.Lock()
    over_tokens: list[str] = []
    conversation: Any = None

    def tokens_used() -> int:
        usage = llm.metrics.accumulated_token_usage
        if usage is None:
            return 0
        return int(usage.prompt_tokens or 0) + int(usage.completion_tokens or 0)

    def on_event(event: Any) -> None:
        with lock:
            run.transcript.append(_event_record(event))
        used = tokens_used()
        if used >= limits.max_tokens and not over_tokens and conversation is not None:
            over_tokens.append(f"token limit reached ({used} of max_tokens={limits.max_tokens})")
            conversation.pause()

    run.transcript.append(
        {"type": "start", "model": llm.model, "system": system, "workspace": str(workspace)}
    )
    conversation = Conversation(
        agent=agent,
        workspace=str(workspace),
        callbacks=[on_event],
        max_iteration_per_run=limits.max_turns,
        visualizer=None,
        delete_on_close=True,
    )
    t0 = time.monotonic()
    try:
        message = prompt
        for attempt in range(limits.max_no_tool_replies + 1):
            turns_left = limits.max_turns - _model_calls(llm)
            if turns_left <= 0:
                run.stop = f"turn limit reached (max_turns={limits.max_turns})"
                break
            conversation.max_iteration_per_run = turns_left
            conversation.send_message(message)
            conversation.run()
            status = conversation.state.execution_status
            if tools.decision is not None:
                run.stop = "decided"
                break
            if over_tokens:
                run.stop = over_tokens[0]
                break
            if status == ConversationExecutionStatus.ERROR:
                run.stop = _last_error(run.transcript) or "the OpenHands conversation failed"
                break
            if status == ConversationExecutionStatus.STUCK:
                run.stop = "OpenHands' stuck detector stopped the agent (it repeated itself)"
                break
            if attempt == limits.max_no_tool_replies:
                run.stop = f"the agent stopped {attempt + 1} times without calling decide"
                break
            message = NUDGE
            run.transcript.append({"type": "message", "role": "user", "content": NUDGE})
    except Exception as exc:  # a failed model call ends the step; the core keeps the parent
        run.stop = f"the OpenHands agent failed: {type(exc).__name__}: {exc}"
        run.transcript.append({"type": "error", "error": run.stop})
    finally:
        try:
            conversation.close()
        except Exception:
            pass
    run.usage = _usage(llm)
    if tools.trial_usage:
        run.usage["trials"] = dict(tools.trial_usage)
    run.transcript.append(
        {
            "type": "end",
            "stop": run.stop,
            "usage": run.usage,
            "seconds": round(time.monotonic() - t0, 3),
        }
    )
    return run


def _model_calls(llm: LLM) -> int:
    metrics = llm.metrics
    return max(len(metrics.token_usages), len(metrics.response_latencies))


def _last_error(transcript: list[dict[str, Any]]) -> str:
    for record in reversed(transcript):
        event = record.get("event") or {}
        if "Error" in str(event.get("kind", "")):
            detail = event.get("detail") or event.get("error") or ""
            return f"{event.get('code') or event['kind']}: {detail}".strip(": ")
    return ""


def _usage(llm: LLM) -> dict[str, Any]:
    metrics = llm.metrics
    per_call = [
        {
            "input_tokens": int(u.prompt_tokens or 0),
            "output_tokens": int(u.completion_tokens or 0),
        }
        for u in metrics.token_usages
    ]
    total = usage_total(per_call)
    total["cost_usd"] = round(float(metrics.accumulated_cost or 0.0), 6)
    return total
