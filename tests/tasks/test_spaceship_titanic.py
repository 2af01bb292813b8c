"""The spaceship-titanic task package: conformance, splits, scorer, reference scaffold, CLI run.

Everything runs on the real shipped data with the real scorer, through sia's real gateway,
runner and process sandbox (the reference scaffold is classic ML and calls no model).
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import subprocess
import sys
import time
import types
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from sia_core.contracts.records import Item, ItemResult
from sia_core.machinery.plugins import new_plugin_manager
from sia_core.services.gateway import Gateway
from sia_core.services.process_sandbox import ProcessSandbox
from sia_core.services.runner import RunSpec, run_items
from sia_core.services.taskdir import Task, load_task, validate_task
from sia_core.surface.builtin.scripted import ScriptedTaskModel
from sia_core.testing.conformance.task import TaskConformance

REPO = Path(__file__).resolve().parents[2]
# the shared source data (make_splits.py's input): $SIA_SHARED_DATA, else shared/ beside the repo
_SHARED = [Path(os.environ["SIA_SHARED_DATA"])] if os.environ.get("SIA_SHARED_DATA") else []
_SHARED += [REPO.parent / "shared" / "data", Path("/work/shared/data")]
SOURCE = next(
    (d / "spaceship-titanic" for d in _SHARED if (d / "spaceship-titanic").is_dir()),
    _SHARED[0] / "spaceship-titanic",
)
TASK_DIR = Path(new_plugin_manager().tasks().get("spaceship-titanic").path)
COLUMNS = [
    "PassengerId",
    "HomePlanet",
    "CryoSleep",
    "Cabin",
    "Destination",
    "Age",
    "VIP",
    "RoomService",
    "FoodCourt",
    "ShoppingMall",
    "Spa",
    "VRDeck",
    "Name",
]


def _load_module(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def task() -> Task:
    return load_task(TASK_DIR)


@pytest.fixture(scope="module")
def scorer() -> ModuleType:
    return _load_module(TASK_DIR / "scorer.py", "spaceship_scorer_under_test")


class TestSpaceshipTitanicConformance(TaskConformance):
    @pytest.fixture
    def task_dir(self) -> Path:
        return TASK_DIR


# --------------------------------------------------------------------------------------------
# Package and splits
# --------------------------------------------------------------------------------------------


def test_registered_through_its_entry_point() -> None:
    registry = new_plugin_manager().tasks()
    assert registry.provider("spaceship-titanic") == "task-spaceship-titanic"
    assert TASK_DIR.parts[-2:] == ("sia_task_spaceship_titanic", "task")
    assert validate_task(TASK_DIR) == []


def test_split_sizes_and_stratified_dev(task: Task) -> None:
    assert len(task.items("train")) == 7041
    assert len(task.items("dev")) == 782
    assert len(task.items("test")) == 870
    train_share = sum(row["label"] for row in task.train_examples()) / 7041
    dev_labels = list(task.private_labels("dev").values())
    assert sum(dev_labels) == 394  # largest-remainder share of 782 at 50.44% True
    assert abs(sum(dev_labels) / 782 - train_share) < 0.005
    assert sum(task.private_labels("test").values()) == 432


def test_inputs_are_typed_dicts_without_the_target(task: Task) -> None:
    for split in ("train", "dev", "test"):
        for item in task.items(split):
            assert list(item.input) == COLUMNS
            assert item.input["PassengerId"] == item.id
            assert item.input["CryoSleep"] in (True, False, None)
            assert item.input["Age"] is None or isinstance(item.input["Age"], float)
    labels = [row["label"] for row in task.train_examples()]
    assert set(labels) == {True, False}
    for split in ("dev", "test"):
        assert set(task.private_labels(split).values()) == {True, False}


@pytest.mark.skipif(not SOURCE.is_dir(), reason=f"shared source data not at {SOURCE}")
def test_make_splits_rebuilds_the_shipped_files(tmp_path: Path) -> None:
    make_splits = _load_module(REPO / "tasks/spaceship-titanic/make_splits.py", "st_make_splits")
    assert make_splits.make_splits(SOURCE, tmp_path) == {"train": 7041, "dev": 782, "test": 870}
    for rel in (
        "data/public/train.jsonl",
        "data/public/dev.jsonl",
        "data/public/test.jsonl",
        "data/private/dev_labels.jsonl",
        "data/private/test_labels.jsonl",
    ):
        assert (tmp_path / rel).read_bytes() == (TASK_DIR / rel).read_bytes(), rel
    # train + dev together are the source train rows, value for value
    source = {r["PassengerId"]: r for r in make_splits._read(SOURCE / "train.csv")}
    ours = {r["PassengerId"]: r for r in _jsonl(TASK_DIR / "data/public/train.jsonl")}
    labels = _jsonl(TASK_DIR / "data/private/dev_labels.jsonl")
    dev_target = {r["PassengerId"]: r["Transported"] for r in labels}
    for row in _jsonl(TASK_DIR / "data/public/dev.jsonl"):
        ours[row["PassengerId"]] = {**row, "Transported": dev_target[row["PassengerId"]]}
    assert ours == source


# --------------------------------------------------------------------------------------------
# Scorer
# --------------------------------------------------------------------------------------------


def test_perfect_all_wrong_and_empty(task: Task) -> None:
    labels = task.private_labels("test")
    assert task.score("test", labels).score == 1.0
    wrong = task.score("test", {i: not v for i, v in labels.items()})
    assert wrong.score == 0.0 and wrong.n_answered == 870
    empty = task.score("test", {})
    assert empty.score == 0.0 and empty.n_answered == 0
    assert task.score("test", {i: True for i in labels}).score == pytest.approx(432 / 870)


def test_exactly_half_correct_scores_one_half(task: Task) -> None:
    labels = task.private_labels("test")
    ids = sorted(labels)
    answers = {i: labels[i] if n % 2 == 0 else not labels[i] for n, i in enumerate(ids)}
    result = task.score("test", answers)
    assert result.score == 0.5
    assert result.extra["n_unparsable"] == 0


def test_lenient_booleans_are_read(task: Task, scorer: ModuleType) -> None:
    true_forms: list[Any] = [True, 1, 1.0, "True", "true", "TRUE", " yes ", "Y", "1", "t"]
    true_forms += ["transported", "Transported.", "true\n"]
    false_forms: list[Any] = [False, 0, 0.0, "False", "false", "no", "N", "0", "f"]
    false_forms += ["not transported", "Not Transported", "False."]
    assert [scorer.parse_bool(v) for v in true_forms] == [True] * len(true_forms)
    assert [scorer.parse_bool(v) for v in false_forms] == [False] * len(false_forms)
    labels = task.private_labels("dev")
    answers = {}
    for n, (item_id, label) in enumerate(sorted(labels.items())):
        forms = true_forms if label else false_forms
        answers[item_id] = forms[n % len(forms)]
    assert task.score("dev", answers).score == 1.0


def test_malformed_answers_are_wrong(task: Task, scorer: ModuleType) -> None:
    bad: list[Any] = [
        "maybe",
        "True story",
        "yes and no",
        2,
        -1,
        0.5,
        float("nan"),
        [True],
        {"Transported": True},
    ]
    for label in (True, False):
        assert [scorer.score_item(v, label, None) for v in bad] == [0.0] * len(bad)
    labels = task.private_labels("dev")
    ids = sorted(labels)
    answers: dict[str, Any] = {ids[n]: v for n, v in enumerate(bad)}
    answers[ids[len(bad)]] = ""  # blank: unanswered
    result = task.score("dev", answers)
    assert result.score == 0.0
    assert result.n_answered == len(bad)
    assert result.extra["n_unparsable"] == len(bad)
    assert "scorer_errors" not in result.extra


# --------------------------------------------------------------------------------------------
# Reference scaffold
# --------------------------------------------------------------------------------------------


def _literal(name: str) -> Any:
    tree = ast.parse((TASK_DIR / "reference/reference_target_agent.py").read_text("utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == name for t in node.targets
        ):
            return ast.literal_eval(node.value)
    raise AssertionError(f"no {name} literal")


def test_params_and_search_space_are_consistent() -> None:
    params, space = _literal("PARAMS"), _literal("SEARCH_SPACE")
    assert set(space) <= set(params)
    for key, rng in space.items():
        value = params[key]
        if "choices" in rng:
            assert value in rng["choices"], key
        else:
            (kind,) = set(rng) - {"step", "log"}
            low, high = rng[kind]
            assert low <= value <= high, key
            assert isinstance(value, int if kind == "int" else float), key


def test_setup_is_fast() -> None:
    module = _load_module(TASK_DIR / "reference/reference_target_agent.py", "st_reference")
    train = load_task(TASK_DIR).train_examples()
    ctx = types.SimpleNamespace(params={}, train=train, log=lambda *args: None)
    start = time.monotonic()
    module.setup(ctx)
    assert time.monotonic() - start < 120.0  # a hang guard (about 1 s idle)


def _run(task: Task, items: list[Item], tmp: Path, **params: Any) -> list[ItemResult]:
    with Gateway(ScriptedTaskModel()) as gateway:
        gateway.begin(1)
        spec = RunSpec(
            scaffold_path=task.reference_scaffold,
            work_dir=tmp,
            public_dir=task.public_dir,
            train_examples=tuple(task.train_examples()),
            params=params,
            parallel=1,
            item_timeout_s=60,
        )
        results = run_items(spec, items, sandbox=ProcessSandbox(), gateway=gateway)
        assert gateway.calls() == []  # classic ML: no model call
        return results


@pytest.mark.parametrize(
    "params",
    [{}, {"model": "logreg", "use_spend": False, "use_cabin": False, "use_group": False}],
    ids=["default", "logreg-bare"],
)
def test_reference_scaffold_runs_through_the_runner(
    task: Task, tmp_path: Path, params: dict[str, Any]
) -> None:
    items = task.items("dev")[:40]
    results = _run(task, items, tmp_path, **params)
    assert [r.status for r in results] == ["ok"] * len(items), results[0].error
    for result in results:
        assert isinstance(result.answer, bool)
        (step,) = [s.content for s in result.trajectory if s.kind == "prediction"]
        assert 0.0 <= step["p_transported"] <= 1.0
        assert result.answer == (step["p_transported"] >= 0.5)
    answers = {r.item_id: r.answer for r in results}
    score = task.score("dev", answers)
    labels = task.private_labels("dev")
    right = sum(answers[i] == labels[i] for i in answers)
    assert sum(score.per_item.values()) == right
    assert right >= 0.6 * len(items)  # a fitted model, far above a coin on 40 passengers


# --------------------------------------------------------------------------------------------
# The sia CLI, end to end
# --------------------------------------------------------------------------------------------


def test_sia_cli_runs_spaceship_titanic_with_the_scripted_backend(tmp_path: Path) -> None:
    sia = Path(sys.executable).with_name("sia")
    runs = tmp_path / "runs"
    argv = [str(sia), "--task", "spaceship-titanic", "--max_gen", "1", "--backend", "scripted"]
    argv += ["--runs-dir", str(runs), "--run_id", "1"]
    # a hang guard only (idle: ~20 s; a loaded machine may take several times that)
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=1200, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    gen = runs / "run_1" / "gen_1"
    dev = json.loads((gen / "metrics.json").read_text(encoding="utf-8"))["dev"]
    test = json.loads((gen / "sealed" / "metrics_test.json").read_text(encoding="utf-8"))
    assert (dev["n_items"], dev["n_answered"], test["n_items"]) == (782, 782, 870)
    assert dev["score"] > 0.75 and test["score"] > 0.75
