"""How well GRPO fits a reward shape: sparse episode-end rewards with cheap rollouts."""

from __future__ import annotations

from sia_core.contracts.records import AlgorithmFit, RewardStats
from sia_train.fitting import clamp01, shape_of


def fit(stats: RewardStats) -> AlgorithmFit:
    """``0.85·(1 - 0.8·dense)·(1 - 0.4·tail·[continuous])·(1 - 0.6·zero_var)·(1 - 0.2·cost)``."""
    s = shape_of(stats)
    tail = 0.0 if s.binary else s.right_tail
    score = (
        0.85
        * (1 - 0.8 * s.dense)
        * (1 - 0.4 * tail)
        * (1 - 0.6 * s.zero_var)
        * (1 - 0.2 * s.expensive)
    )
    notes = []
    if s.dense > 0:
        notes.append("dense step rewards are better served by a value head")
    if s.zero_var >= 0.2:
        notes.append(f"{s.zero_var:.0%} zero-variance groups give GRPO no gradient")
    if tail > 0:
        notes.append("a heavy right tail is flattened by group normalisation")
    if s.expensive > 0:
        notes.append("G samples per item are costly at this rollout price")
    verdict = "; ".join(notes) if notes else "sparse episode-end rewards, cheap rollouts"
    return AlgorithmFit(name="grpo", score=clamp01(score), reason=f"{verdict} ({s.figures()})")
