"""What every loaded task holds: its config, items and labels by split, and the split
accessors (:class:`TaskCore`, the base the scoring, redaction and fingerprint parts build on)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from sia_core.contracts.errors import TaskError
from sia_core.contracts.records import Item
from sia_core.services.taskdir.layout import PRIVATE_DIR, PUBLIC_DIR, SPLITS
from sia_core.services.taskdir.records import TaskConfig, _Row


class TaskCore:
    """A loaded task's state and split access; :class:`~sia_core.services.taskdir.task.Task`
    adds scoring, redaction and fingerprints."""

    root: Path
    config: TaskConfig
    name: str
    public_dir: Path
    private_dir: Path
    task_md: str
    reference_scaffold: Path
    sample_task_descriptions: str
    notes: tuple[str, ...]

    def __init__(
        self,
        *,
        root: Path,
        config: TaskConfig,
        task_md: str,
        reference_scaffold: Path,
        sample_task_descriptions: str,
        notes: Iterable[str],
        rows: Mapping[str, list[_Row]],
        labels: Mapping[str, dict[str, Any]],
        score_item: Callable[[Any, Any, Item], float] | None,
        aggregate: Callable[..., Mapping[str, Any]] | None,
        score_steps: Callable[..., Any] | None = None,
    ) -> None:
        self.root = root
        self.config = config
        self.name = config.name
        self.public_dir = root / PUBLIC_DIR
        self.private_dir = root / PRIVATE_DIR
        self.task_md = task_md
        self.reference_scaffold = reference_scaffold
        self.sample_task_descriptions = sample_task_descriptions
        self.notes = tuple(notes)
        self._items = {
            split: [Item(id=r.id, input=r.input, split=split) for r in split_rows]
            for split, split_rows in rows.items()
        }
        self._index = {split: {i.id: i for i in items} for split, items in self._items.items()}
        self._train = [
            {"id": r.id, "input": r.input, "label": r.label} for r in rows.get("train", [])
        ]
        self._labels = {split: dict(split_labels) for split, split_labels in labels.items()}
        self._score_item = score_item
        self._aggregate = aggregate
        self._score_steps = score_steps
        self._secrets: frozenset[str] | None = None  # built on first use by secret_values()

    def __repr__(self) -> str:
        sizes = ", ".join(f"{s}={len(v)}" for s, v in self._items.items())
        return f"Task({self.name!r}, kind={self.config.kind!r}, {sizes})"

    @property
    def splits(self) -> tuple[str, ...]:
        """The splits that have items (empty for a program-style task)."""
        return tuple(s for s in SPLITS if s in self._items)

    def _check_split(self, split: str) -> None:
        if split not in SPLITS:
            raise TaskError(
                self.name, [f"unknown split {split!r}; choose one of: train, dev, test"]
            )

    def items(self, split: str) -> list[Item]:
        """The split's items, inputs only (never labels, also for ``train``).

        A program-style task has no per-item inputs: it returns an empty list.
        """
        self._check_split(split)
        return list(self._items.get(split, []))

    def train_examples(self) -> list[dict[str, Any]]:
        """Train items with their (public) labels: ``[{"id", "input", "label"}]``."""
        return [dict(row) for row in self._train]

    def private_labels(self, split: str) -> dict[str, Any]:
        """The split's labels by id. For scorers and tests only: never hand them to a scaffold."""
        self._check_split(split)
        return dict(self._labels.get(split, {}))

    def _worst(self) -> float:
        return 1.0 if self.config.direction == "minimize" else 0.0

    def better(self, a: float, b: float, margin: float = 0.0) -> bool:
        """Whether score ``a`` beats ``b`` by more than ``margin`` in this task's direction."""
        if self.config.direction == "minimize":
            return a < b - margin
        return a > b + margin
