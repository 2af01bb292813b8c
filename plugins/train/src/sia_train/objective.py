"""The RL objective interface of sia's training core, and the pieces every objective shares.

Torch-free at import: the advantage math is plain Python, and ``torch`` is imported inside the
functions that take tensors. Formulas and defaults: ``docs/rl-objectives.md``.

Tensor conventions for :meth:`Objective.loss` (all ``[batch, tokens]``, one row per rollout):

- ``logp``: log-probabilities of the sampled tokens under the policy being trained (with grad);
- ``old_logp``: the same under the policy that sampled them (no grad);
- ``ref_logp``: the same under the frozen reference policy (base model), or ``None`` for no KL;
- ``mask``: 1 on completion tokens (what the policy produced), 0 on prompt, tool output, padding;
- ``advantages``: ``[batch]`` (one scalar per rollout, broadcast over its tokens) or
  ``[batch, tokens]``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, TypeVar, runtime_checkable

import attrs

from sia_core.contracts.errors import SiaError

if TYPE_CHECKING:
    import torch

#: log-ratios are clamped to this range inside the k3 estimator so exp() stays finite
KL_LOG_RATIO_CLAMP = 20.0
LOSS_AGGREGATIONS = ("token", "sequence")


def _floats(values: Any) -> tuple[float, ...]:
    return tuple(float(v) for v in values) if values is not None else ()


@attrs.frozen(kw_only=True)
class Rollout:
    """One sampled episode of the frozen scaffold on one train item."""

    item_id: str
    reward: float = attrs.field(converter=float)  # episode reward from the task's scorer
    # optional per-step rewards of dense tasks, in step order; may be empty
    step_rewards: tuple[float, ...] = attrs.field(default=(), converter=_floats)

    def __attrs_post_init__(self) -> None:
        if not all(math.isfinite(r) for r in (self.reward, *self.step_rewards)):
            raise ValueError(f"rollout of {self.item_id!r} has a non-finite reward")

    @property
    def total_reward(self) -> float:
        """The undiscounted return: episode reward plus every step reward."""
        return self.reward + math.fsum(self.step_rewards)


def _rollouts(values: Iterable[Rollout]) -> tuple[Rollout, ...]:
    return tuple(values)


@attrs.frozen(kw_only=True)
class Group:
    """The G rollouts of the same item (the unit group-relative objectives normalise over)."""

    item_id: str
    rollouts: tuple[Rollout, ...] = attrs.field(converter=_rollouts)

    @rollouts.validator
    def _same_item(self, _attr: Any, rollouts: tuple[Rollout, ...]) -> None:
        other = [r.item_id for r in rollouts if r.item_id != self.item_id]
        if other:
            raise ValueError(f"group {self.item_id!r} holds rollouts of other items: {other[:3]}")

    def rewards(self) -> list[float]:
        """Each rollout's :attr:`Rollout.total_reward`, in order."""
        return [r.total_reward for r in self.rollouts]


@runtime_checkable
class Objective(Protocol):
    """What the training worker calls; one implementation per RL objective plugin."""

    #: the objective's name (its AlgorithmSpec's)
    name: str
    #: the trainer builds a value head and passes ``values``/``returns`` to :meth:`loss`
    needs_value_head: bool
    # Optional: ``min_group_size`` (int, default 1): the fewest rollouts per group the objective
    # can use; the trainer refuses a smaller ``group_size`` in one line before any rollout.

    def advantages(self, groups: Sequence[Group]) -> list[list[float]]:
        """One scalar advantage per rollout, per group (same nesting as ``groups``)."""
        ...

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
        """``(scalar loss to minimise, stats)``; stats hold at least ``kl`` and ``clip_frac``."""
        ...


# --------------------------------------------------------------------------------------------
# Pure-Python helpers
# --------------------------------------------------------------------------------------------


def group_mean_baseline(groups: Sequence[Group]) -> list[list[float]]:
    """Advantage ``R_i - mean(R)`` per group (REINFORCE with the group mean as baseline)."""
    out: list[list[float]] = []
    for group in groups:
        rewards = group.rewards()
        mean = math.fsum(rewards) / len(rewards) if rewards else 0.0
        out.append([r - mean for r in rewards])
    return out


def token_rewards(
    rollout: Rollout, mask: Sequence[float | int | bool], step_ends: Sequence[int] = ()
) -> list[float]:
    """Per-token rewards ``r_t`` of one rollout, for PPO's ``step_rewards`` tensor row.

    The episode reward lands on the last completion token (last ``mask`` position that is set);
    step reward ``k`` lands on token ``step_ends[k]`` (the last completion token of step ``k``).
    Every other token gets 0.
    """
    positions = [t for t, m in enumerate(mask) if m]
    out = [0.0] * len(mask)
    if not positions:
        return out
    if rollout.step_rewards and len(step_ends) != len(rollout.step_rewards):
        raise ValueError(
            f"{len(rollout.step_rewards)} step rewards but {len(step_ends)} step ends "
            f"for item {rollout.item_id!r}"
        )
    for reward, t in zip(rollout.step_rewards, step_ends, strict=False):
        if not (0 <= t < len(mask)) or not mask[t]:
            raise ValueError(f"step end {t} is not a completion token (mask is 0 or out of range)")
        out[t] += reward
    out[positions[-1]] += rollout.reward
    return out


ObjT = TypeVar("ObjT")


def settings_for(cls: type[ObjT], settings: Mapping[str, Any] | None, name: str) -> ObjT:
    """Build the objective ``cls`` from a job's settings.

    Flat keys that name a field of ``cls`` are used (others belong to the worker and are ignored);
    a nested mapping under the objective's ``name`` overrides them, and there an unknown key is an
    error (a typo would otherwise be silently ignored).
    """
    fields = {f.name for f in attrs.fields(cls) if f.init}  # type: ignore[arg-type]
    settings = dict(settings or {})
    chosen = {k: v for k, v in settings.items() if k in fields}
    nested = settings.get(name)
    if isinstance(nested, Mapping):
        unknown = sorted(set(nested) - fields)
        if unknown:
            raise SiaError(
                f"unknown {name} setting(s) {', '.join(unknown)}; valid: {', '.join(sorted(fields))}"
            )
        chosen.update(nested)
    try:
        return cls(**chosen)
    except (TypeError, ValueError) as exc:
        raise SiaError(f"invalid {name} settings {chosen}: {exc}") from exc


# --------------------------------------------------------------------------------------------
# Torch helpers (torch is imported lazily, inside each function)
# --------------------------------------------------------------------------------------------


def masked_mean(x: torch.Tensor, mask: torch.Tensor, agg: str = "token") -> torch.Tensor:
    """Mean of ``x`` over set ``mask`` positions: over all tokens (``token``) or per row first.

    ``sequence`` averages each row over its own tokens, then the rows that have any token.
    """
    m = mask.to(x.dtype)
    if agg == "token":
        return (x * m).sum() / m.sum().clamp(min=1.0)
    if agg == "sequence":
        counts = m.sum(dim=-1)
        rows = (x * m).sum(dim=-1) / counts.clamp(min=1.0)
        has = (counts > 0).to(x.dtype)
        return (rows * has).sum() / has.sum().clamp(min=1.0)
    raise ValueError(f"unknown loss aggregation {agg!r}; valid: {', '.join(LOSS_AGGREGATIONS)}")


def kl_k3(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """Per-token k3 estimator of KL(π_θ ‖ π_ref): ``exp(d) - d - 1`` with ``d = ref - logp``.

    Non-negative, zero (with zero gradient) where ``logp == ref_logp``, unbiased for tokens
    sampled from π_θ.
    """
    import torch

    d = torch.clamp(ref_logp - logp, -KL_LOG_RATIO_CLAMP, KL_LOG_RATIO_CLAMP)
    return torch.exp(d) - d - 1.0


def broadcast_advantages(advantages: Any, like: torch.Tensor) -> torch.Tensor:
    """``[batch]`` or ``[batch, tokens]`` advantages (tensor or nested lists) as ``like``'s shape."""
    import torch

    adv = torch.as_tensor(advantages, dtype=like.dtype, device=like.device)
    if adv.dim() == 1:
        adv = adv.unsqueeze(-1)
    return adv.expand_as(like)


def clipped_surrogate(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    clip_eps: float | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-token PPO surrogate ``min(ρA, clip(ρ, 1-ε, 1+ε)A)`` with ``ρ = exp(logp - old_logp)``.

    Returns ``(surrogate, ratio, clipped)``; ``clipped`` marks tokens where the clipped branch
    is the minimum, i.e. where the token gets no gradient. ``clip_eps=None`` gives the unclipped
    importance-sampling surrogate ``ρA``.
    """
    import torch

    ratio = torch.exp(logp - old_logp)
    unclipped = ratio * advantages
    if clip_eps is None:
        return unclipped, ratio, torch.zeros_like(ratio, dtype=torch.bool)
    clipped_term = torch.clamp(ratio, 1.0 - clip_eps, 1.0 + clip_eps) * advantages
    return torch.minimum(unclipped, clipped_term), ratio, clipped_term < unclipped


def policy_loss(
    *,
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    ref_logp: torch.Tensor | None,
    advantages: Any,
    mask: torch.Tensor,
    clip_eps: float | None,
    kl_coef: float,
    agg: str = "token",
) -> tuple[torch.Tensor, dict[str, float]]:
    """Clipped-ratio policy-gradient loss plus ``kl_coef`` times the k3 KL to ``ref_logp``."""
    import torch

    adv = broadcast_advantages(advantages, logp)
    surrogate, ratio, clipped = clipped_surrogate(logp, old_logp, adv, clip_eps)
    pg_loss = -masked_mean(surrogate, mask, agg)
    m = mask.to(torch.bool)
    if ref_logp is not None:
        kl = masked_mean(kl_k3(logp, ref_logp), mask, agg)
    else:
        kl = torch.zeros((), dtype=logp.dtype, device=logp.device)
    loss = pg_loss + kl_coef * kl if kl_coef else pg_loss
    n_tokens = int(m.sum().item())
    with torch.no_grad():
        r = ratio[m]
        stats = {
            "loss": float(loss.detach()),
            "pg_loss": float(pg_loss.detach()),
            "kl": float(kl.detach()),
            "clip_frac": float(clipped[m].float().mean()) if n_tokens else 0.0,
            "ratio_mean": float(r.mean()) if n_tokens else 1.0,
            "ratio_max": float(r.max()) if n_tokens else 1.0,
            "adv_mean": float(adv[m].mean()) if n_tokens else 0.0,
            "tokens": float(n_tokens),
        }
    return loss, stats


def check_non_negative(_inst: Any, attribute: attrs.Attribute[Any], value: float) -> None:
    """attrs validator: a finite number >= 0."""
    if not (value >= 0.0 and math.isfinite(value)):
        raise ValueError(f"{attribute.name} must be a finite number >= 0, got {value}")


def check_positive(_inst: Any, attribute: attrs.Attribute[Any], value: float) -> None:
    """attrs validator: a finite number > 0."""
    if not (value > 0.0 and math.isfinite(value)):
        raise ValueError(f"{attribute.name} must be a finite number > 0, got {value}")


def check_unit(_inst: Any, attribute: attrs.Attribute[Any], value: float) -> None:
    """attrs validator: a number in [0, 1]."""
    if not (0.0 <= value <= 1.0):
        raise ValueError(f"{attribute.name} must be in [0, 1], got {value}")


def optional_float(value: Any) -> float | None:
    """attrs converter: ``None`` stays ``None``, anything else becomes a float."""
    return None if value is None else float(value)


def _clip_eps(_inst: Any, attribute: attrs.Attribute[Any], value: float | None) -> None:
    if value is not None and not (0.0 < value < 1.0):
        raise ValueError(f"{attribute.name} must be in (0, 1) or None, got {value}")


@attrs.frozen(kw_only=True)
class ClippedPolicyObjective:
    """Base for objectives that differ only in their advantages: clipped surrogate + k3 KL.

    Subclasses set ``name`` and implement :meth:`advantages`.
    """

    name: ClassVar[str] = ""
    needs_value_head: ClassVar[bool] = False
    min_group_size: ClassVar[int] = 1

    clip_eps: float | None = attrs.field(default=0.2, converter=optional_float, validator=_clip_eps)
    kl_coef: float = attrs.field(default=0.04, converter=float, validator=check_non_negative)
    loss_agg: str = attrs.field(default="token", validator=attrs.validators.in_(LOSS_AGGREGATIONS))

    def advantages(self, groups: Sequence[Group]) -> list[list[float]]:
        raise NotImplementedError

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
        """Clipped surrogate on the given advantages plus ``kl_coef`` · k3 KL to ``ref_logp``."""
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
