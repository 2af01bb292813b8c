"""The turn loop: talk with the model, run its tool calls, until it decides or a limit, an
error or silence ends the step; every turn, tool call and result goes into the transcript the
loop saves as ``gen_N/agent_transcript.json``."""

from __future__ import annotations

import time
from typing import Any

import attrs

from sia_core.services.agents.protocol import AgentLimits, ModelAdapter
from sia_core.services.agents.tools import AgentTools


@attrs.define
class AgentRun:
    """What one step's loop produced."""

    transcript: list[dict[str, Any]] = attrs.field(factory=list)
    usage: dict[str, Any] = attrs.field(factory=dict)
    stop: str = ""  # why the loop ended


USAGE_KEYS = ("input_tokens", "output_tokens", "cost_usd", "calls")
#: stop reasons of a reply cut off by the output limit (Anthropic, OpenAI)
TRUNCATED = ("max_tokens", "length")


def usage_total(turns: list[dict[str, Any]]) -> dict[str, Any]:
    """Sum of per-call usage dicts: ``input_tokens``, ``output_tokens``, ``cost_usd``, ``calls``
    and any other numeric key (e.g. cache token counts)."""
    total: dict[str, Any] = {"input_tokens": 0, "output_tokens": 0, "cost_usd": 0.0, "calls": 0}
    for usage in turns:
        total["calls"] += 1
        for key, value in usage.items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                total[key] = total.get(key, 0) + value
    total["cost_usd"] = round(float(total["cost_usd"]), 8)
    return total


def run_agent(
    adapter: ModelAdapter,
    *,
    system: str,
    prompt: str,
    tools: AgentTools,
    limits: AgentLimits,
) -> AgentRun:
    """Talk with the model until it decides, or a limit, an error or silence ends the step."""
    run = AgentRun()
    specs = tools.specs()
    messages: list[dict[str, Any]] = [{"role": "user", "content": prompt}]
    run.transcript.append({"type": "start", "model": adapter.model, "system": system})
    run.transcript.append({"type": "message", "role": "user", "content": prompt})
    per_call: list[dict[str, Any]] = []
    silent = 0
    for turn_no in range(1, limits.max_turns + 1):
        used = sum(int(u.get("input_tokens", 0)) + int(u.get("output_tokens", 0)) for u in per_call)
        if used >= limits.max_tokens:
            run.stop = f"token limit reached ({used} of max_tokens={limits.max_tokens})"
            break
        t0 = time.monotonic()
        try:
            turn = adapter.send(system, messages, specs, limits.max_output_tokens)
        except Exception as exc:
            run.stop = f"the model call failed: {type(exc).__name__}: {exc}"
            run.transcript.append({"type": "error", "turn": turn_no, "error": run.stop})
            break
        per_call.append(dict(turn.usage))
        run.transcript.append(
            {
                "type": "assistant",
                "turn": turn_no,
                "text": turn.text,
                "tool_calls": [attrs.asdict(c) for c in turn.tool_calls],
                "stop_reason": turn.stop_reason,
                "usage": dict(turn.usage),
                "seconds": round(time.monotonic() - t0, 3),
            }
        )
        messages.append(
            {
                "role": "assistant",
                "content": turn.text,
                "tool_calls": [
                    {"id": c.id, "name": c.name, "arguments": c.arguments or {}}
                    for c in turn.tool_calls
                ],
            }
        )
        if not turn.tool_calls:
            silent += 1
            if silent >= limits.max_no_tool_replies:
                run.stop = f"the model replied {silent} times in a row without calling a tool"
                break
            nudge = "Use the tools: call them to work, and finish with the decide tool."
            messages.append({"role": "user", "content": nudge})
            run.transcript.append({"type": "message", "role": "user", "content": nudge})
            continue
        silent = 0
        results = []
        cut_off = turn.stop_reason in TRUNCATED
        for call in turn.tool_calls:
            t1 = time.monotonic()
            if cut_off:  # the arguments may parse but are incomplete: never act on them
                content, is_error = (
                    f"your reply hit the output limit (max_output_tokens="
                    f"{limits.max_output_tokens}), so this call's arguments are cut off and it "
                    "was not run; make it shorter (e.g. a more compact scaffold)",
                    True,
                )
            else:
                content, is_error = tools.call(call)
            results.append(
                {"id": call.id, "name": call.name, "content": content, "is_error": is_error}
            )
            run.transcript.append(
                {
                    "type": "tool",
                    "turn": turn_no,
                    "id": call.id,
                    "name": call.name,
                    "arguments": call.arguments if call.arguments is not None else call.raw,
                    "result": content,
                    "is_error": is_error,
                    "seconds": round(time.monotonic() - t1, 3),
                }
            )
        messages.append({"role": "tool", "results": results})
        if tools.decision is not None:
            run.stop = "decided"
            break
    else:
        run.stop = f"turn limit reached (max_turns={limits.max_turns})"
    run.usage = usage_total(per_call)
    if tools.trial_usage:
        run.usage["trials"] = dict(tools.trial_usage)
    run.transcript.append({"type": "end", "stop": run.stop, "usage": run.usage})
    return run
