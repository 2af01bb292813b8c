"""REINFORCE with a group-mean baseline and a k3 KL penalty, on sia_train's interface.

Loaded only by the training worker (``AlgorithmSpec.trainer``), so it may use sia_train's torch
helpers; torch itself is imported inside :meth:`ReinforceKL.loss`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import attrs

from sia_train.objective import (
    Group,
    broadcast_advantages,
    check_non_negative,
    group_mean_baseline,
    kl_k3,
    masked_mean,
    settings_for,
)


@attrs.frozen(kw_only=True)
class ReinforceKL:
    """``loss = −mean_t(A_i · log π(a_t)) + kl_coef · mean_t(k3)`` with ``A_i = R_i − mean(R)``."""

    name: ClassVar[str] = "reinforce-kl"
    needs_value_head: ClassVar[bool] = False

    kl_coef: float = attrs.field(default=0.1, converter=float, validator=check_non_negative)

    def advantages(self, groups: Sequence[Group]) -> list[list[float]]:
        """Return minus the group's mean return."""
        return group_mean_baseline(groups)

    def loss(
        self,
        *,
        logp: Any,
        old_logp: Any,
        ref_logp: Any,
        advantages: Any,
        mask: Any,
        values: Any = None,
        returns: Any = None,
        step_rewards: Any = None,
        old_values: Any = None,
    ) -> tuple[Any, dict[str, float]]:
        """Score-function loss (no ratio, no clipping: REINFORCE is on-policy) plus k3 KL."""
        import torch

        adv = broadcast_advantages(advantages, logp)
        pg_loss = -masked_mean(adv * logp, mask)
        kl = masked_mean(kl_k3(logp, ref_logp), mask) if ref_logp is not None else pg_loss * 0
        loss = pg_loss + self.kl_coef * kl
        with torch.no_grad():
            stats = {
                "loss": float(loss),
                "pg_loss": float(pg_loss),
                "kl": float(kl),
                "clip_frac": 0.0,
            }
        return loss, stats


def make_objective(settings: Mapping[str, Any] | None = None) -> ReinforceKL:
    """The trainer entry: a :class:`ReinforceKL` from a job's settings."""
    return settings_for(ReinforceKL, settings, "reinforce-kl")
