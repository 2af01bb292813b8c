"""``context.md``: the run's evolution log, rewritten at every gate, that the agents read."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sia_core.contracts.records import GenerationNode
from sia_core.services.taskdir import Task


def evolution_log(
    task: Task,
    nodes: Sequence[GenerationNode],
    decisions: Mapping[int, Mapping[str, Any]],
    incumbent: int | None,
    gen: int,
    why: str,
) -> str:
    """The archive as a table (dev scores only), what each generation changed and why, and
    the last gate's verdict. ``decisions``: each node's ``decision.json``."""
    lines = [
        f"# Evolution log: {task.name}",
        "",
        f"Metric: {task.config.metric} on the dev split "
        f"({task.config.direction}). Incumbent: generation {incumbent}.",
        "",
        "| gen | parent | lever | RL objective | dev | Δ vs parent | incumbent |",
        "|---|---|---|---|---|---|---|",
    ]
    by_gen = {n.gen: n for n in nodes}
    for n in nodes:
        parent = by_gen.get(n.parent_gen) if n.parent_gen is not None else None
        delta = (
            f"{(n.dev_score or 0) - (parent.dev_score or 0):+.4f}" if parent is not None else "-"
        )
        lines.append(
            f"| {n.gen} | {n.parent_gen if n.parent_gen is not None else '-'} | {n.lever} | "
            f"{n.rl_algorithm or '-'} | {n.dev_score:.4f} | {delta} | "
            f"{'yes' if n.gen == incumbent else ''} |"
        )
    lines += ["", "## What each generation changed", ""]
    for n in nodes:
        d = decisions[n.gen]
        lines.append(f"- gen {n.gen} ({d['lever']}, from {d.get('source')}): {d['rationale']}")
        lines.extend(f"  - {note}" for note in d.get("notes", []))
    lines += ["", f"Last gate (gen {gen}): {why}.", ""]
    return "\n".join(lines)
