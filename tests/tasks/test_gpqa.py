"""sia-task-gpqa: no data shipped; the task folder is built from SIA_GPQA_DATA (synthetic here)."""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from sia_core.contracts.records import Item
from sia_core.services.taskdir import Task, load_task, validate_task
from sia_core.testing.conformance.task import TaskConformance
from sia_task_gpqa import data, plugin, scoring

SAMPLE = Path(data.__file__).parent / "synthetic_sample.json"
SIA = Path(sys.executable).parent / "sia"
DOMAINS = ("Physics", "Chemistry", "Biology")


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv(data.ENV_VAR, raising=False)
    return tmp_path / "cache"


@pytest.fixture
def sample(tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """SIA_GPQA_DATA pointing at a copy of the 4 synthetic questions (SIA-style JSON)."""
    copy = tmp_path / "synthetic_sample.json"
    shutil.copy(SAMPLE, copy)
    monkeypatch.setenv(data.ENV_VAR, str(copy))
    return copy


def write_csv(path: Path, n: int, reverse: bool = False) -> Path:
    """``n`` invented questions in the official CSV layout (correct answer in its own column)."""
    rows = [
        {
            "Record ID": f"recSYN{k:03d}",
            "Question": f"SYNTHETIC question {k}?",
            "Correct Answer": f"right {k}",
            "Incorrect Answer 1": f"wrong {k}.1",
            "Incorrect Answer 2": f"wrong {k}.2",
            "Incorrect Answer 3": f"wrong {k}.3",
            "High-level domain": DOMAINS[k % 3],
            "Subdomain": "Invented",
            "Explanation": f"because {k}",
            "Writer's Difficulty Estimate": "easy",
        }
        for k in range(n)
    ]
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(reversed(rows) if reverse else rows)
    return path


@pytest.fixture
def csv_task(tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch) -> Task:
    monkeypatch.setenv(data.ENV_VAR, str(write_csv(tmp_path / "synthetic.csv", 12)))
    return load_task(data.task_path())


# -- the task folder ------------------------------------------------------------------------------


class TestGpqaConformance(TaskConformance):
    @pytest.fixture
    def task_dir(self, sample: Path) -> Path:
        path = data.task_path()
        assert path != data.unavailable_dir()
        return path


def test_plugin_yields_the_built_folder(sample: Path, sia_pm: Any, register_plugin: Any) -> None:
    register_plugin(plugin, "task-gpqa")
    path = Path(sia_pm.tasks().get("gpqa").path)
    assert path.parent.parent == Path(os.environ["XDG_CACHE_HOME"]) / "sia" / "gpqa"
    assert validate_task(path) == []


def test_sample_splits_and_recorded_checksum(sample: Path) -> None:
    task = load_task(data.task_path())
    assert [len(task.items(s)) for s in ("train", "dev", "test")] == [1, 1, 2]
    assert "sha256 `93a86b153ad30ee4" in task.task_md
    assert "4 questions (not GPQA Diamond's 198)" in task.task_md
    item = task.items("test")[0]
    assert set(item.input) == {"question", "options", "domain", "subdomain"}
    assert item.input["question"].startswith("SYNTHETIC (not from GPQA)")


def test_the_folder_is_built_once_per_file_content(sample: Path, tmp_path: Path) -> None:
    first = data.task_path()
    stamp = (first / ".complete").stat().st_mtime_ns
    assert data.task_path() == first
    assert (first / ".complete").stat().st_mtime_ns == stamp
    changed = json.loads(sample.read_text())[:3]
    sample.write_text(json.dumps(changed))
    second = data.task_path()
    assert second != first and len(load_task(second).items("test")) == 2


def test_diamond_sized_split() -> None:
    questions = [
        data.Question(id=f"rec{k}", question="q", options=("a", "b", "c", "d"), answer="A")
        for k in range(198)
    ]
    splits = data.split_of(questions)
    assert {s: len(v) for s, v in splits.items()} == {"test": 99, "dev": 50, "train": 49}
    assert data.split_of(list(reversed(questions))) == splits  # row order does not matter


# -- the data file ------------------------------------------------------------------------------


def test_options_are_shuffled_by_id_and_labels_follow(tmp_path: Path) -> None:
    forward = data.read_questions(write_csv(tmp_path / "a.csv", 12))
    backward = data.read_questions(write_csv(tmp_path / "b.csv", 12, reverse=True))
    assert {q.id: q for q in forward} == {q.id: q for q in backward}
    for q in forward:
        k = int(q.id[-3:])
        assert q.options[data.LETTERS.index(q.answer)] == f"right {k}"
        assert sorted(q.options) == sorted([f"right {k}", *(f"wrong {k}.{i}" for i in (1, 2, 3))])
    assert len({q.answer for q in forward}) > 1  # the correct answer is not always A
    # pinned: the order must not change between versions (it changes what the model sees)
    assert data.shuffled_options("recX", "c", ["i1", "i2", "i3"]) == (
        ["i1", "i3", "c", "i2"],
        "C",
    )


def test_sia_json_keeps_its_letters() -> None:
    questions = data.read_questions(SAMPLE)
    assert [(q.id, q.answer, q.domain) for q in questions] == [
        ("1", "C", "Physics"),
        ("2", "B", "Chemistry"),
        ("3", "C", "Biology"),
        ("4", "A", "Physics"),
    ]
    assert questions[3].options[0] == "2 ohm"


@pytest.mark.parametrize(
    ("name", "content", "words"),
    [
        ("gpqa_diamond.csv", None, ["12 questions", "GPQA Diamond has 198"]),
        ("x.csv", "Question,Correct Answer\nq,a\n", ["not a GPQA CSV", "'Incorrect Answer 1'"]),
        ("x.json", '[{"id": 1, "Question": "q", "correct_answer_letter": "A"}]', ["'options'"]),
        ("x.json", "{not json", ["not valid JSON"]),
        ("x.txt", "hello", ["expected a .csv"]),
    ],
)
def test_unusable_files_are_refused_with_a_reason(
    tmp_path: Path, name: str, content: str | None, words: list[str]
) -> None:
    path = tmp_path / name
    if content is None:
        write_csv(path, 12)
    else:
        path.write_text(content)
    with pytest.raises(data.GPQADataUnavailable) as err:
        data.read_questions(path)
    assert all(w in str(err.value) for w in words), str(err.value)
    assert "\n" not in str(err.value)


# -- the scorer (exact figures) -------------------------------------------------------------------


def test_parse_letter() -> None:
    cases = {
        "C": "C",
        "(c)": "C",
        " b. ": "B",
        "Answer: D": "D",
        "I think A, but the answer is (B).": "B",
        "answer = C": "C",
        "The answer is a compound; pick D": "D",
        "B) 4.5 ohm": "B",
        "no idea": None,
        "": None,
        "E": None,
    }
    for text, letter in cases.items():
        assert scoring.parse_letter(text) == letter, text
    assert scoring.parse_letter(3) is None


def test_scores_divide_by_all_questions_with_domain_breakdown(csv_task: Task) -> None:
    labels = csv_task.private_labels("test")
    items = csv_task.items("test")
    assert len(items) == 6
    domain = {i.id: i.input["domain"] for i in items}
    wrong = {"A": "B", "B": "C", "C": "D", "D": "A"}
    answers: dict[str, Any] = {}
    for item in items:
        if domain[item.id] == "Physics":
            answers[item.id] = f"Answer: {labels[item.id]}"
        elif domain[item.id] == "Chemistry":
            answers[item.id] = wrong[labels[item.id]]
    chem = [i.id for i in items if domain[i.id] == "Chemistry"]
    answers[chem[0]] = "I cannot decide."
    result = csv_task.score("test", answers)
    count = {d: sum(1 for i in items if domain[i.id] == d) for d in DOMAINS}
    assert result.score == pytest.approx(count["Physics"] / 6)
    assert result.extra["accuracy_by_domain"] == {
        d: (1.0 if d == "Physics" else 0.0) for d in DOMAINS if count[d]
    }
    assert result.extra["n_by_domain"] == {d: n for d, n in count.items() if n}
    assert result.extra["unanswered"] == count["Biology"]
    assert result.extra["parse_failures"] == 1
    assert result.extra["parse_failure_rate"] == pytest.approx(1 / 6)


def test_sample_scores(sample: Path) -> None:
    task = load_task(data.task_path())
    labels = task.private_labels("test")
    (first, second) = sorted(labels)
    result = task.score("test", {first: labels[first], second: "no letter here"})
    assert result.score == 0.5
    assert result.extra["parse_failures"] == 1 and result.extra["parse_failure_rate"] == 0.5
    assert scoring.score_item("the answer is C", "C", Item(id="x", input={})) == 1.0


# -- without data ---------------------------------------------------------------------------------


def test_without_data_the_placeholder_fails_with_one_problem(
    cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert data.task_path() == data.unavailable_dir()
    (problem,) = validate_task(data.unavailable_dir())
    assert problem.file == "scorer.py"
    assert data.ENV_VAR in problem.message and "github.com/idavidrein/gpqa" in problem.message
    monkeypatch.setenv(data.ENV_VAR, "/nonexistent/gpqa_diamond.csv")
    assert data.task_path() == data.unavailable_dir()
    (problem,) = validate_task(data.unavailable_dir())
    assert "/nonexistent/gpqa_diamond.csv: no such file" in problem.message
    assert not (cache / "sia").exists() or not any((cache / "sia" / "gpqa").iterdir())


def _run_without_data(tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != data.ENV_VAR}
    env["XDG_CACHE_HOME"] = str(tmp_path / "cache")
    return subprocess.run(
        [
            *(str(SIA), "--task", "gpqa", "--max_gen", "1", "--backend", "scripted"),
            *("--runs-dir", str(tmp_path / "runs")),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )


def test_sia_without_data_stops_with_one_error_line(tmp_path: Path) -> None:
    proc = _run_without_data(tmp_path)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr + proc.stdout
    errors = [line for line in proc.stderr.splitlines() if line.startswith("sia: error:")]
    assert len(errors) == 1, proc.stderr
    assert proc.stderr.splitlines()[-1] == errors[0]
    assert data.ENV_VAR in errors[0] and "github.com/idavidrein/gpqa" in errors[0]


def test_sia_without_data_prints_nothing_but_the_error(tmp_path: Path) -> None:
    proc = _run_without_data(tmp_path)
    assert len(proc.stderr.splitlines()) == 1, proc.stderr
    assert not (tmp_path / "runs").exists()  # nothing written for a run that cannot start


# -- the reference scaffold ------------------------------------------------------------------------


def _scaffold() -> ModuleType:
    path = Path(data.__file__).parent / "template" / "reference" / "reference_target_agent.py"
    spec = importlib.util.spec_from_file_location("gpqa_reference", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class _Ctx:
    def __init__(self, reply: str) -> None:
        self.reply, self.params, self.train, self.notes = reply, {}, [], []
        self.messages: list[Any] = []

    def llm(self, messages: Any, **params: Any) -> str:
        self.messages = messages
        return self.reply

    def log(self, kind: str, content: str) -> None:
        self.notes.append(content)


def test_reference_scaffold_answers_a_letter() -> None:
    scaffold = _scaffold()
    for key, space in scaffold.SEARCH_SPACE.items():
        value = scaffold.PARAMS[key]
        low_high = space.get("int") or space.get("float")
        assert (
            value in space["choices"] if "choices" in space else low_high[0] <= value <= low_high[1]
        )
    item = Item(
        id="1",
        input={"question": "Q?", "options": dict(zip("ABCD", "1234", strict=True)), "domain": ""},
    )
    ctx = _Ctx("Let me think. Answer: (C)")
    assert scaffold.solve(item, ctx) == "C"
    assert "A) 1\nB) 2\nC) 3\nD) 4" in ctx.messages[-1]["content"]
    ctx = _Ctx("hmm")
    assert scaffold.solve(item, ctx) == "hmm" and ctx.notes
