"""Shared figures and thresholds for the objectives' ``fit(RewardStats) -> AlgorithmFit``.

The rule (paper §7.3) and every threshold are documented in ``docs/rl-objectives.md``; the
objective plugins combine these pieces, each in its own ``fit`` module.
"""

from __future__ import annotations

import math

import attrs

from sia_core.contracts.records import RewardStats

#: step-reward density: below DENSE_LO rewards are episode-end (sparse), from DENSE_HI dense
DENSE_LO, DENSE_HI = 0.1, 0.5
#: reward skew: from SKEW_LO a right tail starts to matter, from SKEW_HI it dominates
SKEW_LO, SKEW_HI = 0.5, 2.5
#: seconds per rollout: from COST_LO rollouts stop being cheap, from COST_HI they are expensive
COST_LO, COST_HI = 10.0, 120.0


def ramp(x: float, lo: float, hi: float) -> float:
    """0 at or below ``lo``, 1 at or above ``hi``, linear in between."""
    if x <= lo:
        return 0.0
    if x >= hi:
        return 1.0
    return (x - lo) / (hi - lo)


def _finite(x: float, default: float = 0.0) -> float:
    try:
        x = float(x)
    except (TypeError, ValueError):
        return default
    return x if math.isfinite(x) else default


@attrs.frozen(kw_only=True)
class Shape:
    """The :class:`RewardStats` figures a fit reads, cleaned (finite, clamped to their ranges)."""

    n: int
    density: float
    zero_var: float
    skew: float
    binary: bool
    cost_s: float

    @property
    def dense(self) -> float:
        """How dense the step rewards are, 0..1 (``ramp`` of density over DENSE_LO..DENSE_HI)."""
        return ramp(self.density, DENSE_LO, DENSE_HI)

    @property
    def right_tail(self) -> float:
        """How heavy the right tail is, 0..1 (``ramp`` of skew over SKEW_LO..SKEW_HI)."""
        return ramp(self.skew, SKEW_LO, SKEW_HI)

    @property
    def expensive(self) -> float:
        """How expensive a rollout is, 0..1 (``ramp`` of seconds over COST_LO..COST_HI)."""
        return ramp(self.cost_s, COST_LO, COST_HI)

    def figures(self) -> str:
        """The figures as a reason names them."""
        kind = "binary" if self.binary else "continuous"
        return (
            f"{kind} rewards, step-reward density {self.density:.2f}, skew {self.skew:+.2f}, "
            f"{self.zero_var:.0%} zero-variance groups, {self.cost_s:.1f} s/rollout, "
            f"n={self.n}"
        )


def shape_of(stats: RewardStats) -> Shape:
    """Clean a :class:`RewardStats` so every fit is finite for any input."""
    return Shape(
        n=max(int(_finite(stats.n_rewards)), 0),
        density=min(max(_finite(stats.step_reward_density), 0.0), 1.0),
        zero_var=min(max(_finite(stats.zero_variance_group_share), 0.0), 1.0),
        skew=_finite(stats.skew),
        binary=bool(stats.binary),
        cost_s=max(_finite(stats.rollout_cost_s), 0.0),
    )


def clamp01(x: float) -> float:
    """``x`` clamped to [0, 1] (a fit's score range)."""
    return min(max(x, 0.0), 1.0)
