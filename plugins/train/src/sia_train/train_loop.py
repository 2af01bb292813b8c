"""The training run of one job: load the policy, then roll out, update and log step by step.

:func:`train` loads the job's task, objective (``resolve(job.trainer)(job.settings)``) and
policy (base model + LoRA, resumed from a checkpoint where one is valid), then for each step
samples ``items_per_step`` train items (seeded by ``job.seed`` and the step), collects
``group_size`` rollouts of each (:mod:`sia_train.rollouts`), takes the objective's advantages
per group and one optimizer step (:func:`sia_train.update.policy_update`), and logs the step
(:mod:`sia_train.train_log`). Output files and checkpoints: :mod:`sia_train.checkpoint`.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sia_core.contracts.errors import SiaError
from sia_core.contracts.records import TrainJob, TrainResult, to_json
from sia_core.contracts.training import DEFAULT_TRAIN_SETTINGS
from sia_core.machinery.plugins import resolve
from sia_core.machinery.runstore import atomic_write_text
from sia_core.services.taskdir import load_task

from . import distributed
from .checkpoint import (
    CHECKPOINT,
    LOG_NAME,
    OPTIMIZER,
    RESULT_NAME,
    VALUE_HEAD,
    job_hash,
    load_value_head,
    prepare_out_dir,
    save_checkpoint,
    save_trained,
)
from .objective import Objective
from .profiles import profile_for
from .rollouts import PolicyTaskModel, RolloutCollector, rollout_sandbox, worker_logs_tail
from .server_policy import ServerPolicy
from .settings import WORKER_DEFAULTS
from .train_log import Progress, append_line, print_progress, run_metrics, step_event, step_line
from .update import policy_update


class StepFailed(SiaError):
    """A step could not train: every rollout failed."""


#: adapters saved for the inference server to load (removed when the job ends)
SERVED = "served"


def _serve(policy: ServerPolicy, model: Any, out: Path, name: str) -> None:
    """Save the current adapter where the server can read it and hot-load it there."""
    folder = out / SERVED / name
    model.save_pretrained(str(folder))
    previous = [p for p in (out / SERVED).iterdir() if p != folder]
    policy.load_adapter(str(folder), f"sia-{name}")
    for old in previous:
        shutil.rmtree(old, ignore_errors=True)


def _step_samples(
    objective: Objective, rollouts: Any, task: Any, out: Path, step: int
) -> dict[str, Any]:
    """The step's rollouts and advantages, or the error that ends the job (all failed)."""
    flat = rollouts.flat()
    if all(s.status != "ok" for s in flat):
        tail = worker_logs_tail(out / "rollouts" / f"step_{step}")
        return {  # scaffold output: no private label value in it
            "error": task.redact(
                f"step {step}: all {len(flat)} rollouts failed; first: "
                f"{rollouts.errors[0] if rollouts.errors else '?'}"
                + (f"\nscaffold worker logs:\n{tail}" if tail else "")
            )
        }
    advantages = [a for group in objective.advantages(rollouts.groups) for a in group]
    return {"samples": flat, "advantages": advantages}


def settings_of(job: TrainJob) -> dict[str, Any]:
    """Defaults (core + worker, then a base-model profile's GPU settings), then the job's."""
    profile = profile_for(job.base_model)
    gpu = profile.train_settings() if profile is not None else {}
    return {**DEFAULT_TRAIN_SETTINGS, **WORKER_DEFAULTS, **gpu, **job.settings}


def _trainables(
    objective: Objective,
    model: Any,
    settings: Mapping[str, Any],
    device: str,
    checkpoint: Path | None,
    init_adapter: str | None,
) -> tuple[Any, Any]:
    """``(value head or None, AdamW optimizer)``, restored from the checkpoint where there is one
    (the value head also from ``init_adapter``)."""
    import torch

    from .model import make_value_head

    value_head = None
    if objective.needs_value_head:
        value_head = make_value_head(int(model.config.hidden_size), device)
        for source in (checkpoint, Path(init_adapter) if init_adapter else None):
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
    return value_head, optimizer


def train(job: TrainJob, progress: Progress = print_progress) -> TrainResult:
    """Run ``job`` to the end; raises on failure (``main`` turns that into a failed result).

    Under torchrun (``nproc`` > 1) every rank runs this; see :mod:`sia_train.distributed`.
    """
    ranks = distributed.start()
    try:
        return _train(job, progress if ranks.leader else _quiet, ranks)
    finally:
        ranks.close()


def _quiet(event: dict[str, Any]) -> None:
    """The progress of ranks other than 0: nothing (rank 0 reports for the job)."""


def _train(job: TrainJob, progress: Progress, ranks: distributed.Ranks) -> TrainResult:
    t_start = time.monotonic()
    settings = settings_of(job)
    out = Path(job.out_dir).resolve()
    ident = job_hash(job)
    # rank 0 alone clears or resumes the out dir; the others read its checkpoint
    checkpoint, done_steps = ranks.share(prepare_out_dir(out, ident) if ranks.leader else None)
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
    least = int(getattr(objective, "min_group_size", 1))  # optional in the Objective protocol
    if group_size < least:
        raise SiaError(
            f"{objective.name} needs groups of at least {least} rollouts, got "
            f"group_size={group_size}; set --train-opt group_size={least} or more"
        )
    task = load_task(job.task_dir)
    examples = task.train_examples()
    if not examples:
        raise SiaError(f"task {task.name!r} has no train split: nothing to roll out")
    per_step = max(1, min(int(settings["items_per_step"]), len(examples)))

    import torch

    from .model import load_policy, pick_device, trainable_state

    threads = settings["torch_threads"] or max(1, (os.cpu_count() or 1) - 1)
    torch.set_num_threads(int(threads))
    device = ranks.device(pick_device(settings))
    torch.manual_seed(job.seed)  # LoRA's A matrices start random: the same seed, the same start
    init = str(checkpoint / "adapter") if checkpoint else job.init_adapter
    model, tokenizer = load_policy(job.base_model, settings, init, device)
    value_head, optimizer = _trainables(
        objective, model, settings, device, checkpoint, job.init_adapter
    )
    start_weights = trainable_state(model)
    load_seconds = time.monotonic() - t_start
    sandbox, sandbox_note = rollout_sandbox(job.sandbox) if ranks.leader else (None, "")
    progress(
        {
            "event": "loaded",
            "seconds": round(load_seconds, 2),
            "device": device,
            "sandbox": sandbox_note,
            "ranks": ranks.world,
        }
    )

    temperature = float(settings["temperature"])
    policy: Any
    if settings["inference_url"] and ranks.leader:  # rollouts on a vLLM-style server
        policy = ServerPolicy(
            str(settings["inference_url"]),
            str(settings["inference_model"] or job.base_model),
            tokenizer,
            temperature=temperature,
            max_tokens=int(settings["max_tokens"]),
            timeout_s=float(settings["rollout_timeout_s"]),
        )
        if init:  # the server samples from the policy being trained, from its first step
            _serve(policy, model, out, f"{ident[:8]}-start")
    else:
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
        with contextlib.ExitStack() as stack:
            collector = (
                stack.enter_context(
                    RolloutCollector(
                        sandbox=sandbox,
                        task=task,
                        scaffold=job.scaffold,
                        policy=policy,
                        work_dir=out / "rollouts",
                        parallel=parallel,
                        item_timeout_s=float(settings["rollout_timeout_s"]),
                    )
                )
                if ranks.leader
                else None
            )
            for step in range(done_steps + 1, steps + 1):
                t0 = time.monotonic()
                sources = random.Random(f"{job.seed}:{step}").sample(examples, per_step)
                torch.manual_seed(job.seed * 1_000_003 + step)
                gen0 = policy.generate_seconds
                shared: dict[str, Any] = {}
                if collector is not None:
                    rollouts = collector.collect(sources, group_size, f"step_{step}")
                    shared = _step_samples(objective, rollouts, task, out, step)
                shared = ranks.share(shared)
                if "error" in shared:
                    raise StepFailed(shared["error"])
                flat, advantages = shared["samples"], shared["advantages"]
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
                        group=ranks.group,
                    )
                if not ranks.leader:
                    continue
                if isinstance(policy, ServerPolicy):  # the next step samples the updated policy
                    _serve(policy, model, out, f"{ident[:8]}-step-{step}")
                line = step_line(
                    step,
                    sources,
                    rollouts,
                    stats,
                    started=t0,
                    rolled_out=t1,
                    updated=time.monotonic(),
                    generate_seconds=policy.generate_seconds - gen0,
                )
                append_line(log_path, line)
                saved = bool(every and step % every == 0 and step < steps)
                if saved:  # before the progress line: a step reported done is resumable
                    save_checkpoint(out, model, optimizer, value_head, step, ident)
                progress(step_event(line, steps, saved))
    finally:
        policy.close()

    if not ranks.leader:  # rank 0 writes the adapter and the result
        return TrainResult(status="ok", adapter=str(out))
    save_trained(out, model, optimizer, value_head)
    shutil.rmtree(out / "rollouts", ignore_errors=True)
    shutil.rmtree(out / SERVED, ignore_errors=True)
    update_norm = math.sqrt(
        sum(
            float((p.detach() - start_weights[n]).pow(2).sum())
            for n, p in model.named_parameters()
            if n in start_weights
        )
    )
    seconds = time.monotonic() - t_start
    metrics = run_metrics(
        log_path,
        algorithm=objective.name,
        done_steps=done_steps,
        update_norm=update_norm,
        seconds=seconds,
        load_seconds=load_seconds,
        device=device,
        value_head=VALUE_HEAD if value_head is not None else None,
        sandbox=sandbox_note,
    )
    result = TrainResult(status="ok", adapter=str(out), log=str(log_path), metrics=metrics)
    atomic_write_text(out / RESULT_NAME, to_json(result, indent=2))
    shutil.rmtree(out / CHECKPOINT, ignore_errors=True)
    progress({"event": "done", "status": "ok", "seconds": round(seconds, 2)})
    return result
