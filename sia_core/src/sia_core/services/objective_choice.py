"""The RL objective's choice: the reward's shape (:func:`reward_stats`), each objective's fit to
it, and the dev gain earlier weight generations of each objective produced."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from sia_core.contracts.errors import SiaError
from sia_core.contracts.records import AlgorithmFit, AlgorithmSpec, RewardStats
from sia_core.machinery.plugins import Registry, resolve

__all__ = ["choose_algorithm", "feedback_signal", "reward_stats"]

#: how strongly the observed dev gain of earlier weight generations moves the objective choice
FEEDBACK_WEIGHT = 2.0
#: smoothing of that signal (weight of the newest observation)
FEEDBACK_ALPHA = 0.5


def reward_stats(
    per_item: dict[str, float],
    *,
    groups: Sequence[Sequence[float]] = (),
    steps_total: int = 0,
    steps_with_reward: int = 0,
    rollout_seconds: Sequence[float] = (),
) -> RewardStats:
    """Summarise rewards (one per item, optionally grouped samples) into a :class:`RewardStats`."""
    values = list(per_item.values()) or [0.0]
    n = len(values)
    mean = sum(values) / n
    var = sum((v - mean) ** 2 for v in values) / n
    std = math.sqrt(var)
    skew = (sum((v - mean) ** 3 for v in values) / n) / (std**3) if std > 1e-12 else 0.0
    if groups:
        zero_var = sum(1 for g in groups if len(g) < 2 or max(g) - min(g) < 1e-12) / len(groups)
    else:
        # one sample per item: a group is the whole split
        zero_var = 1.0 if std < 1e-12 else 0.0
    return RewardStats(
        n_rewards=n,
        mean=mean,
        std=std,
        skew=skew,
        zero_variance_group_share=zero_var,
        step_reward_density=(steps_with_reward / steps_total) if steps_total else 0.0,
        binary=all(v in (0.0, 1.0) for v in values),
        rollout_cost_s=(sum(rollout_seconds) / len(rollout_seconds)) if rollout_seconds else 0.0,
    )


def feedback_signal(history: Sequence[dict[str, Any]], maximize: bool = True) -> dict[str, float]:
    """Exponentially weighted dev gain each objective's earlier weight generations produced.

    ``history`` rows carry ``lever``, ``rl_algorithm``, ``dev_score`` and ``parent_dev_score``.
    """
    signal: dict[str, float] = {}
    for row in history:
        algo = row.get("rl_algorithm")
        if row.get("lever") not in ("weights", "both") or not algo:
            continue
        dev, parent = row.get("dev_score"), row.get("parent_dev_score")
        if dev is None or parent is None:
            continue
        gain = (dev - parent) if maximize else (parent - dev)
        signal[algo] = FEEDBACK_ALPHA * gain + (1 - FEEDBACK_ALPHA) * signal.get(algo, 0.0)
    return signal


def choose_algorithm(
    stats: RewardStats,
    algorithms: Registry[AlgorithmSpec],
    requested: str = "auto",
    history: Sequence[dict[str, Any]] = (),
    maximize: bool = True,
) -> tuple[str, tuple[AlgorithmFit, ...], str]:
    """Pick an RL objective: ``(name, every candidate's fit, reason)``."""
    fits: list[AlgorithmFit] = []
    for spec in algorithms:
        fit = resolve(spec.fit)(stats)
        fits.append(AlgorithmFit(name=spec.name, score=float(fit.score), reason=fit.reason))
    if requested != "auto":
        algorithms.get(requested)  # unknown name -> error listing the valid ones
        return requested, tuple(fits), f"requested with --rl-algorithm {requested}"
    if not fits:
        raise SiaError("no RL algorithm plugin is installed (see `sia plugins`)")
    signal = feedback_signal(history, maximize)
    adjusted = {f.name: f.score + FEEDBACK_WEIGHT * signal.get(f.name, 0.0) for f in fits}
    best = max(fits, key=lambda f: (adjusted[f.name], f.name))
    reason = f"best fit to the reward shape ({best.reason}); fit {best.score:.2f}"
    if signal:
        by_fit = max(fits, key=lambda f: (f.score, f.name))
        shown = ", ".join(f"{k} {v:+.3f}" for k, v in sorted(signal.items()))
        reason += f"; dev-gain signal of earlier weight generations: {shown}"
        if by_fit.name != best.name:
            reason += f" (the signal moved the choice from {by_fit.name} to {best.name})"
    return best.name, tuple(fits), reason
