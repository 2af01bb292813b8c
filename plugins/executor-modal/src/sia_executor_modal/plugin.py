"""Entry point of sia-executor-modal: registers the ``modal`` executor (imports nothing heavy)."""

from __future__ import annotations

from collections.abc import Iterator

from sia_core import hookimpl
from sia_core.contracts.records import ExecutorSpec
from sia_train.settings import WORKER_SETTINGS


@hookimpl
def sia_executors() -> Iterator[ExecutorSpec]:
    yield ExecutorSpec(
        name="modal",
        factory="sia_executor_modal.executor:make_modal_executor",
        description="sia-train's worker as a Modal function on an on-demand GPU (default H100)",
        settings=(*WORKER_SETTINGS, "modal_gpu", "modal_pip", "modal_timeout_s"),
    )
