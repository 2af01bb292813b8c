"""Entry point of sia-train: registers the ``local`` executor (imports nothing heavy)."""

from __future__ import annotations

from collections.abc import Iterator

from sia_core import hookimpl
from sia_core.contracts.records import ExecutorSpec

from .settings import WORKER_SETTINGS


@hookimpl
def sia_executors() -> Iterator[ExecutorSpec]:
    yield ExecutorSpec(
        name="local",
        factory="sia_train.executor:make_local_executor",
        description="training worker in a local subprocess (peft LoRA; CPU or the local GPU)",
        settings=WORKER_SETTINGS,
    )
