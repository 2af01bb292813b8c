"""sia plugin: registers the gpqa task (standard library and sia_core only).

The task folder is built from the user's own GPQA file (``SIA_GPQA_DATA``); without one, the
placeholder folder makes ``sia --task gpqa`` fail with one line saying what to provide.
"""

from __future__ import annotations

from collections.abc import Iterator

from sia_core import hookimpl
from sia_core.contracts.records import TaskSpec

from .data import ENV_VAR, task_path


@hookimpl
def sia_tasks() -> Iterator[TaskSpec]:
    """The gpqa task folder (built in the cache from SIA_GPQA_DATA, or the placeholder)."""
    yield TaskSpec(
        name="gpqa",
        path=str(task_path()),
        description=f"GPQA Diamond multiple choice (A-D); needs {ENV_VAR}=your copy of the data",
    )
