"""What the worker reports: progress events on stdout, ``train_log.jsonl``, the result's metrics.

Each step appends one JSON line (:func:`step_line`) to ``out_dir/train_log.jsonl`` and sends a
progress event (:func:`step_event`); the executor forwards the worker's progress lines (one JSON
object each, :func:`print_progress`). At the end :func:`run_metrics` sums the log up for the
:class:`~sia_core.contracts.records.TrainResult`.
"""

from __future__ import annotations

import json
import math
import resource
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .rollout_records import StepRollouts

Progress = Callable[[dict[str, Any]], None]


def print_progress(event: dict[str, Any]) -> None:
    """A progress line on stdout (one JSON object; the executor forwards it)."""
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _mean(xs: Sequence[float]) -> float:
    return math.fsum(xs) / len(xs) if xs else 0.0


def _std(xs: Sequence[float]) -> float:
    if len(xs) < 2:
        return 0.0
    m = _mean(xs)
    return math.sqrt(math.fsum((x - m) ** 2 for x in xs) / (len(xs) - 1))


def step_line(
    step: int,
    sources: Sequence[dict[str, Any]],
    rollouts: StepRollouts,
    stats: dict[str, float],
    *,
    started: float,
    rolled_out: float,
    updated: float,
    generate_seconds: float,
) -> dict[str, Any]:
    """The log line of one step (``started``, ``rolled_out``, ``updated``: monotonic times)."""
    flat = rollouts.flat()
    rewards = [s.rollout.total_reward for s in flat]
    return {
        "step": step,
        "reward_mean": _mean(rewards),
        "reward_std": _std(rewards),
        "reward_min": min(rewards),
        "reward_max": max(rewards),
        "kl": stats.get("kl", 0.0),
        "loss": stats.get("loss", 0.0),
        "clip_frac": stats.get("clip_frac", 0.0),
        "tokens": int(stats.get("tokens", 0)),
        "seconds": round(updated - started, 3),
        "rollout_seconds": round(rolled_out - started, 3),
        "generate_seconds": round(generate_seconds, 3),
        "update_seconds": round(updated - rolled_out, 3),
        "rollouts": len(flat),
        "calls": sum(len(s.calls) for s in flat),
        "failed_rollouts": sum(s.status != "ok" for s in flat),
        "unmatched_calls": sum(s.unmatched_calls for s in flat),
        "zero_variance_groups": sum(len(set(g.rewards())) < 2 for g in rollouts.groups),
        "items": [str(s["id"]) for s in sources],
        "stats": {k: v for k, v in stats.items() if k not in ("kl", "loss", "tokens")},
    }


def append_line(path: Path, line: dict[str, Any]) -> None:
    """Append ``line`` to the JSON-lines log at ``path``."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(line) + "\n")


def step_event(line: dict[str, Any], steps: int, checkpoint: bool) -> dict[str, Any]:
    """The progress event of a step: its number, whether it was checkpointed, its main figures."""
    shown = ("reward_mean", "kl", "loss", "tokens", "seconds")
    event = {"event": "step", "step": line["step"], "steps": steps, "checkpoint": checkpoint}
    return {**event, **{k: line[k] for k in shown}}


def run_metrics(
    log_path: Path,
    *,
    algorithm: str,
    done_steps: int,
    update_norm: float,
    seconds: float,
    load_seconds: float,
    device: str,
    value_head: str | None,
    sandbox: str,
) -> dict[str, Any]:
    """The metrics of a finished job: the log's reward curve and totals, and how the run went.

    ``done_steps``: the steps a resumed job had done before this process (not timed here).
    """
    lines = [json.loads(x) for x in log_path.read_text(encoding="utf-8").splitlines() if x]
    means = [float(x["reward_mean"]) for x in lines]
    k = max(1, min(5, len(means) // 2))
    step_seconds = [float(x["seconds"]) for x in lines if int(x["step"]) > done_steps]
    return {
        "algorithm": algorithm,
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
        "peak_device_mb": _peak_device_mb(device),
        "value_head": value_head,
        "rollout_sandbox": sandbox,
    }


def _peak_device_mb(device: str) -> int | None:
    """The most GPU memory torch held at once (``None`` on the CPU)."""
    if not device.startswith("cuda"):
        return None
    import torch

    return round(torch.cuda.max_memory_allocated() / (1 << 20))
