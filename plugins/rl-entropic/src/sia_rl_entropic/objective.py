"""Entropic advantage weighting, exactly TTT-Discover's ``entropic_adaptive_beta`` estimator.

Per group of k rewards r (TTT-Discover ``ttt_discover/rl/train.py`` ``compute_advantages``)::

    e_i = exp(β (r_i − max_j r_j))          max-shift: every exponent ≤ 0
    Z_i = (Σ_j e_j − e_i) / (k − 1)         leave-one-out mean (Z_i = e_i when k == 1)
    w_i = e_i / (Z_i + 1e-12)
    A_i = w_i − 1

β per group: KL(q_β ‖ uniform_k) = ln 2 with q_β ∝ exp(β r), solved by bisection — bracket
``[0, 1]``; while KL(hi) < ln 2 double hi (until hi ≥ 1e6, then β = hi "best effort");
60 bisection steps; β = hi. β = 0 if k < 2 or the rewards are constant.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import attrs

from sia_train.objective import (
    ClippedPolicyObjective,
    Group,
    check_positive,
    optional_float,
    settings_for,
)

KL_TARGET = math.log(2.0)
BETA_MAX = 1e6
BISECT_ITERS = 60
LOO_EPS = 1e-12


def tilted(rewards: Sequence[float], beta: float) -> list[float]:
    """q_β(i) ∝ exp(β r_i), computed with the max-shift."""
    top = max(rewards)
    e = [math.exp(beta * (r - top)) for r in rewards]
    s = math.fsum(e)
    return [x / s for x in e]


def kl_to_uniform(rewards: Sequence[float], beta: float) -> float:
    """KL(q_β ‖ uniform) = Σ_i q_i (log q_i + log k)."""
    k = len(rewards)
    top = max(rewards)
    logits = [beta * (r - top) for r in rewards]
    log_z = math.log(math.fsum(math.exp(x) for x in logits))
    log_k = math.log(k)
    # terms whose q underflows to 0 contribute 0 (q log q -> 0)
    return math.fsum(
        math.exp(x - log_z) * (x - log_z + log_k) for x in logits if math.exp(x - log_z) > 0.0
    )


def adaptive_beta(
    rewards: Sequence[float],
    target: float = KL_TARGET,
    beta_max: float = BETA_MAX,
    iters: int = BISECT_ITERS,
) -> float:
    """The β with KL(q_β ‖ uniform) = ``target``, by TTT-Discover's bracket-and-bisect rule."""
    if len(rewards) < 2 or max(rewards) == min(rewards):
        return 0.0
    lo, hi = 0.0, 1.0
    if kl_to_uniform(rewards, hi) < target:
        while hi < beta_max and kl_to_uniform(rewards, hi) < target:
            hi *= 2.0
        if kl_to_uniform(rewards, hi) < target:
            return hi  # target not reachable below beta_max: best effort
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        if kl_to_uniform(rewards, mid) < target:
            lo = mid
        else:
            hi = mid
    return hi


def entropic_weights(rewards: Sequence[float], beta: float) -> list[float]:
    """``w_i = e_i / Z_i`` with the leave-one-out normaliser ``Z_i`` (see the module doc)."""
    k = len(rewards)
    if k == 0:
        return []
    top = max(rewards)
    e = [math.exp(beta * (r - top)) for r in rewards]
    if k == 1:
        return [e[0] / (e[0] + LOO_EPS)]
    # Σ_{j≠i} e_j summed directly: TTT-Discover's (Σ_j e_j) − e_i cancels catastrophically when
    # e_i dominates (the best sample at large β); same value in exact arithmetic
    others = [math.fsum(e[:i] + e[i + 1 :]) for i in range(k)]
    return [x / (z / (k - 1) + LOO_EPS) for x, z in zip(e, others, strict=True)]


def entropic_advantages(rewards: Sequence[float], beta: float) -> list[float]:
    """``A_i = w_i − 1`` for a fixed β."""
    return [w - 1.0 for w in entropic_weights(rewards, beta)]


def effective_sample_size(rewards: Sequence[float], beta: float) -> float:
    """Kish ESS ``1 / Σ q_i²`` of the tilted distribution (what SIA's floor would watch)."""
    return 1.0 / math.fsum(q * q for q in tilted(rewards, beta)) if rewards else 0.0


def _iters(_inst: Any, attribute: attrs.Attribute[Any], value: int) -> None:
    if value < 1:
        raise ValueError(f"{attribute.name} must be >= 1, got {value}")


def _optional_non_negative(
    _inst: Any, attribute: attrs.Attribute[Any], value: float | None
) -> None:
    if value is not None and not (value >= 0.0 and math.isfinite(value)):
        raise ValueError(f"{attribute.name} must be a finite number >= 0 or None, got {value}")


@attrs.frozen(kw_only=True)
class EntropicObjective(ClippedPolicyObjective):
    """Entropic advantages with the shared clipped surrogate and k3 KL; no value head."""

    name: ClassVar[str] = "entropic"
    needs_value_head: ClassVar[bool] = False
    #: β is fitted to a KL target over the group: fewer than 3 returns give no usable spread
    min_group_size: ClassVar[int] = 3

    kl_target: float = attrs.field(default=KL_TARGET, converter=float, validator=check_positive)
    beta_max: float = attrs.field(default=BETA_MAX, converter=float, validator=check_positive)
    bisect_iters: int = attrs.field(default=BISECT_ITERS, converter=int, validator=_iters)
    #: a fixed β for every group instead of the adaptive one (None: adaptive)
    beta: float | None = attrs.field(
        default=None, converter=optional_float, validator=_optional_non_negative
    )
    #: cap on A_i (None: TTT-Discover's exact rule). The LOO weight of the single best of a
    #: k = 2 group is ~1e12 once β saturates; larger groups stay moderate.
    max_advantage: float | None = attrs.field(
        default=None, converter=optional_float, validator=_optional_non_negative
    )

    def group_betas(self, groups: Sequence[Group]) -> list[float]:
        """The β each group gets (fixed, or solved for the KL target)."""
        if self.beta is not None:
            return [self.beta if len(g.rollouts) >= 2 else 0.0 for g in groups]
        return [
            adaptive_beta(g.rewards(), self.kl_target, self.beta_max, self.bisect_iters)
            for g in groups
        ]

    def advantages(self, groups: Sequence[Group]) -> list[list[float]]:
        """``A_i = w_i − 1`` per group with that group's β (capped at ``max_advantage``)."""
        out = [
            entropic_advantages(g.rewards(), beta)
            for g, beta in zip(groups, self.group_betas(groups), strict=True)
        ]
        if self.max_advantage is not None:
            cap = self.max_advantage
            out = [[min(a, cap) for a in adv] for adv in out]
        return out


def make_objective(settings: Mapping[str, Any] | None = None) -> EntropicObjective:
    """The trainer entry: an :class:`EntropicObjective` from a job's settings."""
    return settings_for(EntropicObjective, settings, "entropic")
