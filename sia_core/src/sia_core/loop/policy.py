"""What the core decides itself: whether a lever can be carried out.

The Feedback-Agent proposes a lever; the core checks that it can be carried out (weights need a
trainable task model, an RL objective and an executor); services/objective_choice.py picks the
objective by reward shape.
Every change and every reason is written into the decision.
"""

from __future__ import annotations

import attrs

from sia_core.contracts.records import LEVERS, Decision


@attrs.frozen(kw_only=True)
class LeverContext:
    """What lever validation needs to know about the run."""

    gen: int
    override: str = "auto"  # --lever
    trainable: bool = False
    task_model_name: str = ""
    n_algorithms: int = 0
    n_executors: int = 0


def weights_blockers(ctx: LeverContext) -> list[str]:
    """Why the weights lever cannot be pulled in this run (empty: it can)."""
    missing = []
    if not ctx.trainable:
        missing.append(
            f"the task model {ctx.task_model_name!r} is not trainable (API-only or no weights)"
        )
    if ctx.n_algorithms == 0:
        missing.append("no RL algorithm plugin is installed")
    if ctx.n_executors == 0:
        missing.append("no training executor plugin is installed")
    return missing


def validate_lever(decision: Decision, ctx: LeverContext) -> Decision:
    """Return the decision the run will carry out, with every change explained in ``notes``."""
    lever, notes, source = decision.lever, list(decision.notes), decision.source
    proposed = decision.lever
    if lever not in LEVERS:
        notes.append(f"unknown lever {lever!r} (valid: {', '.join(LEVERS)}); using harness")
        lever = "harness"
    if ctx.override in ("harness", "weights") and lever != "stop" and lever != ctx.override:
        notes.append(f"--lever {ctx.override} overrides the proposed {lever}")
        lever, source = ctx.override, "override"
    if lever in ("weights", "both"):
        missing = weights_blockers(ctx)
        if missing:
            notes.append(f"weights cannot be updated: {'; '.join(missing)}; using harness")
            lever = "harness"
    return attrs.evolve(
        decision,
        lever=lever,
        source=source,
        notes=tuple(notes),
        proposed_lever=proposed if proposed != lever else None,
    )
