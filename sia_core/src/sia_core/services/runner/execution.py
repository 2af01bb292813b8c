"""What a run of a scaffold leaves for the agents: ``agent_execution.json``, with every label
value redacted from what the scaffold printed or raised; and the check that the task model was
reachable at all."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import attrs

from sia_core.contracts.errors import SiaError
from sia_core.contracts.records import ItemResult
from sia_core.services.taskdir import Task

_UPSTREAM_DOWN = re.compile(r"upstream error (?:429|5\d\d)\b")


def execution_record(
    task: Task,
    gen: int,
    model: str,
    results: Sequence[ItemResult],
    calls: Sequence[Any],
    usage: dict[str, Any],
    program: Any,
) -> dict[str, Any]:
    """The ``agent_execution.json`` of a run: items, answers, calls, usage, the program's result.

    What the scaffold printed or raised reaches the Feedback-Agent: no label value is left in it.
    """
    redact = task.redact
    results = [attrs.evolve(r, error=redact(r.error)) if r.error else r for r in results]
    if program is not None and program.error:
        program = attrs.evolve(program, error=redact(program.error))
    return {
        "gen": gen,
        "task": task.name,
        "model": model,
        "items": results,
        "answers": {r.item_id: r.answer for r in results},
        "calls": list(calls),
        "usage": usage,
        "program": program,
    }


def check_model_reachable(gen: int, calls: Sequence[Any], run_id: str) -> None:
    """Stop the run (the step unfinished) when every task-model call failed upstream.

    Unreachable, timing out, 5xx or rate-limited on every call is a broken model server, not a
    bad scaffold: scoring it would spend a generation on zeros.
    """
    if calls and all(c.status == "error" and _UPSTREAM_DOWN.search(c.error or "") for c in calls):
        raise SiaError(
            f"generation {gen}: all {len(calls)} task-model calls failed ({calls[0].error}); "
            f"fix the task model's server, then `sia resume {run_id}`"
        )
