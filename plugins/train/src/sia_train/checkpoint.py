"""The worker's output folder: its files, resuming from a checkpoint or starting clean, saving.

Every ``checkpoint_every`` steps the adapter, optimizer and value head are saved to
``out_dir/checkpoint/`` (atomically: written as ``checkpoint.tmp`` and swapped in). A rerun of
the same job (same :func:`job_hash`) continues after the last checkpoint; a rerun with no valid
checkpoint (or of a changed job) removes the worker's earlier outputs and starts from scratch.
Either way no stale ``result.json`` survives the start.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

from sia_core.contracts.records import TrainJob, to_json
from sia_core.machinery.runstore import atomic_write_text

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


def job_hash(job: TrainJob) -> str:
    """Identity of a job: a checkpoint is only resumed by the very same job."""
    return hashlib.sha256(to_json(job, sort_keys=True).encode()).hexdigest()[:16]


# --------------------------------------------------------------------------------------------
# Resume or start clean
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


# --------------------------------------------------------------------------------------------
# Saving and loading
# --------------------------------------------------------------------------------------------


def save_value_head(head: Any, path: Path) -> None:
    """The value head's weights as a safetensors file."""
    from safetensors.torch import save_file

    save_file({k: v.detach().cpu().contiguous() for k, v in head.state_dict().items()}, path)


def load_value_head(head: Any, path: Path) -> None:
    """Load weights saved by :func:`save_value_head` into ``head``."""
    from safetensors.torch import load_file

    head.load_state_dict(load_file(path))


def save_trained(folder: Path, model: Any, optimizer: Any, value_head: Any) -> None:
    """The adapter (peft ``save_pretrained``), the optimizer and the value head (if any)."""
    import torch

    model.save_pretrained(folder)
    torch.save(optimizer.state_dict(), folder / OPTIMIZER)
    if value_head is not None:
        save_value_head(value_head, folder / VALUE_HEAD)


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
