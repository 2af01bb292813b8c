"""Registers the lawbench task with sia (entry point ``task-lawbench``). Stdlib + sia_core only."""

from __future__ import annotations

from collections.abc import Iterator
from importlib import resources

from sia_core import hookimpl
from sia_core.contracts.records import TaskSpec


@hookimpl
def sia_tasks() -> Iterator[TaskSpec]:
    """The lawbench task directory shipped inside this package."""
    yield TaskSpec(
        name="lawbench",
        path=str(resources.files("sia_task_lawbench") / "task"),
        description="LawBench: 191-class Chinese criminal-charge classification (CAIL2018)",
    )
