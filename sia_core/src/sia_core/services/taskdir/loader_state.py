"""What reading a task folder collects (problems, notes, rows, labels, scorer, config) and
how a problem is recorded (:class:`LoaderState`, the base of the loader's parts)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from sia_core.contracts.records import Item
from sia_core.services.taskdir.layout import REFERENCE_SCAFFOLD, TASK_TOML
from sia_core.services.taskdir.records import Problem, TaskConfig, _Row


class LoaderState:
    """A task folder being read: everything found so far, and every problem."""

    def __init__(self, path: str | Path) -> None:
        root = Path(path).expanduser()
        if root.is_file() and root.name == TASK_TOML:
            root = root.parent
        self.root = root.resolve()
        self.problems: list[Problem] = []
        self.notes: list[str] = []
        self.rows: dict[str, list[_Row]] = {}
        self.labels: dict[str, dict[str, Any]] = {}
        self.score_item: Callable[[Any, Any, Item], float] | None = None
        self.aggregate: Callable[..., Mapping[str, Any]] | None = None
        self.score_steps: Callable[..., Any] | None = None
        self.config: TaskConfig | None = None
        self.task_md = ""
        self.sample_descriptions = ""
        self.reference = self.root / REFERENCE_SCAFFOLD

    def problem(self, file: str | Path, message: str) -> None:
        self.problems.append(Problem(file=self.rel(file), message=message))

    def rel(self, file: str | Path) -> str:
        path = Path(file)
        if path.is_absolute():
            try:
                path = path.relative_to(self.root)
            except ValueError:
                return str(path)
        text = path.as_posix()
        return text if text not in ("", ".") else "."


def _is_under(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
    except ValueError:
        return False
    return True
