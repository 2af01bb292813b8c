"""How well PPO fits a reward shape: dense step-level rewards (or expensive rollouts)."""

from __future__ import annotations

from sia_core.contracts.records import AlgorithmFit, RewardStats
from sia_train.fitting import clamp01, shape_of


def fit(stats: RewardStats) -> AlgorithmFit:
    """``0.15 + 0.75·dense + 0.1·cost``: a value head pays off on dense step rewards."""
    s = shape_of(stats)
    score = 0.15 + 0.75 * s.dense + 0.1 * s.expensive
    if s.dense >= 1:
        verdict = "dense step-level rewards: a value head gives per-token credit"
    elif s.dense > 0:
        verdict = "partly dense step rewards: some per-token credit for a value head"
    else:
        verdict = "episode-end rewards only: PPO's value head and GAE add cost, little credit"
    if s.expensive > 0:
        verdict += "; a value baseline needs fewer samples per item at this rollout price"
    return AlgorithmFit(name="ppo", score=clamp01(score), reason=f"{verdict} ({s.figures()})")
