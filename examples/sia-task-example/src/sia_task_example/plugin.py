"""sia plugin: registers the example task (standard library and sia_core only)."""

from __future__ import annotations

from collections.abc import Iterator
from importlib import resources

from sia_core import hookimpl
from sia_core.contracts.records import TaskSpec


@hookimpl
def sia_tasks() -> Iterator[TaskSpec]:
    """The task folder shipped inside this package."""
    yield TaskSpec(
        name="example",
        path=str(resources.files("sia_task_example") / "task"),
        description="Roman numerals to integers (example third-party task package)",
    )
