"""The seam between the loop and weight training.

An executor plugin (``sia_executors``) yields an ``ExecutorSpec`` whose factory returns an
object with ``available() -> (bool, reason)`` and ``run(job, on_progress) -> TrainResult``. The
loop builds a :class:`~sia_core.contracts.records.TrainJob` for a weights generation, the executor runs
the job's trainer (local subprocess worker, a Modal GPU, ...) and returns the adapter.

A trainable task model (:class:`~sia_core.contracts.backend.TaskModel` with ``trainable``) names
its ``base_model`` (what to train) and implements ``with_adapter(path)``, which returns the same
model serving base + that adapter, so the next generation runs on it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

from sia_core.contracts.records import TrainJob, TrainResult

#: settings of a weight update; an objective or executor may read more from ``job.settings``.
#: Sized for a CPU (about 1-3 minutes on 2 cores with a 135M model); raise them on a GPU with
#: ``--train-opt steps=200 group_size=16``.
DEFAULT_TRAIN_SETTINGS: dict[str, Any] = {
    "steps": 10,
    "group_size": 4,
    "items_per_step": 2,
    "learning_rate": 4e-5,  # SIA's paper
    "lora_rank": 32,  # SIA's paper
    "lora_alpha": 64,
    "kl_coef": 0.04,
    "max_tokens": 64,
    "temperature": 1.0,
}


@runtime_checkable
class Executor(Protocol):
    """Runs training jobs somewhere; a crash comes back as ``TrainResult(status="failed")``."""

    name: str

    def available(self) -> tuple[bool, str]: ...

    def run(self, job: TrainJob, on_progress: Callable[[dict[str, Any]], None]) -> TrainResult: ...
