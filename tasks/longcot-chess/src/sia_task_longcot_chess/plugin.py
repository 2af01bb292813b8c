"""sia plugin: registers the longcot-chess task (standard library and sia_core only)."""

from __future__ import annotations

from collections.abc import Iterator
from importlib import resources

from sia_core import hookimpl
from sia_core.contracts.records import TaskSpec


@hookimpl
def sia_tasks() -> Iterator[TaskSpec]:
    """The longcot-chess task directory shipped inside this package."""
    yield TaskSpec(
        name="longcot-chess",
        path=str(resources.files("sia_task_longcot_chess") / "task"),
        description="LongCoT chess (hard): best_3_moves + knight_path, SIA's 50 test items",
    )
