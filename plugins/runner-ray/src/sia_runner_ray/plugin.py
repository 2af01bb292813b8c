"""Entry point of sia-runner-ray: the ``ray`` runner and, where sia-train is installed, the
``ray`` training executor (imports neither Ray nor torch)."""

from __future__ import annotations

from collections.abc import Iterator

from sia_core import hookimpl
from sia_core.contracts.records import ExecutorSpec, RunnerSpec

#: the --runner-opt keys the ray runner reads (docs/scale.md)
SETTINGS = ("address", "batch_size", "cpus_per_batch", "gateway_host")
#: the --train-opt keys the ray executor reads beyond sia-train's worker's
EXECUTOR_SETTINGS = ("ray_address", "ray_num_cpus", "ray_num_gpus")


@hookimpl
def sia_runners() -> Iterator[RunnerSpec]:
    yield RunnerSpec(
        name="ray",
        factory="sia_runner_ray.runner:RayRunner",
        description="items as Ray tasks on any node of a Ray cluster, in the run's sandbox there",
        settings=SETTINGS,
    )


@hookimpl
def sia_executors() -> Iterator[ExecutorSpec]:
    try:
        from sia_train.settings import WORKER_SETTINGS
    except ImportError:  # the runner works without sia-train; training on Ray needs it
        return
    yield ExecutorSpec(
        name="ray",
        factory="sia_runner_ray.executor:RayExecutor",
        description="sia-train's worker as a Ray task on a node with the CPUs/GPUs it asks for",
        settings=(*WORKER_SETTINGS, *EXECUTOR_SETTINGS),
    )
