"""How well entropic weighting fits a reward shape: heavily right-skewed continuous rewards."""

from __future__ import annotations

from sia_core.contracts.records import AlgorithmFit, RewardStats
from sia_train.fitting import clamp01, shape_of


def fit(stats: RewardStats) -> AlgorithmFit:
    """``0.1 + 0.8·tail·(0.35 if binary else 1)·(1 - 0.8·dense)·(1 - 0.6·zero_var)``."""
    s = shape_of(stats)
    score = 0.1 + 0.8 * s.right_tail * (0.35 if s.binary else 1.0) * (1 - 0.8 * s.dense) * (
        1 - 0.6 * s.zero_var
    )
    if s.right_tail <= 0:
        verdict = "no heavy right tail: exponential tilting has little to concentrate on"
    elif s.binary:
        verdict = "skewed but binary: rare successes are equal, tilting adds little over GRPO"
    elif s.right_tail < 1:
        verdict = "moderately right-skewed continuous rewards: some weight for rare high scores"
    else:
        verdict = "heavily right-skewed continuous rewards: rare high scores get the weight"
    if s.zero_var >= 0.2:
        verdict += f"; {s.zero_var:.0%} zero-variance groups get advantage 0"
    return AlgorithmFit(name="entropic", score=clamp01(score), reason=f"{verdict} ({s.figures()})")
