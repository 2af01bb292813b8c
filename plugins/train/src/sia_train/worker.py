"""The training worker: ``python -m sia_train.worker JOB.json``.

Loads the :class:`~sia_core.contracts.records.TrainJob`, its task, its objective
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
``train_log.jsonl`` and ``result.json`` (a :class:`~sia_core.contracts.records.TrainResult`).

Resume: every ``checkpoint_every`` steps the adapter, optimizer and value head are saved to
``out_dir/checkpoint/`` (atomically). A rerun of the same job (same JSON) continues after the
last checkpoint; a rerun with no valid checkpoint (or of a changed job) removes the worker's
earlier outputs from ``out_dir`` and starts from scratch. Either way no stale ``result.json``
survives the start.

This module is the command line; the run itself is :func:`sia_train.train_loop.train`.
"""

from __future__ import annotations

import argparse
import json
import sys
import traceback
from pathlib import Path

from sia_core.contracts.errors import SiaError
from sia_core.contracts.records import TrainJob, TrainResult, from_json, to_dict
from sia_core.machinery.runstore import atomic_write_text

from .checkpoint import LOG_NAME, RESULT_NAME
from .distributed import rank_of_environment
from .train_log import print_progress
from .train_loop import train


def failed_result(job: TrainJob, error: str) -> TrainResult:
    """The ``result.json`` of a job that failed with ``error``."""
    out = Path(job.out_dir)
    return TrainResult(status="failed", log=str(out / LOG_NAME), error=error)


def main(argv: list[str] | None = None) -> int:
    """Run the job named on the command line; 0 when it trained, 1 (and a failed result) not."""
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
        if out.is_dir() and rank_of_environment() == 0:  # under torchrun: rank 0 writes
            result = failed_result(job, error)
            atomic_write_text(out / RESULT_NAME, json.dumps(to_dict(result), indent=2))
        if rank_of_environment() == 0:
            print_progress({"event": "done", "status": "failed", "error": error.splitlines()[0]})
        return 1
    return 0


def load_job(path: str | Path) -> TrainJob:
    """A :class:`TrainJob` from its JSON file."""
    return from_json(TrainJob, Path(path).read_text(encoding="utf-8"))


if __name__ == "__main__":
    sys.exit(main())
