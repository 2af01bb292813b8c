"""The policy update: one optimizer step on the objective's loss over a step's rollouts.

:func:`policy_update` packs the completion tokens of each rollout's calls into one loss row per
rollout (:class:`_Packed`), splits the rows into micro-batches of at most ``micro_batch_tokens``
prompt + completion tokens, accumulates the weighted losses' gradients and steps the optimizer.

torch is imported inside the functions; importing this module is cheap.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .completion_logprobs import completion_forward
from .objective import Objective, token_rewards
from .rollout_records import RolloutSample


def _micro_batches(rows: Sequence[RolloutSample], budget: int) -> list[list[int]]:
    """Row indices grouped so each group's prompt + completion tokens stay within ``budget``."""
    batches: list[list[int]] = []
    current: list[int] = []
    used = 0
    for i, row in enumerate(rows):
        size = sum(len(c.prompt_ids) + len(c.completion_ids) for c in row.calls)
        if current and used + size > budget:
            batches.append(current)
            current, used = [], 0
        current.append(i)
        used += size
    if current:
        batches.append(current)
    return batches


class _Packed:
    """The calls of some rollouts and how their tokens map onto one row per rollout.

    A row holds the completion tokens of the rollout's calls in call order; ``rows`` scatters a
    per-call ``[calls, C, ...]`` tensor into ``[rollouts, width, ...]`` (autograd-safe).
    """

    def __init__(self, samples: Sequence[RolloutSample], device: Any) -> None:
        import torch

        self.calls: list[Any] = []
        call_i, pos_i, row_i, col_i = [], [], [], []
        for r, sample in enumerate(samples):
            offset = 0
            for call in sample.calls:
                if not call.completion_ids:
                    continue
                for j in range(len(call.completion_ids)):
                    call_i.append(len(self.calls))
                    pos_i.append(j)
                    row_i.append(r)
                    col_i.append(offset + j)
                offset += len(call.completion_ids)
                self.calls.append(call)
        self.n_rows = len(samples)
        self.width = max(s.n_tokens for s in samples)
        self._index = (torch.tensor(row_i, device=device), torch.tensor(col_i, device=device))
        self._picks = (torch.tensor(call_i, device=device), torch.tensor(pos_i, device=device))
        self.old_logp = torch.zeros(self.n_rows, self.width, device=device)
        self.mask = torch.zeros(self.n_rows, self.width, device=device)
        for r, sample in enumerate(samples):
            flat = [lp for call in sample.calls for lp in call.old_logp]
            self.old_logp[r, : len(flat)] = torch.tensor(flat, device=device)
            self.mask[r, : len(flat)] = 1.0

    def rows(self, per_call: Any) -> Any:
        shape = (self.n_rows, self.width, *per_call.shape[2:])
        return per_call.new_zeros(shape).index_put(self._index, per_call[self._picks])


def policy_update(
    *,
    model: Any,
    objective: Objective,
    samples: Sequence[RolloutSample],
    advantages: Sequence[float],
    optimizer: Any,
    temperature: float,
    pad_token_id: int,
    value_head: Any = None,
    micro_batch_tokens: int = 1024,
    max_grad_norm: float | None = 1.0,
    group: Any = None,
) -> dict[str, float]:
    """One optimizer step on the objective's loss over every rollout's completion tokens.

    One loss row per rollout: the completion tokens of its calls, in call order (prompt tokens
    are not in the row, so ``mask`` is 1 on every real token and 0 on padding). Rows are split
    into micro-batches by ``micro_batch_tokens``; each micro-batch's loss is weighted by its
    share of the batch's tokens (``token`` aggregation) or rows (``sequence``), which makes the
    accumulated gradient that of the whole batch (PPO's advantage whitening is then per
    micro-batch).

    Data parallel: with ``group`` (a ``torch.distributed`` process group whose ranks all call
    this with the same step's rollouts), rank ``r`` of ``w`` computes micro-batches ``r, r + w,
    ...``; the weighted gradients and statistics are summed across the ranks before the
    optimizer step, so every rank takes exactly the step one process takes (the objectives
    are unchanged).
    """
    import torch

    rows = [(s, float(a)) for s, a in zip(samples, advantages, strict=True) if s.n_tokens]
    if not rows:
        return {"tokens": 0.0, "skipped": 1.0}
    device = next(model.parameters()).device
    kl_coef = float(getattr(objective, "kl_coef", 0.0) or 0.0)
    agg = str(getattr(objective, "loss_agg", "token"))
    total_tokens = sum(s.n_tokens for s, _ in rows)
    model.train()
    optimizer.zero_grad(set_to_none=True)
    sums: dict[str, float] = {}
    rank, world = _rank_and_world(group)
    batches = _micro_batches([s for s, _ in rows], micro_batch_tokens)
    for batch in batches[rank::world]:
        part = [rows[i] for i in batch]
        packed = _Packed([sample for sample, _ in part], device)
        calls, rows_of, width = packed.calls, packed.rows, packed.width
        logp_c, hidden_c = completion_forward(model, calls, temperature, pad_token_id, device)
        logp = rows_of(logp_c)
        old, mask = packed.old_logp, packed.mask
        ref = None
        if kl_coef > 0:
            with torch.no_grad(), model.disable_adapter():
                ref = rows_of(
                    completion_forward(model, calls, temperature, pad_token_id, device)[0]
                )
        extra: dict[str, Any] = {}
        if getattr(objective, "needs_value_head", False) and value_head is not None:
            values = rows_of(value_head(hidden_c.detach().float()).squeeze(-1))
            rewards = torch.zeros(len(part), width, device=device)
            for r, (sample, _) in enumerate(part):
                ends, total = [], 0
                for call in sample.calls:
                    total += len(call.completion_ids)
                    ends.append(total - 1)
                step_ends = ends if sample.rollout.step_rewards else ()
                row = token_rewards(sample.rollout, mask[r].tolist(), step_ends)
                rewards[r] = torch.tensor(row, device=device)
            extra = {"values": values, "old_values": values.detach(), "step_rewards": rewards}
        adv = torch.tensor([a for _, a in part], device=device)
        loss, stats = objective.loss(
            logp=logp, old_logp=old, ref_logp=ref, advantages=adv, mask=mask, **extra
        )
        n_tokens = float(mask.sum())
        weight = n_tokens / total_tokens if agg == "token" else len(part) / len(rows)
        (loss * weight).backward()
        for key, value in stats.items():
            if key != "tokens" and isinstance(value, int | float):
                sums[key] = sums.get(key, 0.0) + weight * float(value)
        if "ratio_max" in stats:
            sums["ratio_max_all"] = max(sums.get("ratio_max_all", 0.0), float(stats["ratio_max"]))
    params = [p for param_group in optimizer.param_groups for p in param_group["params"]]
    if world > 1:
        sums = _sum_across_ranks(params, sums, group)
    grad_norm = (
        torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
        if max_grad_norm
        else torch.linalg.vector_norm(
            torch.stack([p.grad.norm() for p in params if p.grad is not None])
        )
    )
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    if "ratio_max_all" in sums:
        sums["ratio_max"] = sums.pop("ratio_max_all")
    return {**sums, "tokens": float(total_tokens), "grad_norm": float(grad_norm)}


def _rank_and_world(group: Any) -> tuple[int, int]:
    if group is None:
        return 0, 1
    import torch.distributed as dist

    return dist.get_rank(group), dist.get_world_size(group)


def _sum_across_ranks(params: list[Any], sums: dict[str, float], group: Any) -> dict[str, float]:
    """Sum every parameter's gradient (a rank without micro-batches adds zeros) and the
    statistics' weighted sums over ``group``; ``ratio_max_all`` is a maximum."""
    import torch
    import torch.distributed as dist

    # a parameter no rank gave a gradient keeps none (the optimizer skips it, as in one process)
    had = torch.tensor([float(p.grad is not None) for p in params])
    dist.all_reduce(had, op=dist.ReduceOp.SUM, group=group)
    for p, n in zip(params, had.tolist(), strict=True):
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        dist.all_reduce(p.grad, op=dist.ReduceOp.SUM, group=group)
        if n == 0:
            p.grad = None
    gathered: list[Any] = [None] * dist.get_world_size(group)
    dist.all_gather_object(gathered, sums, group=group)
    total: dict[str, float] = {}
    for part in gathered:
        for key, value in part.items():
            if key == "ratio_max_all":
                total[key] = max(total.get(key, 0.0), value)
            else:
                total[key] = total.get(key, 0.0) + value
    return total
