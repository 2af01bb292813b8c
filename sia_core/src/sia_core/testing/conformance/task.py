"""Conformance suite for task directories.

A task package subclasses :class:`TaskConformance` in its tests and supplies the directory::

    from sia_core.testing.conformance.task import TaskConformance

    class TestMyTask(TaskConformance):
        @pytest.fixture
        def task_dir(self):
            return Path(my_task.__file__).parent / "task"

Per-item checks are skipped for program-style (``evaluate.py``) tasks, which have no per-item
inputs to check until a scaffold has run.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from sia_core.contracts.records import ScoreResult
from sia_core.services.taskdir import (
    EVAL_SPLITS,
    SPLITS,
    Task,
    load_task,
    scan_public_for_labels,
    validate_task,
)

#: the bundled tiny-add task directory (a complete, valid sia-native task)
TINY_TASK_DIR = Path(__file__).resolve().parents[1] / "tiny_task"


class TaskConformance:
    """Checks every task directory must pass. Subclass it and override the ``task_dir`` fixture."""

    @pytest.fixture
    def task_dir(self) -> Path:
        raise NotImplementedError("override the task_dir fixture to return the task directory")

    @pytest.fixture
    def task(self, task_dir: Path) -> Task:
        return load_task(task_dir)

    @pytest.fixture
    def per_item_task(self, task: Task) -> Task:
        if task.config.kind != "per_item":
            pytest.skip("program-style task: no per-item splits to check")
        return task

    def _best(self, task: Task) -> float:
        return 0.0 if task.config.direction == "minimize" else 1.0

    def _worst(self, task: Task) -> float:
        return 1.0 - self._best(task)

    def test_validates_without_problems(self, task_dir: Path) -> None:
        problems = validate_task(task_dir)
        assert problems == [], "\n".join(str(p) for p in problems)

    def test_splits_load_with_unique_ids(self, per_item_task: Task) -> None:
        for split in ("dev", "test"):
            assert per_item_task.items(split), f"{split} has no items"
        for split in SPLITS:
            ids = [item.id for item in per_item_task.items(split)]
            assert len(ids) == len(set(ids)), f"duplicate ids in {split}"
            assert all(item.split == split for item in per_item_task.items(split))

    def test_splits_are_disjoint(self, per_item_task: Task) -> None:
        ids = {s: {item.id for item in per_item_task.items(s)} for s in SPLITS}
        assert not ids["train"] & ids["dev"]
        assert not ids["train"] & ids["test"]
        assert not ids["dev"] & ids["test"]

    def test_eval_items_carry_no_labels(self, per_item_task: Task) -> None:
        label_field = per_item_task.config.label_field
        for split in EVAL_SPLITS:
            for item in per_item_task.items(split):
                assert not hasattr(item, "label")
                if isinstance(item.input, dict):
                    assert label_field not in item.input, f"{item.id} input carries its label"
        train_inputs = [item.input for item in per_item_task.items("train")]
        assert all(not (isinstance(i, dict) and label_field in i) for i in train_inputs)

    def test_public_files_hold_no_private_labels(self, task: Task) -> None:
        problems = scan_public_for_labels(task.root)
        assert problems == [], "\n".join(str(p) for p in problems)

    def test_all_correct_answers_score_best(self, per_item_task: Task) -> None:
        for split in EVAL_SPLITS:
            answers = per_item_task.private_labels(split)
            result = per_item_task.score(split, answers)
            assert isinstance(result, ScoreResult)
            assert result.score == pytest.approx(self._best(per_item_task)), split
            assert result.n_answered == result.n_items == len(per_item_task.items(split))

    def test_empty_answers_score_worst(self, per_item_task: Task) -> None:
        for split in EVAL_SPLITS:
            result = per_item_task.score(split, {})
            assert result.score == pytest.approx(self._worst(per_item_task))
            assert result.n_answered == 0
            assert set(result.per_item) == {item.id for item in per_item_task.items(split)}

    def test_score_divides_by_all_items(self, per_item_task: Task) -> None:
        for split in EVAL_SPLITS:
            labels = per_item_task.private_labels(split)
            ids = [item.id for item in per_item_task.items(split)]
            half = ids[: max(1, len(ids) // 2)]
            result = per_item_task.score(split, {i: labels[i] for i in half})
            best, worst = self._best(per_item_task), self._worst(per_item_task)
            expected = (len(half) * best + (len(ids) - len(half)) * worst) / len(ids)
            assert result.score == pytest.approx(expected)
            assert result.n_items == len(ids)
            assert result.n_answered == len(half)

    def test_reference_scaffold_parses(self, task: Task) -> None:
        assert task.reference_scaffold.is_file()
        ast.parse(task.reference_scaffold.read_text(encoding="utf-8"))

    def test_task_description_is_not_empty(self, task: Task) -> None:
        assert task.task_md.strip()
