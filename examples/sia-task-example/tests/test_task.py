"""Tests for the example task (Roman numerals): sia's conformance suite plus its own checks."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from sia_core.services.taskdir import load_task
from sia_core.testing.conformance.task import TaskConformance
from sia_task_example import plugin

TASK_DIR = Path(plugin.__file__).parent / "task"


class TestConformance(TaskConformance):
    """Validation, disjoint splits, no label leaks, all-correct = best, empty = worst, ..."""

    @pytest.fixture
    def task_dir(self) -> Path:
        return TASK_DIR


def test_plugin_yields_the_task(sia_pm, register_plugin) -> None:
    register_plugin(plugin, "task-example")
    assert Path(sia_pm.tasks().get("example").path) == TASK_DIR


def test_scorer_on_hand_made_answers() -> None:
    task = load_task(TASK_DIR)
    labels = task.private_labels("test")
    ids = sorted(labels)
    answers = {
        ids[0]: f"It is {labels[ids[0]]}.",
        ids[1]: labels[ids[1]],
        ids[2]: labels[ids[2]] + 1,
        ids[3]: "MCMXCIV",
    }
    result = task.score("test", answers)
    assert [result.per_item[i] for i in ids[:4]] == [1.0, 1.0, 0.0, 0.0]
    assert result.score == pytest.approx(2 / 20)
    assert result.n_answered == 4


def test_scorer_breaks_accuracy_down_by_size() -> None:
    task = load_task(TASK_DIR)
    labels = task.private_labels("test")
    big = [i for i, n in labels.items() if n >= 1000]
    result = task.score("test", {i: labels[i] for i in big})
    assert result.extra["accuracy_1000-3999"] == 1.0
    assert result.extra["accuracy_100-999"] == 0.0
    assert result.score == pytest.approx(len(big) / 20)


def test_make_data_regenerates_the_committed_items() -> None:
    spec = importlib.util.spec_from_file_location(
        "example_make_data", TASK_DIR.parents[2] / "make_data.py"
    )
    assert spec is not None and spec.loader is not None
    make_data = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_data)
    task = load_task(TASK_DIR)
    for row in task.train_examples():
        assert make_data.to_roman(row["label"]) == row["input"]
    for item in task.items("test"):
        assert make_data.to_roman(task.private_labels("test")[item.id]) == item.input


def test_reference_scaffold_declares_tunable_params() -> None:
    path = TASK_DIR / "reference" / "reference_target_agent.py"
    spec = importlib.util.spec_from_file_location("reference_scaffold", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert set(module.SEARCH_SPACE) <= set(module.PARAMS)
