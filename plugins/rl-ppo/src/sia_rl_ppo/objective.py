"""PPO with a learned value head and GAE(γ, λ); torch is imported inside the tensor functions."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import attrs

from sia_train.objective import (
    ClippedPolicyObjective,
    Group,
    check_non_negative,
    check_unit,
    group_mean_baseline,
    masked_mean,
    optional_float,
    policy_loss,
    settings_for,
)

if TYPE_CHECKING:
    import torch


def gae(
    rewards: Sequence[float],
    values: Sequence[float],
    gamma: float,
    lam: float,
    last_value: float = 0.0,
) -> list[float]:
    """Pure-Python GAE: ``Â_t = Σ_l (γλ)^l δ_{t+l}``, ``δ_t = r_t + γV(s_{t+1}) − V(s_t)``.

    ``values[t]`` is V(s_t); the state after the last step has value ``last_value`` (0: terminal).
    """
    if len(rewards) != len(values):
        raise ValueError(f"{len(rewards)} rewards but {len(values)} values")
    out = [0.0] * len(rewards)
    running, next_value = 0.0, last_value
    for t in range(len(rewards) - 1, -1, -1):
        delta = rewards[t] + gamma * next_value - values[t]
        running = delta + gamma * lam * running
        out[t] = running
        next_value = values[t]
    return out


def gae_tensor(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float
) -> torch.Tensor:
    """GAE over the completion tokens of each row (``[batch, tokens]``), 0 where ``mask`` is 0.

    Masked-out positions (prompt, tool output, padding) are skipped, so a row's completion tokens
    are consecutive steps and the state after its last completion token is terminal (V = 0).
    """
    import torch

    m = mask.to(torch.bool)
    rewards, values = rewards.detach(), values.detach()
    adv = torch.zeros_like(values)
    running = torch.zeros_like(values[:, 0])
    next_value = torch.zeros_like(values[:, 0])
    for t in range(values.shape[1] - 1, -1, -1):
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        step = delta + gamma * lam * running
        running = torch.where(m[:, t], step, running)
        next_value = torch.where(m[:, t], values[:, t], next_value)
        adv[:, t] = torch.where(m[:, t], step, torch.zeros_like(step))
    return adv


def whiten(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``(x - mean) / std`` over the set ``mask`` positions (unchanged with fewer than 2)."""
    import torch

    m = mask.to(torch.bool)
    if int(m.sum()) < 2:
        return x
    sel = x[m]
    return torch.where(m, (x - sel.mean()) / torch.sqrt(sel.var(unbiased=False) + 1e-8), x)


def _vf_clip(_inst: Any, attribute: attrs.Attribute[Any], value: float | None) -> None:
    if value is not None and not (value > 0.0 and math.isfinite(value)):
        raise ValueError(f"{attribute.name} must be a finite number > 0 or None, got {value}")


@attrs.frozen(kw_only=True)
class PPOObjective(ClippedPolicyObjective):
    """PPO + GAE: per-token advantages from a value head, clipped surrogate and value loss."""

    name: ClassVar[str] = "ppo"
    needs_value_head: ClassVar[bool] = True

    gamma: float = attrs.field(default=1.0, converter=float, validator=check_unit)
    lam: float = attrs.field(default=0.95, converter=float, validator=check_unit)
    vf_coef: float = attrs.field(default=0.1, converter=float, validator=check_non_negative)
    vf_clip: float | None = attrs.field(default=0.2, converter=optional_float, validator=_vf_clip)
    whiten_advantages: bool = True

    def advantages(self, groups: Sequence[Group]) -> list[list[float]]:
        """Without values: return minus the group mean (the fallback baseline; GAE needs V)."""
        return group_mean_baseline(groups)

    def token_advantages(
        self, step_rewards: Any, values: Any, mask: Any, returns: Any = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(GAE advantages, value targets)``; targets default to ``Â + V`` (λ-returns)."""
        adv = gae_tensor(step_rewards, values, mask, self.gamma, self.lam)
        targets = returns if returns is not None else adv + values.detach()
        return adv, targets.detach()

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
        """Clipped surrogate on GAE advantages + ``vf_coef`` · clipped value loss + k3 KL.

        ``values``: V(s_t) per token from the value head (with grad). ``step_rewards``: per-token
        rewards (``sia_train.objective.token_rewards``). ``old_values``: V at rollout time (GAE
        and value clipping use them; default ``values.detach()``). Without ``values`` the given
        per-rollout ``advantages`` are used and there is no value loss.
        """
        if values is None:
            loss, stats = self._policy(logp, old_logp, ref_logp, advantages, mask)
            return loss, {**stats, "vf_loss": 0.0, "vf_clip_frac": 0.0}
        if step_rewards is None:
            raise ValueError(
                "ppo needs per-token step_rewards with values (build rows with "
                "sia_train.objective.token_rewards)"
            )
        import torch

        v_old = (old_values if old_values is not None else values).detach()
        adv, targets = self.token_advantages(step_rewards, v_old, mask, returns)
        pg_adv = whiten(adv, mask) if self.whiten_advantages else adv
        loss, stats = self._policy(logp, old_logp, ref_logp, pg_adv, mask)
        vf_unclipped = (values - targets) ** 2
        if self.vf_clip is None:
            vf_per_token, vf_clipped = (
                vf_unclipped,
                torch.zeros_like(vf_unclipped, dtype=torch.bool),
            )
        else:
            v_clip = v_old + torch.clamp(values - v_old, -self.vf_clip, self.vf_clip)
            vf_clipped_loss = (v_clip - targets) ** 2
            vf_per_token = torch.maximum(vf_unclipped, vf_clipped_loss)
            vf_clipped = vf_clipped_loss > vf_unclipped
        vf_loss = 0.5 * masked_mean(vf_per_token, mask, self.loss_agg)
        total = loss + self.vf_coef * vf_loss
        m = mask.to(torch.bool)
        n = int(m.sum())
        with torch.no_grad():
            stats.update(
                loss=float(total.detach()),
                vf_loss=float(vf_loss.detach()),
                vf_clip_frac=float(vf_clipped[m].float().mean()) if n else 0.0,
                value_mean=float(values.detach()[m].mean()) if n else 0.0,
                return_mean=float(targets[m].mean()) if n else 0.0,
                gae_mean=float(adv[m].mean()) if n else 0.0,
            )
        return total, stats

    def _policy(
        self, logp: Any, old_logp: Any, ref_logp: Any, advantages: Any, mask: Any
    ) -> tuple[Any, dict[str, float]]:
        return policy_loss(
            logp=logp,
            old_logp=old_logp,
            ref_logp=ref_logp,
            advantages=advantages,
            mask=mask,
            clip_eps=self.clip_eps,
            kl_coef=self.kl_coef,
            agg=self.loss_agg,
        )


def make_objective(settings: Mapping[str, Any] | None = None) -> PPOObjective:
    """The trainer entry: a :class:`PPOObjective` from a job's settings."""
    return settings_for(PPOObjective, settings, "ppo")
