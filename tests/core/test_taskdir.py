"""Task directories: loading, validation, scoring, dev carving, SIA-style folders."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, ClassVar

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sia_core.contracts.errors import TaskError
from sia_core.contracts.records import Item
from sia_core.services.taskdir import (
    Problem,
    Task,
    carve_dev,
    load_task,
    normalize,
    program_split_of,
    validate_task,
)
from sia_core.services.taskdir.records import _Row
from sia_core.testing.conformance.task import TINY_TASK_DIR, TaskConformance

# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    """A writable copy of the bundled tiny-add task."""
    return Path(shutil.copytree(TINY_TASK_DIR, tmp_path / "tiny-add"))


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def edit_toml(root: Path, old: str, new: str) -> None:
    path = root / "task.toml"
    text = path.read_text()
    assert old in text, f"{old!r} not in task.toml"
    path.write_text(text.replace(old, new))


def find(problems: list[Problem], file: str, *words: str) -> Problem:
    """The problem naming ``file`` whose message contains all ``words`` (fails otherwise)."""
    for problem in problems:
        if problem.file == file and all(w in problem.message for w in words):
            return problem
    listed = "\n".join(str(p) for p in problems) or "(none)"
    raise AssertionError(f"no problem for {file} with {words}; got:\n{listed}")


_TASK: Task | None = None


def tiny_task() -> Task:
    """The bundled task, loaded once (hypothesis tests cannot use function-scoped fixtures)."""
    global _TASK
    if _TASK is None:
        _TASK = load_task(TINY_TASK_DIR)
    return _TASK


# --------------------------------------------------------------------------------------------
# the bundled task loads and hides its labels
# --------------------------------------------------------------------------------------------


def test_tiny_task_loads() -> None:
    task = tiny_task()
    assert task.name == "tiny-add"
    assert task.config.kind == "per_item"
    assert task.config.answer_type == "int"
    assert task.config.scorer == "exact"
    assert [len(task.items(s)) for s in ("train", "dev", "test")] == [24, 12, 12]
    assert task.splits == ("train", "dev", "test")
    assert "tiny-add" in task.task_md
    assert task.reference_scaffold.name == "reference_target_agent.py"
    assert task.sample_task_descriptions.strip()
    assert task.public_dir == task.root / "data" / "public"
    assert task.private_dir == task.root / "data" / "private"
    assert task.notes == ()
    assert validate_task(TINY_TASK_DIR) == []


def test_load_task_accepts_the_toml_path() -> None:
    assert load_task(TINY_TASK_DIR / "task.toml").name == "tiny-add"


def test_items_never_expose_labels() -> None:
    task = tiny_task()
    labels = {**task.private_labels("dev"), **task.private_labels("test")}
    for split in ("train", "dev", "test"):
        for item in task.items(split):
            assert isinstance(item, Item)
            assert set(attrs.asdict(item)) == {"id", "input", "split"}
            assert item.split == split
            assert isinstance(item.input, str) and item.input.startswith("What is ")
    # an item's input is the question, never its sum
    for item in task.items("dev"):
        assert str(labels[item.id]) not in item.input


def test_train_examples_carry_public_labels() -> None:
    examples = tiny_task().train_examples()
    assert len(examples) == 24
    for ex in examples:
        a, b = (int(x) for x in ex["input"].removeprefix("What is ").rstrip("?").split(" + "))
        assert ex["label"] == a + b
    # a copy: changing it changes nothing in the task
    examples[0]["label"] = -1
    assert tiny_task().train_examples()[0]["label"] != -1


def test_unknown_split_is_a_task_error() -> None:
    with pytest.raises(TaskError, match="unknown split 'validation'"):
        tiny_task().items("validation")


# --------------------------------------------------------------------------------------------
# scoring
# --------------------------------------------------------------------------------------------


def test_score_perfect() -> None:
    task = tiny_task()
    result = task.score("dev", task.private_labels("dev"))
    assert result.split == "dev"
    assert result.score == 1.0
    assert result.n_items == 12 and result.n_answered == 12
    assert set(result.per_item) == {i.id for i in task.items("dev")}
    assert set(result.per_item.values()) == {1.0}
    assert result.extra["metric"] == "accuracy"


def test_score_all_wrong() -> None:
    task = tiny_task()
    answers = {i: label + 1 for i, label in task.private_labels("test").items()}
    result = task.score("test", answers)
    assert result.score == 0.0
    assert result.n_answered == 12


def test_score_empty() -> None:
    task = tiny_task()
    result = task.score("dev", {})
    assert result.score == 0.0
    assert result.n_answered == 0
    assert result.n_items == 12
    assert result.per_item == {i.id: 0.0 for i in task.items("dev")}


def test_score_partial_divides_by_all_items() -> None:
    task = tiny_task()
    labels = task.private_labels("dev")
    ids = [i.id for i in task.items("dev")]
    answers = {ids[0]: labels[ids[0]], ids[1]: f"The answer is {labels[ids[1]]}.", ids[2]: 0}
    result = task.score("dev", answers)
    assert result.score == 2 / 12
    assert result.n_answered == 3
    assert result.per_item[ids[0]] == 1.0 and result.per_item[ids[2]] == 0.0


def test_score_malformed_answers() -> None:
    task = tiny_task()
    labels = task.private_labels("dev")
    ids = [i.id for i in task.items("dev")]
    answers: dict[str, Any] = {
        ids[0]: "no idea",  # answered, unparsable -> wrong
        ids[1]: None,  # unanswered
        ids[2]: "   ",  # unanswered
        ids[3]: True,  # bools are not integers
        ids[4]: f"  {labels[ids[4]]}  ",  # right, with whitespace
        ids[5]: float(labels[ids[5]]),  # right, as a whole float
        ids[6]: {"sum": labels[ids[6]]},  # wrong type
        "not-an-id": labels[ids[7]],  # ignored, but counted
    }
    result = task.score("dev", answers)
    assert result.score == 2 / 12
    assert result.n_answered == 5
    assert result.per_item[ids[3]] == 0.0
    assert result.extra["n_unknown_ids"] == 1


def test_score_train_and_score_answer() -> None:
    task = tiny_task()
    examples = task.train_examples()
    result = task.score("train", {ex["id"]: ex["label"] for ex in examples[:6]})
    assert result.score == 6 / 24
    ex = examples[0]
    assert task.score_answer("train", ex["id"], f"= {ex['label']}") == 1.0
    assert task.score_answer("train", ex["id"], None) == 0.0
    with pytest.raises(TaskError, match="no item"):
        task.score_answer("train", "nope", 1)


def test_better_follows_direction() -> None:
    task = tiny_task()
    assert task.better(0.6, 0.5)
    assert not task.better(0.5, 0.5)
    assert not task.better(0.55, 0.5, margin=0.05)
    assert task.better(0.56, 0.5, margin=0.05)
    loss_task = Task.__new__(Task)
    loss_task.config = attrs.evolve(task.config, direction="minimize")
    assert loss_task.better(0.4, 0.5)
    assert not loss_task.better(0.5, 0.4)
    assert not loss_task.better(0.46, 0.5, margin=0.05)


def test_per_item_task_refuses_program_scoring(tmp_path: Path) -> None:
    with pytest.raises(TaskError, match="score\\(\\)"):
        tiny_task().score_program_output(tmp_path)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.sampled_from(["right", "right_text", "wrong", "none", "missing", "junk", "blank"]),
        min_size=12,
        max_size=12,
    )
)
def test_score_is_correct_over_all_items(kinds: list[str]) -> None:
    task = tiny_task()
    labels = task.private_labels("dev")
    answers: dict[str, Any] = {}
    for item, kind in zip(task.items("dev"), kinds, strict=True):
        label = labels[item.id]
        answers.update(
            {
                "right": {item.id: label},
                "right_text": {item.id: f"I think it is {label}"},
                "wrong": {item.id: label + 7},
                "none": {item.id: None},
                "missing": {},
                "junk": {item.id: "forty-two"},
                "blank": {item.id: ""},
            }[kind]
        )
    result = task.score("dev", answers)
    n_correct = sum(k in ("right", "right_text") for k in kinds)
    assert result.score == pytest.approx(n_correct / 12)
    assert result.n_answered == sum(k in ("right", "right_text", "wrong", "junk") for k in kinds)
    assert len(result.per_item) == 12


# --------------------------------------------------------------------------------------------
# normalisation
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "answer_type", "expected"),
    [
        ("  hello   big\n world ", "text", "hello big world"),
        (42, "text", "42"),
        ("The answer is 42.", "int", 42),
        ("-7 degrees", "int", -7),
        ("1,234 apples", "int", 1234),
        (42.0, "int", 42),
        (42.5, "int", None),
        (True, "int", None),
        ("none", "int", None),
        ("about 3.25 m", "float", 3.25),
        ("1e-3", "float", 0.001),
        (False, "float", None),
        (float("nan"), "float", None),
        ("The answer is (B).", "choice", "B"),
        ("c", "choice", "C"),
        ("maybe", "choice", None),
        ('{"b": 1, "a": [1, 2]}', "json", '{"a":[1,2],"b":1}'),
        ({"a": [1, 2], "b": 1}, "json", '{"a":[1,2],"b":1}'),
        (None, "int", None),
    ],
)
def test_normalize(answer: Any, answer_type: str, expected: Any) -> None:
    assert normalize(answer, answer_type) == expected


def test_normalize_rejects_unknown_type() -> None:
    with pytest.raises(ValueError, match="choose one of: text, int, float, choice, json"):
        normalize("x", "date")


def _task_with(tiny: Path, answer_type: str, labels: dict[str, Any]) -> Task:
    edit_toml(tiny, 'answer_type = "int"', f'answer_type = "{answer_type}"')
    for split in ("dev", "test"):
        path = tiny / f"data/private/{split}_labels.jsonl"
        write_jsonl(path, [{"id": r["id"], "label": labels[split]} for r in read_jsonl(path)])
    path = tiny / "data/public/train.jsonl"
    write_jsonl(path, [{**r, "label": labels["dev"]} for r in read_jsonl(path)])
    return load_task(tiny)


def test_exact_float_uses_tolerance(tiny: Path) -> None:
    task = _task_with(tiny, "float", {"dev": 0.1, "test": 0.1})
    ids = [i.id for i in task.items("dev")]
    result = task.score("dev", {ids[0]: 0.1 + 5e-7, ids[1]: "0.1000001", ids[2]: 0.1001})
    assert result.per_item[ids[0]] == 1.0
    assert result.per_item[ids[1]] == 1.0
    assert result.per_item[ids[2]] == 0.0


def test_exact_choice(tiny: Path) -> None:
    task = _task_with(tiny, "choice", {"dev": "B", "test": "A"})
    ids = [i.id for i in task.items("dev")]
    result = task.score("dev", {ids[0]: "(B)", ids[1]: "b", ids[2]: "A"})
    assert [result.per_item[i] for i in ids[:3]] == [1.0, 1.0, 0.0]


def test_numeric_scorer_tolerance(tiny: Path) -> None:
    edit_toml(tiny, 'scorer = "exact"', 'scorer = "numeric"\ntolerance = 0.5')
    task = load_task(tiny)
    label = task.private_labels("dev")
    ids = [i.id for i in task.items("dev")]
    result = task.score("dev", {ids[0]: label[ids[0]] + 0.4, ids[1]: label[ids[1]] + 0.6})
    assert result.per_item[ids[0]] == 1.0
    assert result.per_item[ids[1]] == 0.0


# --------------------------------------------------------------------------------------------
# custom scorers
# --------------------------------------------------------------------------------------------

PARTIAL_SCORER = """
def score_item(answer, label, item):
    if answer == "boom":
        raise RuntimeError("cannot score")
    if answer == "nan":
        return float("nan")
    return 0.5 if int(answer) == label + 1 else float(int(answer) == label)

def aggregate(per_item, answers, labels):
    return {"n_half": sum(1 for v in per_item.values() if v == 0.5)}
"""


def test_custom_scorer_and_aggregate(tiny: Path) -> None:
    (tiny / "scorer.py").write_text(PARTIAL_SCORER)
    edit_toml(tiny, 'scorer = "exact"', 'scorer = "scorer.py:score_item"')
    task = load_task(tiny)
    labels = task.private_labels("dev")
    ids = [i.id for i in task.items("dev")]
    answers = {ids[0]: labels[ids[0]], ids[1]: labels[ids[1]] + 1, ids[2]: "boom", ids[3]: "nan"}
    result = task.score("dev", answers)
    assert result.score == pytest.approx(1.5 / 12)  # the nan counts as wrong, not as nan
    assert result.extra["n_half"] == 1
    assert result.extra["scorer_errors"] == 2
    assert "cannot score" in result.extra["first_scorer_error"]
    assert result.per_item[ids[2]] == 0.0


LOSS_SCORER = """
def score_item(answer, label, item):
    return min(1.0, abs(float(answer) - label) / 100)
"""


def test_minimize_task_scores_missing_answers_worst(tiny: Path) -> None:
    (tiny / "loss.py").write_text(LOSS_SCORER)
    edit_toml(tiny, 'scorer = "exact"', 'scorer = "loss.py"')
    edit_toml(tiny, 'direction = "maximize"', 'direction = "minimize"')
    task = load_task(tiny)
    labels = task.private_labels("dev")
    assert task.score("dev", labels).score == 0.0
    assert task.score("dev", {}).score == 1.0
    ids = [i.id for i in task.items("dev")]
    result = task.score("dev", {i: labels[i] + 10 for i in ids})
    assert result.score == pytest.approx(0.1)
    assert task.better(0.1, 0.2) and not task.better(0.2, 0.1)


# --------------------------------------------------------------------------------------------
# validation: each problem names its file
# --------------------------------------------------------------------------------------------


def test_missing_task_md(tiny: Path) -> None:
    (tiny / "data/public/task.md").unlink()
    find(validate_task(tiny), "data/public/task.md", "missing")


def test_missing_reference_scaffold(tiny: Path) -> None:
    (tiny / "reference/reference_target_agent.py").unlink()
    find(validate_task(tiny), "reference/reference_target_agent.py", "missing")


def test_reference_scaffold_syntax_error(tiny: Path) -> None:
    (tiny / "reference/reference_target_agent.py").write_text("def solve(:\n")
    find(validate_task(tiny), "reference/reference_target_agent.py", "syntax error", "line 1")


def test_custom_scorer_missing(tiny: Path) -> None:
    edit_toml(tiny, 'scorer = "exact"', 'scorer = "scorer.py:score_item"')
    find(validate_task(tiny), "scorer.py", "missing")


def test_custom_scorer_without_function(tiny: Path) -> None:
    (tiny / "scorer.py").write_text("def other(a, b, c):\n    return 1.0\n")
    edit_toml(tiny, 'scorer = "exact"', 'scorer = "scorer.py:score_item"')
    find(validate_task(tiny), "scorer.py", "score_item")


def test_custom_scorer_syntax_error(tiny: Path) -> None:
    (tiny / "scorer.py").write_text("x = 1\ndef score_item(answer label):\n    pass\n")
    edit_toml(tiny, 'scorer = "exact"', 'scorer = "scorer.py"')
    find(validate_task(tiny), "scorer.py", "syntax error at line 2")


def test_custom_scorer_that_fails_to_import(tiny: Path) -> None:
    (tiny / "scorer.py").write_text("import no_such_module_here\n")
    edit_toml(tiny, 'scorer = "exact"', 'scorer = "scorer.py"')
    find(validate_task(tiny), "scorer.py", "ModuleNotFoundError")


def test_custom_scorer_under_public(tiny: Path) -> None:
    (tiny / "data/public/scorer.py").write_text(PARTIAL_SCORER)
    edit_toml(tiny, 'scorer = "exact"', 'scorer = "data/public/scorer.py"')
    find(validate_task(tiny), "data/public/scorer.py", "outside data/public")


@pytest.mark.parametrize(
    ("old", "new", "words"),
    [
        ('scorer = "exact"', 'scorer = "fuzzy"', ("unknown scorer 'fuzzy'", "exact, numeric")),
        (
            'answer_type = "int"',
            'answer_type = "number"',
            ("unknown answer_type 'number'", "text, int, float, choice, json"),
        ),
        (
            'direction = "maximize"',
            'direction = "up"',
            ("unknown direction 'up'", "maximize, minimize"),
        ),
        ("parallel = 2", 'parallel = "two"', ("parallel must be int",)),
        ('direction = "maximize"', 'direction = "minimize"', ("custom scorer",)),
    ],
)
def test_bad_config_values(tiny: Path, old: str, new: str, words: tuple[str, ...]) -> None:
    edit_toml(tiny, old, new)
    find(validate_task(tiny), "task.toml", *words)


def test_toml_syntax_error_names_line(tiny: Path) -> None:
    edit_toml(tiny, 'metric = "accuracy"', 'metric = "accuracy')
    problem = find(validate_task(tiny), "task.toml", "not valid TOML", "line 4")
    assert str(problem).startswith("task.toml: ")


def test_split_file_missing(tiny: Path) -> None:
    (tiny / "data/public/test.jsonl").unlink()
    find(validate_task(tiny), "data/public/test.jsonl", "split file missing")


def test_malformed_jsonl_line(tiny: Path) -> None:
    path = tiny / "data/public/dev.jsonl"
    lines = path.read_text().splitlines()
    lines[2] = '{"id": "dev-03", "input": '
    path.write_text("\n".join(lines) + "\n")
    problems = validate_task(tiny)
    find(problems, "data/public/dev.jsonl", "line 3", "not valid JSON")
    # the broken row is dropped, so its label no longer has an item; nothing else is reported
    assert len(problems) == 1


def test_jsonl_row_without_id(tiny: Path) -> None:
    path = tiny / "data/public/dev.jsonl"
    rows = read_jsonl(path)
    del rows[4]["id"]
    write_jsonl(path, rows)
    find(validate_task(tiny), "data/public/dev.jsonl", "line 5", "'id'")


def test_csv_split_without_id_column(tiny: Path) -> None:
    rows = read_jsonl(tiny / "data/public/dev.jsonl")
    csv_text = "key,input\n" + "".join(f'{r["id"]},"{r["input"]}"\n' for r in rows)
    (tiny / "data/public/dev.jsonl").unlink()
    (tiny / "data/public/dev.csv").write_text(csv_text)
    edit_toml(tiny, 'dev = "data/public/dev.jsonl"', 'dev = "data/public/dev.csv"')
    find(validate_task(tiny), "data/public/dev.csv", "no 'id' column", "key, input")


def test_duplicate_ids_within_a_split(tiny: Path) -> None:
    path = tiny / "data/public/dev.jsonl"
    rows = read_jsonl(path)
    rows[5]["id"] = rows[4]["id"]
    write_jsonl(path, rows)
    find(validate_task(tiny), "data/public/dev.jsonl", "1 duplicate ids", rows[4]["id"])


def test_ids_shared_between_splits(tiny: Path) -> None:
    for name in ("data/public/test.jsonl", "data/private/test_labels.jsonl"):
        rows = read_jsonl(tiny / name)
        rows[0]["id"], rows[1]["id"] = "dev-01", "dev-02"
        write_jsonl(tiny / name, rows)
    find(validate_task(tiny), "data/public/test.jsonl", "2 ids also in dev", "dev-01, dev-02")


def test_inputs_shared_with_train(tiny: Path) -> None:
    train = read_jsonl(tiny / "data/public/train.jsonl")
    path = tiny / "data/public/dev.jsonl"
    rows = read_jsonl(path)
    rows[0]["input"] = train[3]["input"]
    rows[1]["input"] = train[4]["input"] + "  "  # whitespace does not hide a copy
    write_jsonl(path, rows)
    problem = find(validate_task(tiny), "data/public/dev.jsonl", "2 items", "identical", "train")
    assert "dev-01, dev-02" in problem.message
    edit_toml(tiny, 'scorer = "exact"', 'scorer = "exact"\nallow_shared_inputs = true')
    assert validate_task(tiny) == []
    assert any("identical" in note for note in load_task(tiny).notes)


def test_eval_item_without_label(tiny: Path) -> None:
    path = tiny / "data/private/dev_labels.jsonl"
    rows = read_jsonl(path)
    write_jsonl(path, rows[1:])
    find(
        validate_task(tiny), "data/private/dev_labels.jsonl", "1 dev items have no label", "dev-01"
    )


def test_public_eval_file_with_label_field(tiny: Path) -> None:
    path = tiny / "data/public/test.jsonl"
    rows = read_jsonl(path)
    rows[2]["label"] = 5
    write_jsonl(path, rows)
    find(validate_task(tiny), "data/public/test.jsonl", "carries a 'label' field", "line 3")


def test_labels_file_under_public(tiny: Path) -> None:
    shutil.copy(tiny / "data/private/test_labels.jsonl", tiny / "data/public/test_labels.jsonl")
    find(validate_task(tiny), "data/public/test_labels.jsonl", "labels file")


def test_private_folder_under_public(tiny: Path) -> None:
    (tiny / "data/public/private").mkdir()
    (tiny / "data/public/private/notes.txt").write_text("secret\n")
    find(validate_task(tiny), "data/public/private/notes.txt", "'private' folder")


def test_private_lines_copied_into_public(tiny: Path) -> None:
    line = (tiny / "data/private/dev_labels.jsonl").read_text().splitlines()[3]
    (tiny / "data/public/hints.txt").write_text(f"useful:\n{line}\n")
    find(validate_task(tiny), "data/public/hints.txt", "line 2", "dev_labels.jsonl")
    shutil.copy(tiny / "data/private/dev_labels.jsonl", tiny / "data/public/answers.jsonl")
    find(validate_task(tiny), "data/public/answers.jsonl", "copy of the private")


def test_labels_path_declared_under_public(tiny: Path) -> None:
    shutil.move(tiny / "data/private/dev_labels.jsonl", tiny / "data/public/dev_answers.jsonl")
    edit_toml(
        tiny, 'dev = "data/private/dev_labels.jsonl"', 'dev = "data/public/dev_answers.jsonl"'
    )
    find(validate_task(tiny), "data/public/dev_answers.jsonl", "under data/public")


def test_private_dir_missing(tiny: Path) -> None:
    shutil.rmtree(tiny / "data/private")
    problems = validate_task(tiny)
    find(problems, "data/private", "missing", "data/private/dev_labels.jsonl")
    find(problems, "data/private/test_labels.jsonl", "missing")


def test_invalid_label_values(tiny: Path) -> None:
    path = tiny / "data/private/test_labels.jsonl"
    rows = read_jsonl(path)
    rows[0]["label"] = "seventeen"
    write_jsonl(path, rows)
    find(validate_task(tiny), "data/private/test_labels.jsonl", "not valid int", "test-01")


def test_every_problem_is_reported_and_load_raises(tiny: Path) -> None:
    (tiny / "data/public/task.md").unlink()
    (tiny / "reference/reference_target_agent.py").unlink()
    edit_toml(tiny, 'answer_type = "int"', 'answer_type = "integer"')
    (tiny / "data/public/test.jsonl").unlink()
    problems = validate_task(tiny)
    files = {p.file for p in problems}
    assert {
        "data/public/task.md",
        "reference/reference_target_agent.py",
        "task.toml",
        "data/public/test.jsonl",
    } <= files
    with pytest.raises(TaskError) as err:
        load_task(tiny)
    assert err.value.problems == [str(p) for p in problems]
    assert "tiny-add" in str(err.value)


def test_missing_directory() -> None:
    problems = validate_task("/no/such/task/dir")
    assert problems and problems[0].file == "." and "not found" in problems[0].message
    with pytest.raises(TaskError):
        load_task("/no/such/task/dir")


def test_unknown_toml_key_is_noted(tiny: Path) -> None:
    edit_toml(tiny, 'metric = "accuracy"', 'metric = "accuracy"\nmetrik = "f1"')
    assert validate_task(tiny) == []
    assert any("'metrik'" in note for note in load_task(tiny).notes)


# --------------------------------------------------------------------------------------------
# CSV splits with several input fields
# --------------------------------------------------------------------------------------------


def test_csv_task_with_several_input_fields(tiny: Path) -> None:
    (tiny / "data/public/train.csv").write_text("pid,a,b,y\nt1,1,2,3\nt2,2,2,4\nt3,5,1,6\n")
    (tiny / "data/public/dev.csv").write_text("pid,a,b\nd1,3,3\nd2,4,1\n")
    (tiny / "data/public/test.csv").write_text("pid,a,b\ns1,7,1\n")
    (tiny / "data/private/dev_labels.csv").write_text("pid,y\nd1,6\nd2,5\n")
    (tiny / "data/private/test_labels.csv").write_text("pid,y\ns1,8\n")
    for split in ("train", "dev", "test"):
        (tiny / f"data/public/{split}.jsonl").unlink()
    for split in ("dev", "test"):
        (tiny / f"data/private/{split}_labels.jsonl").unlink()
    toml = (tiny / "task.toml").read_text().split("[splits]")[0]
    (tiny / "task.toml").write_text(
        toml + '[fields]\nid = "pid"\ninput = ["a", "b"]\nlabel = "y"\n'
    )
    task = load_task(tiny)
    assert task.config.splits["dev"] == "data/public/dev.csv"
    assert task.config.labels["test"] == "data/private/test_labels.csv"
    assert task.items("dev")[0] == Item(id="d1", input={"a": "3", "b": "3"}, split="dev")
    assert task.train_examples()[2] == {"id": "t3", "input": {"a": "5", "b": "1"}, "label": "6"}
    assert task.score("dev", {"d1": "6", "d2": 4}).score == 0.5


# --------------------------------------------------------------------------------------------
# carving dev from train
# --------------------------------------------------------------------------------------------


def _drop_dev(tiny: Path, extra_toml: str = "") -> None:
    (tiny / "data/public/dev.jsonl").unlink()
    (tiny / "data/private/dev_labels.jsonl").unlink()
    edit_toml(tiny, 'dev = "data/public/dev.jsonl"\n', "")
    edit_toml(tiny, 'dev = "data/private/dev_labels.jsonl"\n', "")
    if extra_toml:
        path = tiny / "task.toml"
        path.write_text(path.read_text() + extra_toml)


def test_dev_from_train_is_deterministic_and_disjoint(tiny: Path) -> None:
    train_ids = {r["id"] for r in read_jsonl(tiny / "data/public/train.jsonl")}
    _drop_dev(tiny, "\n[dev_from_train]\nfraction = 0.25\nseed = 3\nstratify = false\n")
    assert validate_task(tiny) == []
    first, second = load_task(tiny), load_task(tiny)
    dev = [i.id for i in first.items("dev")]
    train = [i.id for i in first.items("train")]
    assert len(dev) == 6 and len(train) == 18
    assert dev == [i.id for i in second.items("dev")]
    assert not set(dev) & set(train)
    assert set(dev) | set(train) == train_ids
    assert any("carved 25% of train" in n and "seed 3" in n for n in first.notes)
    # dev labels come from train and score like any other split
    assert first.score("dev", first.private_labels("dev")).score == 1.0
    assert not set(first.private_labels("dev")) & {e["id"] for e in first.train_examples()}


def test_dev_carved_by_default_when_none_declared(tiny: Path) -> None:
    _drop_dev(tiny)
    task = load_task(tiny)
    assert task.config.dev_from_train is not None
    assert len(task.items("dev")) == 2  # 10% of 24, rounded
    assert any("no dev split declared: carved 10% of train" in n for n in task.notes)


def test_carve_dev_stratifies_and_seeds() -> None:
    rows = [_Row(id=f"r{i:03d}", input=i, label="A" if i < 30 else "B") for i in range(40)]
    train, dev = carve_dev(rows, 0.25, seed=0, stratify=True)
    assert len(dev) == 10 and len(train) == 30
    n_b = sum(r.label == "B" for r in dev)
    assert n_b in (2, 3)  # 2.5 expected
    assert carve_dev(rows, 0.25, seed=0, stratify=True) == (train, dev)
    assert {r.id for r in carve_dev(rows, 0.25, seed=1, stratify=True)[1]} != {r.id for r in dev}
    # one item per label: stratification still yields the requested size
    unique = [_Row(id=f"u{i}", input=i, label=i) for i in range(20)]
    assert len(carve_dev(unique, 0.1, seed=0, stratify=True)[1]) == 2


SPLIT_SCRIPT = """
import json
import math
from sia_core.services.taskdir import carve_dev, program_split_of
from sia_core.services.taskdir.records import _Row
rows = [_Row(id=f"r{i}", input=i, label=i % 3) for i in range(50)]
print(json.dumps({
    "carve": [r.id for r in carve_dev(rows, 0.2, 7, True)[1]],
    "program": [program_split_of(f"q{i}") for i in range(50)],
}))
"""


def test_splits_are_stable_across_processes() -> None:
    outputs = []
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        proc = subprocess.run(
            [sys.executable, "-c", SPLIT_SCRIPT],
            capture_output=True,
            text=True,
            env=env,
            check=True,
        )
        outputs.append(json.loads(proc.stdout))
    assert outputs[0] == outputs[1]
    assert len(outputs[0]["carve"]) == 10


# --------------------------------------------------------------------------------------------
# SIA-style folders (no task.toml, whole-run evaluate.py)
# --------------------------------------------------------------------------------------------

EVALUATE_WITH_ITEMS = """
import argparse, csv, json
from pathlib import Path

parser = argparse.ArgumentParser()
parser.add_argument("--gen-dir", required=True)
gen = Path(parser.parse_args().gen_dir)
truth_file = Path(__file__).resolve().parents[1] / "private" / "answers.csv"
truth = {r["id"]: r["label"] for r in csv.DictReader(truth_file.open())}
sub_file = gen / "submission.csv"
got = {r["id"]: r["label"] for r in csv.DictReader(sub_file.open())} if sub_file.exists() else {}
items = []
for i, want in truth.items():
    status = "missing" if i not in got else ("correct" if got[i] == want else "wrong")
    items.append({"id": i, "status": status})
correct = sum(it["status"] == "correct" for it in items)
results = {"accuracy": correct / len(truth), "n": len(truth)}
if WITH_ITEMS:
    results["items"] = items
(gen / "results.json").write_text(json.dumps(results))
"""


def make_sia_folder(root: Path, n: int = 20, with_items: bool = True) -> dict[str, str]:
    (root / "data/public").mkdir(parents=True)
    (root / "data/private").mkdir(parents=True)
    (root / "reference").mkdir()
    (root / "data/public/task.md").write_text("# Copy\nWrite submission.csv (id,label).\n")
    truth = {f"q{i:02d}": "yes" if i % 3 else "no" for i in range(n)}
    (root / "data/public/test.csv").write_text("id,text\n" + "".join(f"{i},x\n" for i in truth))
    (root / "data/private/answers.csv").write_text(
        "id,label\n" + "".join(f"{i},{v}\n" for i, v in truth.items())
    )
    (root / "data/public/evaluate.py").write_text(
        EVALUATE_WITH_ITEMS.replace("WITH_ITEMS", str(with_items))
    )
    (root / "reference/reference_target_agent.py").write_text(
        "import argparse\nparser = argparse.ArgumentParser()\n"
    )
    (root / "reference/SAMPLE_TASK_DESCRIPTIONS.md").write_text("- another copy task\n")
    return truth


def write_submission(gen: Path, answers: dict[str, str]) -> None:
    gen.mkdir(parents=True, exist_ok=True)
    body = "".join(f"{i},{v}\n" for i, v in answers.items())
    (gen / "submission.csv").write_text("id,label\n" + body)


def test_sia_folder_loads_without_task_toml(tmp_path: Path) -> None:
    make_sia_folder(tmp_path / "copy-task")
    assert validate_task(tmp_path / "copy-task") == []
    task = load_task(tmp_path / "copy-task")
    assert task.name == "copy-task"
    assert task.config.kind == "program"
    assert task.config.direction == "maximize"
    assert task.config.evaluate == "data/public/evaluate.py"
    assert task.items("dev") == [] and task.splits == ()
    assert any("no task.toml" in n for n in task.notes)
    assert any("items[]" in n for n in task.notes)
    with pytest.raises(TaskError, match="score_program_output"):
        task.score("dev", {})


def test_sia_folder_scores_split_by_item(tmp_path: Path) -> None:
    truth = make_sia_folder(tmp_path / "copy-task")
    task = load_task(tmp_path / "copy-task")
    ids = sorted(truth)
    answers = {i: truth[i] for i in ids[:10]}
    answers.update({i: "maybe" for i in ids[10:15]})  # wrong; ids[15:] missing
    write_submission(tmp_path / "gen_1", answers)
    scores = task.score_program_output(tmp_path / "gen_1")
    dev, test = scores["dev"], scores["test"]
    assert set(dev.per_item).isdisjoint(test.per_item)
    assert set(dev.per_item) | set(test.per_item) == set(ids)
    assert dev.n_items > 0 and test.n_items > 0
    assert test.extra["overall"] == 0.5
    assert "overall" not in dev.extra  # the whole-run metric includes test items
    for result in (dev, test):
        assert result.extra["metric"] == "accuracy"
        expected = sum(1 for i in result.per_item if i in ids[:10]) / result.n_items
        assert result.score == pytest.approx(expected)
        assert result.n_answered == sum(1 for i in result.per_item if i in answers)
        assert all(program_split_of(i) == result.split for i in result.per_item)
    # deterministic, and an id keeps its split when other ids are absent from a later run
    again = task.score_program_output(tmp_path / "gen_1")
    assert again["dev"].per_item == dev.per_item
    assert set(dev.per_item) == {
        "q00",
        "q03",
        "q06",
        "q07",
        "q08",
        "q11",
        "q13",
        "q15",
        "q16",
        "q17",
        "q19",
    }


def test_sia_folder_without_items_gives_same_score_and_a_note(tmp_path: Path) -> None:
    truth = make_sia_folder(tmp_path / "copy-task", with_items=False)
    task = load_task(tmp_path / "copy-task")
    write_submission(tmp_path / "gen_1", {i: v for i, v in list(truth.items())[:5]})
    scores = task.score_program_output(tmp_path / "gen_1")
    assert scores["dev"].score == scores["test"].score == 0.25
    assert "same items" in scores["dev"].extra["note"]
    assert any("dev score == test score" in n for n in task.notes)


def test_sia_folder_without_evaluate(tmp_path: Path) -> None:
    make_sia_folder(tmp_path / "copy-task")
    (tmp_path / "copy-task/data/public/evaluate.py").unlink()
    find(validate_task(tmp_path / "copy-task"), "data/public/evaluate.py", "missing")


def test_evaluate_in_task_root_is_found(tmp_path: Path) -> None:
    root = tmp_path / "copy-task"
    make_sia_folder(root)
    text = (root / "data/public/evaluate.py").read_text()
    (root / "data/public/evaluate.py").unlink()
    (root / "evaluate.py").write_text(text.replace("parents[1] / ", "parent / 'data' / "))
    task = load_task(root)
    assert task.config.evaluate == "evaluate.py"
    write_submission(tmp_path / "gen", {})
    assert task.score_program_output(tmp_path / "gen")["dev"].score == 0.0


def test_program_failure_scores_zero_and_ignores_planted_results(tmp_path: Path) -> None:
    root = tmp_path / "copy-task"
    make_sia_folder(root)
    (root / "data/public/evaluate.py").write_text("import sys\nsys.exit('no submission')\n")
    task = load_task(root)
    gen = tmp_path / "gen_1"
    gen.mkdir()
    (gen / "results.json").write_text('{"accuracy": 1.0}')  # written by a cheating scaffold
    scores = task.score_program_output(gen)
    for split in ("dev", "test"):
        assert scores[split].score == 0.0
        assert "exited with status 1" in scores[split].extra["error"]
        assert "no submission" in scores[split].extra["error"]
    # never taken to the scorer's folder, and the scaffold's folder is not touched
    assert (gen / "results.json").read_text() == '{"accuracy": 1.0}'


def test_program_bad_results_json(tmp_path: Path) -> None:
    root = tmp_path / "copy-task"
    make_sia_folder(root)
    (root / "data/public/evaluate.py").write_text(
        "import sys, pathlib\npathlib.Path(sys.argv[2], 'results.json').write_text('{oops')\n"
    )
    scores = load_task(root).score_program_output(tmp_path)
    assert scores["test"].score == 0.0
    assert "not valid JSON" in scores["test"].extra["error"]


def test_program_timeout(tmp_path: Path) -> None:
    root = tmp_path / "copy-task"
    make_sia_folder(root)
    (root / "data/public/evaluate.py").write_text("import time\ntime.sleep(30)\n")
    (root / "task.toml").write_text('kind = "program"\n[limits]\neval_timeout_s = 0.5\n')
    task = load_task(root)
    assert task.config.from_toml
    scores = task.score_program_output(tmp_path)
    assert scores["dev"].score == 0.0
    assert "ran past 0.5 s" in scores["dev"].extra["error"]


def test_program_metric_picks_first_numeric_key(tmp_path: Path) -> None:
    root = tmp_path / "copy-task"
    make_sia_folder(root)
    (root / "data/public/evaluate.py").write_text(
        "import sys, pathlib, json\n"
        "out = {'name': 'x', 'ok': True, 'f1': 0.75, 'loss': 2.0}\n"
        "pathlib.Path(sys.argv[2], 'results.json').write_text(json.dumps(out))\n"
    )
    scores = load_task(root).score_program_output(tmp_path)
    assert scores["dev"].score == scores["test"].score == 0.75
    assert scores["dev"].extra["metric"] == "f1"


# --------------------------------------------------------------------------------------------
# the conformance suite, applied to the bundled task
# --------------------------------------------------------------------------------------------


class TestTinyTaskConformance(TaskConformance):
    @pytest.fixture
    def task_dir(self) -> Path:
        return TINY_TASK_DIR


def test_conformance_catches_a_leaky_task(tiny: Path) -> None:
    shutil.copy(tiny / "data/private/test_labels.jsonl", tiny / "data/public/test_labels.jsonl")
    suite = TaskConformance()
    with pytest.raises(AssertionError, match="labels file"):
        suite.test_validates_without_problems(tiny)


def test_reference_scaffold_answers_through_ctx() -> None:
    """The bundled scaffold sends the question to ctx.llm and parses the first integer."""
    namespace: dict[str, Any] = {}
    source = (TINY_TASK_DIR / "reference/reference_target_agent.py").read_text()
    exec(compile(source, "reference_target_agent.py", "exec"), namespace)
    assert namespace["PARAMS"] == {
        "temperature": 0.0,
        "max_tokens": 16,
        "instruction": "Answer with the number only.",
    }
    calls: list[tuple[Any, dict[str, Any]]] = []

    class Ctx:
        params: ClassVar[dict[str, Any]] = {"temperature": 0.3}

        def llm(self, messages: Any, **kwargs: Any) -> str:
            calls.append((messages, kwargs))
            return "The sum is 42."

    item = Item(id="dev-01", input="What is 17 + 25?")
    assert namespace["solve"](item, Ctx()) == 42
    messages, kwargs = calls[0]
    assert messages[-1]["content"] == "What is 17 + 25?"
    assert messages[0]["content"] == "Answer with the number only."
    assert kwargs == {"temperature": 0.3, "max_tokens": 16}
    assert namespace["parse_answer"]("no digits") is None


def test_program_task_with_declared_train(tmp_path: Path) -> None:
    root = tmp_path / "copy-task"
    make_sia_folder(root)
    (root / "data/public/train.jsonl").write_text('{"id": "t1", "input": "x", "label": "yes"}\n')
    (root / "task.toml").write_text(
        'kind = "program"\n[splits]\ntrain = "data/public/train.jsonl"\n'
    )
    task = load_task(root)
    assert task.config.kind == "program"
    assert task.config.evaluate == "data/public/evaluate.py"
    assert task.train_examples() == [{"id": "t1", "input": "x", "label": "yes"}]
    assert task.items("dev") == []


def test_redact_replaces_private_label_values_with_a_note(tmp_path: Path) -> None:
    root = tmp_path / "copy-task"
    make_sia_folder(root)
    (root / "data/private/answers.csv").write_text("id,label\nq00,SECRET-ALPHA\nq01,xy\n")
    task = load_task(root)
    text = "Traceback ...\nKeyError: 'SECRET-ALPHA'\nq01,xy\nnothing private here"
    out = task.redact(text)
    assert "SECRET-ALPHA" not in out and "[redacted]" in out
    assert "private label value(s) redacted" in out
    assert "nothing private here" in out
    assert task.redact("all clear") == "all clear"  # untouched, no note


def test_canary_option_is_read_and_checked(tiny: Path) -> None:
    toml = tiny / "task.toml"
    base = toml.read_text()
    toml.write_text(base + '\n[canary]\nn = 12\nlabels = ["1", "2", "3"]\n')
    spec = load_task(tiny).config.canary
    assert spec is not None
    assert (spec.n, spec.labels, spec.alpha, spec.inputs) == (12, ("1", "2", "3"), 0.001, "dev")
    assert load_task(tiny).canary_hit("The answer is 2.", "2", Item(id="x", input="", split="dev"))

    toml.write_text(base + '\n[canary]\nn = 0\nlabels = ["A", "A"]\nalpha = 0.9\ninputs = "test"\n')
    messages = [p.message for p in validate_task(tiny)]
    for wrong in ("n must be 1..10000", "labels must be 2 or more", "alpha must be", "inputs must"):
        assert any(m.startswith("[canary] " + wrong) for m in messages), (wrong, messages)

    toml.write_text(
        base.replace('direction = "maximize"', 'direction = "minimize"') + "[canary]\n"
        'labels = ["1", "2"]\n'
    )
    assert any("needs direction" in p.message for p in validate_task(tiny))


def test_program_results_with_non_finite_numbers(tmp_path: Path) -> None:
    root = tmp_path / "copy-task"
    make_sia_folder(root)
    evaluate = root / "data/public/evaluate.py"
    evaluate.write_text(
        "import sys, pathlib, json\n"
        "out = {'accuracy': float('inf')}\n"
        "pathlib.Path(sys.argv[2], 'results.json').write_text(json.dumps(out))\n"
    )
    scores = load_task(root).score_program_output(tmp_path)
    assert scores["dev"].score == 0.0 and "not a finite number" in scores["dev"].extra["error"]
    evaluate.write_text(
        "import sys, pathlib, json\n"
        "items = [{'id': f'q{i:02d}', 'score': float('nan') if i % 2 else 1e308} for i in range(40)]\n"
        "pathlib.Path(sys.argv[2], 'results.json').write_text(json.dumps({'items': items}))\n"
    )
    scores = load_task(root).score_program_output(tmp_path)
    for split in ("dev", "test"):
        assert math.isfinite(scores[split].score)
        nan_ids = [i for i in scores[split].per_item if int(i[1:]) % 2]
        assert nan_ids and all(scores[split].per_item[i] == 0.0 for i in nan_ids)
