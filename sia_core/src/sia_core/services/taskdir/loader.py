"""Loading a task folder: :func:`validate_task` (every problem) and :func:`load_task` (a
:class:`~sia_core.services.taskdir.task.Task`, or a TaskError listing every problem)."""

from __future__ import annotations

from pathlib import Path

from sia_core.contracts.errors import TaskError
from sia_core.services.taskdir.config_reader import ConfigReading
from sia_core.services.taskdir.documents import DocumentChecks
from sia_core.services.taskdir.leak_scan import scan_public_for_labels
from sia_core.services.taskdir.records import Problem
from sia_core.services.taskdir.scorer_loading import ScorerLoading
from sia_core.services.taskdir.split_reader import SplitReading
from sia_core.services.taskdir.task import Task


class _Loader(ConfigReading, DocumentChecks, ScorerLoading, SplitReading):
    """Reads a task directory once, collecting every problem instead of stopping at the first."""

    def run(self) -> None:
        if not self.root.is_dir():
            self.problem(".", f"task directory not found: {self.root}")
            return
        raw = self.read_toml()
        self.check_documents()
        config = self.build_config(raw)
        self.config = config
        if config.kind == "per_item":
            self.load_scorer(config)
            self.load_splits(config)
        elif config.kind == "program":
            self.check_program(config)
            if "train" in config.splits:
                self.load_splits(config, only=("train",))
        self.scan_public()

    def scan_public(self) -> None:
        self.problems.extend(scan_public_for_labels(self.root))


def validate_task(path: str | Path) -> list[Problem]:
    """Every problem with the task directory at ``path``; an empty list means it is valid."""
    loader = _Loader(path)
    try:
        loader.run()
    except Exception as exc:  # bad input must be reported, never a traceback
        loader.problem(".", f"could not be checked: {type(exc).__name__}: {exc}")
    return loader.problems


def load_task(path: str | Path) -> Task:
    """Load and validate a task directory; raises :class:`TaskError` listing every problem."""
    loader = _Loader(path)
    try:
        loader.run()
    except Exception as exc:
        loader.problem(".", f"could not be checked: {type(exc).__name__}: {exc}")
    if loader.problems or loader.config is None:
        raise TaskError(loader.root.name, [str(p) for p in loader.problems])
    return Task(
        root=loader.root,
        config=loader.config,
        task_md=loader.task_md,
        reference_scaffold=loader.reference,
        sample_task_descriptions=loader.sample_descriptions,
        notes=loader.notes,
        rows=loader.rows,
        labels=loader.labels,
        score_item=loader.score_item,
        aggregate=loader.aggregate,
        score_steps=loader.score_steps,
    )
