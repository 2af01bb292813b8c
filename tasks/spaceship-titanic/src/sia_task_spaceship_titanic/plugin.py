"""Registers the spaceship-titanic task with sia (entry point ``task-spaceship-titanic``).

Stdlib + sia_core only.
"""

from __future__ import annotations

from collections.abc import Iterator
from importlib import resources

from sia_core import hookimpl
from sia_core.contracts.records import TaskSpec


@hookimpl
def sia_tasks() -> Iterator[TaskSpec]:
    """The spaceship-titanic task directory shipped inside this package."""
    yield TaskSpec(
        name="spaceship-titanic",
        path=str(resources.files("sia_task_spaceship_titanic") / "task"),
        description="Spaceship Titanic (Kaggle, MLE-bench split): predict Transported",
    )
