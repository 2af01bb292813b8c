"""GRPO: group-normalised advantages with the shared clipped surrogate and k3 KL."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import attrs

from sia_train.objective import ClippedPolicyObjective, Group, check_positive, settings_for


def grpo_advantages(rewards: Sequence[float], eps: float = 1e-6, scale: bool = True) -> list[float]:
    """``(r_i - mean) / (std + eps)`` with the sample std (k-1); all 0 for a zero-variance group.

    ``scale=False`` keeps ``r_i - mean`` (no division by the std, as in Dr. GRPO).
    """
    k = len(rewards)
    if k < 2 or max(rewards) == min(rewards):
        return [0.0] * k
    mean = math.fsum(rewards) / k
    centred = [r - mean for r in rewards]
    if not scale:
        return centred
    std = math.sqrt(math.fsum(c * c for c in centred) / (k - 1))
    return [c / (std + eps) for c in centred]


@attrs.frozen(kw_only=True)
class GRPOObjective(ClippedPolicyObjective):
    """GRPO: no value head; every token of rollout i carries advantage A_i."""

    name: ClassVar[str] = "grpo"
    needs_value_head: ClassVar[bool] = False

    eps: float = attrs.field(default=1e-6, converter=float, validator=check_positive)
    scale_rewards: bool = True

    def advantages(self, groups: Sequence[Group]) -> list[list[float]]:
        """Group-normalised advantages per group."""
        return [grpo_advantages(g.rewards(), self.eps, self.scale_rewards) for g in groups]


def make_objective(settings: Mapping[str, Any] | None = None) -> GRPOObjective:
    """The trainer entry: a :class:`GRPOObjective` from a job's settings."""
    return settings_for(GRPOObjective, settings, "grpo")
