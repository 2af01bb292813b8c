"""Entry point of sia-runner-ray: registers the ``ray`` runner (imports neither Ray nor the runner)."""

from __future__ import annotations

from collections.abc import Iterator

from sia_core import hookimpl
from sia_core.contracts.records import RunnerSpec

#: the --runner-opt keys the ray runner reads (docs/scale.md)
SETTINGS = ("address", "batch_size", "cpus_per_batch", "gateway_host")


@hookimpl
def sia_runners() -> Iterator[RunnerSpec]:
    yield RunnerSpec(
        name="ray",
        factory="sia_runner_ray.runner:RayRunner",
        description="items as Ray tasks on any node of a Ray cluster, in the run's sandbox there",
        settings=SETTINGS,
    )
