"""The training worker: ``python -m sia_train.worker JOB.json``.

Loads the :class:`~sia_core.records.TrainJob`, its task, its objective
(``resolve(job.trainer)(job.settings)``) and the policy (base model + LoRA), then for each of
``steps`` steps:

1. samples ``items_per_step`` train items (seeded by ``job.seed`` and the step);
2. runs the frozen scaffold on ``group_size`` copies of each (:mod:`sia_train.rollouts`), the
   policy sampling every call; reward = the task's scorer on the train label;
3. computes the objective's advantages per group and takes ONE AdamW step on the objective's
   loss over the completion tokens of every call (KL to the adapter-disabled base model);
4. appends a JSON line to ``out_dir/train_log.jsonl`` and prints a progress line on stdout.

At the end ``out_dir`` is a standard peft ``save_pretrained`` folder (``adapter_config.json``,
``adapter_model.safetensors``) plus ``optimizer.pt``, ``value_head.safetensors`` (PPO),
``train_log.jsonl`` and ``result.json`` (a :class:`~sia_core.records.TrainResult`).

Resume: every ``checkpoint_every`` steps the adapter, optimizer and value head are saved to
``out_dir/checkpoint/`` (atomically). A rerun of the same job (same JSON) continues after the
last checkpoint; a rerun with no valid checkpoint (or of a changed job) removes the worker's
earlier outputs from ``out_dir`` and starts from scratch. Either way no stale ``result.json``
survives the start.
"""

from __future__ import annotations

import argparse
import hashlib
import inspect
import json
import math
import os
import random
import resource
import shutil
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from sia_core.errors import SiaError
from sia_core.plugins import get_plugin_manager, resolve
from sia_core.records import TrainJob, TrainResult, from_json, to_dict, to_json
from sia_core.runstore import atomic_write_text
from sia_core.sandbox import ProcessSandbox, Sandbox
from sia_core.taskdir import load_task
from sia_core.training import DEFAULT_TRAIN_SETTINGS

from .objective import Objective, token_rewards
from .rollouts import PolicyTaskModel, RolloutCollector, RolloutSample, worker_logs_tail

#: worker settings beyond sia_core.training.DEFAULT_TRAIN_SETTINGS (job.settings overrides both)
WORKER_DEFAULTS: dict[str, Any] = {
    "lora_dropout": 0.0,
    "lora_target_modules": "all-linear",
    "max_grad_norm": 1.0,
    "weight_decay": 0.0,
    "adam_betas": [0.9, 0.95],  # TTT-Discover's Adam betas
    "checkpoint_every": 5,  # steps; 0: only the final save
    "rollout_parallel": 16,  # scaffold workers per step (capped by group_size * items_per_step)
    "rollout_timeout_s": 600.0,  # one rollout (scaffold solve) at most
    # prompt + completion tokens per forward/backward: on lawbench (8 calls of ~300 tokens) 4096
    # peaked at 7.9 GB RSS, 1024 at 3.4 GB, in the same time
    "micro_batch_tokens": 1024,
    "batch_wait_s": 0.25,  # how long the policy waits for more calls to batch
    "device": "auto",
    "dtype": "float32",
    # None: all CPUs but one. On 2 shared cores, 2 OpenMP threads made a 4 x 16-token generate
    # take 24-48 s while another process was busy, 1 thread 1.5 s (spinning threads starve)
    "torch_threads": None,
}

LOG_NAME = "train_log.jsonl"
RESULT_NAME = "result.json"
CHECKPOINT = "checkpoint"
VALUE_HEAD = "value_head.safetensors"
OPTIMIZER = "optimizer.pt"
#: what the worker writes into out_dir (a fresh start removes these, and checkpoint*)
OUTPUTS = frozenset(
    {
        "adapter_config.json",
        "adapter_model.safetensors",
        "adapter_model.bin",
        "README.md",
        OPTIMIZER,
        VALUE_HEAD,
        LOG_NAME,
        RESULT_NAME,
        "rollouts",
    }
)

Progress = Callable[[dict[str, Any]], None]


class StepFailed(SiaError):
    """A step could not train: every rollout failed."""


def job_hash(job: TrainJob) -> str:
    """Identity of a job: a checkpoint is only resumed by the very same job."""
    return hashlib.sha256(to_json(job, sort_keys=True).encode()).hexdigest()[:16]


def settings_of(job: TrainJob) -> dict[str, Any]:
    """Defaults (core + worker), then the job's settings."""
    return {**DEFAULT_TRAIN_SETTINGS, **WORKER_DEFAULTS, **job.settings}


def print_progress(event: dict[str, Any]) -> None:
    """A progress line on stdout (one JSON object; the executor forwards it)."""
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


# --------------------------------------------------------------------------------------------
# Value head (PPO)
# --------------------------------------------------------------------------------------------


def make_value_head(hidden_size: int, device: str) -> Any:
    """A linear value head on the final hidden states, zero-initialised (V = 0 at start)."""
    import torch

    head = torch.nn.Linear(hidden_size, 1)
    torch.nn.init.zeros_(head.weight)
    torch.nn.init.zeros_(head.bias)
    return head.to(device)


def save_value_head(head: Any, path: Path) -> None:
    from safetensors.torch import save_file

    save_file({k: v.detach().cpu().contiguous() for k, v in head.state_dict().items()}, path)


def load_value_head(head: Any, path: Path) -> None:
    from safetensors.torch import load_file

    head.load_state_dict(load_file(path))


# --------------------------------------------------------------------------------------------
# Output folder: resume or start clean
# --------------------------------------------------------------------------------------------


def _valid_checkpoint(path: Path, ident: str) -> dict[str, Any] | None:
    try:
        state = json.loads((path / "state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if state.get("job_hash") != ident or not (path / "adapter" / "adapter_config.json").is_file():
        return None
    return state if isinstance(state.get("step"), int) else None


def prepare_out_dir(out: Path, ident: str) -> tuple[Path | None, int]:
    """``(checkpoint folder, its step)`` to resume from, or ``(None, 0)`` after removing the
    worker's earlier outputs from ``out`` (other files, e.g. ``job.json``, stay)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / RESULT_NAME).unlink(missing_ok=True)
    for name in (CHECKPOINT, CHECKPOINT + ".old"):  # .old: killed while swapping checkpoints
        state = _valid_checkpoint(out / name, ident)
        if state is not None:
            shutil.rmtree(out / (CHECKPOINT + ".tmp"), ignore_errors=True)
            _truncate_log(out / LOG_NAME, state["step"])
            return out / name, int(state["step"])
    for child in out.iterdir():
        if child.name not in OUTPUTS and not child.name.startswith((CHECKPOINT, ".")):
            continue  # not the worker's: left alone
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()
    return None, 0


def _truncate_log(path: Path, step: int) -> None:
    """Keep the log lines of steps up to ``step`` (those after it are redone)."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            if int(json.loads(line)["step"]) <= step:
                kept.append(line)
        except (ValueError, KeyError, TypeError):
            continue
    atomic_write_text(path, "".join(k + "\n" for k in kept))


def save_checkpoint(
    out: Path, model: Any, optimizer: Any, value_head: Any, step: int, ident: str
) -> None:
    """Adapter + optimizer + value head + step into ``out/checkpoint`` (swapped in atomically)."""
    import torch

    tmp, final, old = out / (CHECKPOINT + ".tmp"), out / CHECKPOINT, out / (CHECKPOINT + ".old")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    model.save_pretrained(tmp / "adapter")
    torch.save(optimizer.state_dict(), tmp / OPTIMIZER)
    if value_head is not None:
        save_value_head(value_head, tmp / VALUE_HEAD)
    (tmp / "state.json").write_text(json.dumps({"job_hash": ident, "step": step}))
    if final.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.rename(final, old)
    os.rename(tmp, final)
    shutil.rmtree(old, ignore_errors=True)


# --------------------------------------------------------------------------------------------
# The policy update
# --------------------------------------------------------------------------------------------


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


def _completion_forward(
    model: Any, calls: Sequence[Any], temperature: float, pad: int, device: Any
) -> tuple[Any, Any]:
    """``(logp [calls, C], hidden [calls, C, H])`` of each call's completion tokens.

    Prompts are left-padded to one width P and completions right-padded to C, so the states
    that predict completion token j sit at position P - 1 + j in every row; only those go
    through the LM head. Calls that share a prompt (the G rollouts of one item) run it once:
    see :func:`_shared_prompt_forward`.
    """
    owner: dict[tuple[int, ...], int] = {}
    for c in calls:
        owner.setdefault(tuple(c.prompt_ids), len(owner))
    if len(owner) < len(calls):
        return _shared_prompt_forward(model, calls, owner, temperature, pad, device)
    return _plain_forward(model, calls, temperature, pad, device)


def _plain_forward(
    model: Any, calls: Sequence[Any], temperature: float, pad: int, device: Any
) -> tuple[Any, Any]:
    """:func:`_completion_forward` with one full prompt + completion sequence per call."""
    import torch

    width = max(len(c.prompt_ids) for c in calls)
    span = max(len(c.completion_ids) for c in calls)
    ids, attention = [], []
    for c in calls:
        left, right = width - len(c.prompt_ids), span - len(c.completion_ids)
        ids.append([pad] * left + c.prompt_ids + c.completion_ids + [pad] * right)
        attention.append(
            [0] * left + [1] * (len(c.prompt_ids) + len(c.completion_ids)) + [0] * right
        )
    input_ids = torch.tensor(ids, device=device)
    mask = torch.tensor(attention, device=device)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    out = base.get_decoder()(input_ids=input_ids, attention_mask=mask, position_ids=positions)
    hidden = out.last_hidden_state[:, width - 1 : width - 1 + span]
    logits = base.get_output_embeddings()(hidden).float() / temperature
    targets = input_ids[:, width : width + span]
    logp = torch.log_softmax(logits, dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return logp, hidden


def _shared_prompt_forward(
    model: Any,
    calls: Sequence[Any],
    owner: dict[tuple[int, ...], int],
    temperature: float,
    pad: int,
    device: Any,
) -> tuple[Any, Any]:
    """:func:`_completion_forward` running each distinct prompt once.

    The distinct prompts (left-padded to P) go through the decoder with a KV cache; the cache
    rows are repeated for the calls that share them (``index_select``: gradients flow back into
    the one prompt pass) and the completions (right-padded, minus their last token, which
    predicts nothing) run on top of it at positions ``len(prompt) + j``. Same log-probabilities
    as the plain pass, for about 1/G of the prompt compute when completions are short.
    """
    import torch

    prompts = list(owner)
    width = max(len(p) for p in prompts)
    span = max(len(c.completion_ids) for c in calls)
    p_ids = torch.tensor([[pad] * (width - len(p)) + list(p) for p in prompts], device=device)
    p_mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=device)
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    decoder = base.get_decoder()
    first = decoder(
        input_ids=p_ids,
        attention_mask=p_mask,
        position_ids=(p_mask.cumsum(-1) - 1).clamp(min=0),
        use_cache=True,
    )
    index = torch.tensor([owner[tuple(c.prompt_ids)] for c in calls], device=device)
    targets = torch.tensor(
        [list(c.completion_ids) + [pad] * (span - len(c.completion_ids)) for c in calls],
        device=device,
    )
    hidden = first.last_hidden_state[index, -1:]
    if span > 1:
        cache = getattr(first, "cache", None)
        cache = first.past_key_values if cache is None else cache
        cache.reorder_cache(index)
        c_mask = (
            torch.arange(span - 1, device=device)[None, :]
            < torch.tensor([len(c.completion_ids) for c in calls], device=device)[:, None]
        ).long()
        lengths = p_mask.sum(-1)[index]
        rest = decoder(
            input_ids=targets[:, : span - 1],
            attention_mask=torch.cat([p_mask[index], c_mask], dim=1),
            position_ids=lengths[:, None] + torch.arange(span - 1, device=device)[None, :],
            **{_cache_kwarg(decoder): cache},
            cache_position=torch.arange(width, width + span - 1, device=device),
            use_cache=True,
        )
        hidden = torch.cat([hidden, rest.last_hidden_state], dim=1)
    logits = base.get_output_embeddings()(hidden).float() / temperature
    logp = torch.log_softmax(logits, dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return logp, hidden


def _cache_kwarg(decoder: Any) -> str:
    """transformers renamed the decoder's ``past_key_values`` argument to ``cache`` (5.x)."""
    params = inspect.signature(decoder.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


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
) -> dict[str, float]:
    """One optimizer step on the objective's loss over every rollout's completion tokens.

    One loss row per rollout: the completion tokens of its calls, in call order (prompt tokens
    are not in the row, so ``mask`` is 1 on every real token and 0 on padding). Rows are split
    into micro-batches by ``micro_batch_tokens``; each micro-batch's loss is weighted by its
    share of the batch's tokens (``token`` aggregation) or rows (``sequence``), which makes the
    accumulated gradient that of the whole batch (PPO's advantage whitening is then per
    micro-batch).
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
    for batch in _micro_batches([s for s, _ in rows], micro_batch_tokens):
        part = [rows[i] for i in batch]
        packed = _Packed([sample for sample, _ in part], device)
        calls, rows_of, width = packed.calls, packed.rows, packed.width
        logp_c, hidden_c = _completion_forward(model, calls, temperature, pad_token_id, device)
        logp = rows_of(logp_c)
        old, mask = packed.old_logp, packed.mask
        ref = None
        if kl_coef > 0:
            with torch.no_grad(), model.disable_adapter():
                ref = rows_of(
                    _completion_forward(model, calls, temperature, pad_token_id, device)[0]
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
    params = [p for group in optimizer.param_groups for p in group["params"]]
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


# --------------------------------------------------------------------------------------------
# The job
# --------------------------------------------------------------------------------------------


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _mean(xs: Sequence[float]) -> float:
    return math.fsum(xs) / len(xs) if xs else 0.0


def _std(xs: Sequence[float]) -> float:
    if len(xs) < 2:
        return 0.0
    m = _mean(xs)
    return math.sqrt(math.fsum((x - m) ** 2 for x in xs) / (len(xs) - 1))


def train(job: TrainJob, progress: Progress = print_progress) -> TrainResult:
    """Run ``job`` to the end; raises on failure (``main`` turns that into a failed result)."""
    t_start = time.monotonic()
    settings = settings_of(job)
    out = Path(job.out_dir).resolve()
    ident = job_hash(job)
    checkpoint, done_steps = prepare_out_dir(out, ident)
    steps = int(settings["steps"])
    group_size = int(settings["group_size"])
    progress(
        {
            "event": "start",
            "pid": os.getpid(),
            "job_id": job.job_id,
            "steps": steps,
            "resumed_from": done_steps,
        }
    )
    objective = resolve(job.trainer)(job.settings)
    if objective.name == "entropic" and group_size < 3:
        raise SiaError(f"entropic needs groups of at least 3 rollouts, got group_size={group_size}")
    task = load_task(job.task_dir)
    examples = task.train_examples()
    if not examples:
        raise SiaError(f"task {task.name!r} has no train split: nothing to roll out")
    per_step = max(1, min(int(settings["items_per_step"]), len(examples)))

    import torch

    from .model import load_policy, pick_device, trainable_state

    threads = settings["torch_threads"] or max(1, (os.cpu_count() or 1) - 1)
    torch.set_num_threads(int(threads))
    device = pick_device(settings)
    init = str(checkpoint / "adapter") if checkpoint else job.init_adapter
    model, tokenizer = load_policy(job.base_model, settings, init, device)
    value_head = None
    if objective.needs_value_head:
        value_head = make_value_head(int(model.config.hidden_size), device)
        for source in (checkpoint, Path(job.init_adapter) if job.init_adapter else None):
            if source is not None and (source / VALUE_HEAD).is_file():
                load_value_head(value_head, source / VALUE_HEAD)
                break
    params = [p for p in model.parameters() if p.requires_grad]
    if value_head is not None:
        params += list(value_head.parameters())
    betas = tuple(float(b) for b in settings["adam_betas"])
    optimizer = torch.optim.AdamW(
        params,
        lr=float(settings["learning_rate"]),
        betas=(betas[0], betas[1]),
        eps=1e-8,
        weight_decay=float(settings["weight_decay"]),
    )
    if checkpoint is not None and (checkpoint / OPTIMIZER).is_file():
        optimizer.load_state_dict(torch.load(checkpoint / OPTIMIZER, map_location=device))
    start_weights = trainable_state(model)
    load_seconds = time.monotonic() - t_start
    sandbox, sandbox_note = rollout_sandbox(job.sandbox)
    progress(
        {
            "event": "loaded",
            "seconds": round(load_seconds, 2),
            "device": device,
            "sandbox": sandbox_note,
        }
    )

    temperature = float(settings["temperature"])
    policy = PolicyTaskModel(
        model,
        tokenizer,
        name=Path(job.base_model).stem or "policy",
        temperature=temperature,
        max_tokens=int(settings["max_tokens"]),
        batch_wait_s=float(settings["batch_wait_s"]),
    )
    log_path = out / LOG_NAME
    every = int(settings["checkpoint_every"] or 0)
    parallel = min(int(settings["rollout_parallel"]), group_size * per_step)
    try:
        with RolloutCollector(
            sandbox=sandbox,
            task=task,
            scaffold=job.scaffold,
            policy=policy,
            work_dir=out / "rollouts",
            parallel=parallel,
            item_timeout_s=float(settings["rollout_timeout_s"]),
        ) as collector:
            for step in range(done_steps + 1, steps + 1):
                t0 = time.monotonic()
                sources = random.Random(f"{job.seed}:{step}").sample(examples, per_step)
                torch.manual_seed(job.seed * 1_000_003 + step)
                gen0 = policy.generate_seconds
                rollouts = collector.collect(sources, group_size, f"step_{step}")
                flat = rollouts.flat()
                if all(s.status != "ok" for s in flat):
                    tail = worker_logs_tail(out / "rollouts" / f"step_{step}")
                    raise StepFailed(  # scaffold output: no private label value in it
                        task.redact(
                            f"step {step}: all {len(flat)} rollouts failed; first: "
                            f"{rollouts.errors[0] if rollouts.errors else '?'}"
                            + (f"\nscaffold worker logs:\n{tail}" if tail else "")
                        )
                    )
                advantages = [a for group in objective.advantages(rollouts.groups) for a in group]
                t1 = time.monotonic()
                with policy.model_lock:
                    stats = policy_update(
                        model=model,
                        objective=objective,
                        samples=flat,
                        advantages=advantages,
                        optimizer=optimizer,
                        temperature=temperature,
                        pad_token_id=int(tokenizer.pad_token_id),
                        value_head=value_head,
                        micro_batch_tokens=int(settings["micro_batch_tokens"]),
                        max_grad_norm=float(settings["max_grad_norm"] or 0) or None,
                    )
                t2 = time.monotonic()
                rewards = [s.rollout.total_reward for s in flat]
                line = {
                    "step": step,
                    "reward_mean": _mean(rewards),
                    "reward_std": _std(rewards),
                    "reward_min": min(rewards),
                    "reward_max": max(rewards),
                    "kl": stats.get("kl", 0.0),
                    "loss": stats.get("loss", 0.0),
                    "clip_frac": stats.get("clip_frac", 0.0),
                    "tokens": int(stats.get("tokens", 0)),
                    "seconds": round(t2 - t0, 3),
                    "rollout_seconds": round(t1 - t0, 3),
                    "generate_seconds": round(policy.generate_seconds - gen0, 3),
                    "update_seconds": round(t2 - t1, 3),
                    "rollouts": len(flat),
                    "calls": sum(len(s.calls) for s in flat),
                    "failed_rollouts": sum(s.status != "ok" for s in flat),
                    "unmatched_calls": sum(s.unmatched_calls for s in flat),
                    "zero_variance_groups": sum(len(set(g.rewards())) < 2 for g in rollouts.groups),
                    "items": [str(s["id"]) for s in sources],
                    "stats": {k: v for k, v in stats.items() if k not in ("kl", "loss", "tokens")},
                }
                with open(log_path, "a", encoding="utf-8") as f:
                    f.write(json.dumps(line) + "\n")
                saved = bool(every and step % every == 0 and step < steps)
                if saved:  # before the progress line: a step reported done is resumable
                    save_checkpoint(out, model, optimizer, value_head, step, ident)
                shown = ("reward_mean", "kl", "loss", "tokens", "seconds")
                event = {"event": "step", "step": step, "steps": steps, "checkpoint": saved}
                progress({**event, **{k: line[k] for k in shown}})
    finally:
        policy.close()

    model.save_pretrained(out)
    torch.save(optimizer.state_dict(), out / OPTIMIZER)
    if value_head is not None:
        save_value_head(value_head, out / VALUE_HEAD)
    shutil.rmtree(out / "rollouts", ignore_errors=True)
    update_norm = math.sqrt(
        sum(
            float((p.detach() - start_weights[n]).pow(2).sum())
            for n, p in model.named_parameters()
            if n in start_weights
        )
    )
    lines = [json.loads(x) for x in log_path.read_text(encoding="utf-8").splitlines() if x]
    means = [float(x["reward_mean"]) for x in lines]
    k = max(1, min(5, len(means) // 2))
    seconds = time.monotonic() - t_start
    step_seconds = [float(x["seconds"]) for x in lines if int(x["step"]) > done_steps]
    metrics = {
        "algorithm": objective.name,
        "steps": len(lines),
        "resumed_from": done_steps,
        "reward_first": means[0] if means else None,
        "reward_last": means[-1] if means else None,
        f"reward_first_{k}": _mean(means[:k]) if means else None,
        f"reward_last_{k}": _mean(means[-k:]) if means else None,
        "kl_last": float(lines[-1]["kl"]) if lines else None,
        "tokens": sum(int(x["tokens"]) for x in lines),
        "update_norm": _finite(update_norm),  # since this process started (resume: checkpoint)
        "seconds": round(seconds, 2),
        "load_seconds": round(load_seconds, 2),
        "seconds_per_step": round(_mean(step_seconds), 3) if step_seconds else None,
        "device": device,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "value_head": VALUE_HEAD if value_head is not None else None,
        "rollout_sandbox": sandbox_note,
    }
    result = TrainResult(status="ok", adapter=str(out), log=str(log_path), metrics=metrics)
    atomic_write_text(out / RESULT_NAME, to_json(result, indent=2))
    shutil.rmtree(out / CHECKPOINT, ignore_errors=True)
    progress({"event": "done", "status": "ok", "seconds": round(seconds, 2)})
    return result


def rollout_sandbox(name: str) -> tuple[Sandbox, str]:
    """The sandbox the rollouts run the scaffold in: the run's (``name``) where this machine
    has it and it works, else the process sandbox; with a line saying which and why."""
    if name == "process":
        return ProcessSandbox(), "process"
    try:
        box = resolve(get_plugin_manager().sandboxes().get(name).factory)()
        ok, why = box.available()
    except Exception as exc:  # not installed here (e.g. a remote executor's image)
        ok, why = False, f"{type(exc).__name__}: {exc}"
    if ok:
        return box, name
    return ProcessSandbox(), f"process (the run's sandbox {name!r} is not available here: {why})"


def failed_result(job: TrainJob, error: str) -> TrainResult:
    out = Path(job.out_dir)
    return TrainResult(status="failed", log=str(out / LOG_NAME), error=error)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="sia training worker: run one TrainJob")
    parser.add_argument("job", type=Path, help="the TrainJob as JSON")
    args = parser.parse_args(argv)
    job = load_job(args.job)
    try:
        train(job)
    except Exception as exc:
        if isinstance(exc, SiaError):
            error = str(exc)
            sys.stderr.write(f"sia-train: {error}\n")
        else:
            error = f"{type(exc).__name__}: {exc}"
            traceback.print_exc()
        out = Path(job.out_dir)
        if out.is_dir():
            result = failed_result(job, error)
            atomic_write_text(out / RESULT_NAME, json.dumps(to_dict(result), indent=2))
        print_progress({"event": "done", "status": "failed", "error": error.splitlines()[0]})
        return 1
    return 0


def load_job(path: str | Path) -> TrainJob:
    """A :class:`TrainJob` from its JSON file."""
    return from_json(TrainJob, Path(path).read_text(encoding="utf-8"))


if __name__ == "__main__":
    sys.exit(main())
