"""The leak scan refuses a public file that pairs item ids with their private labels, and passes
what only looks alike: a sample submission, a predictive feature, a shared header."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

from sia_core.services.taskdir.leak_scan import scan_public_for_labels

CLASSES = ("theft", "fraud", "bribery", "arson")


def task(tmp_path: Path, n: int = 60, classes: tuple[str, ...] = CLASSES) -> dict[str, str]:
    """A folder with private ``test.csv`` (id,label) and public ``test.csv`` (id,text)."""
    rng = random.Random(7)
    labels = {str(i): rng.choice(classes) for i in range(n)}
    (tmp_path / "data/public").mkdir(parents=True)
    (tmp_path / "data/private").mkdir(parents=True)
    write_csv(tmp_path / "data/private/test.csv", ["id", "label"], list(labels.items()))
    rows = [(i, f"case {i}: what happened") for i in labels]
    write_csv(tmp_path / "data/public/test.csv", ["id", "text"], rows)
    return labels


def write_csv(path: Path, header: list[str], rows: list[tuple[str, ...]]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


def messages(root: Path) -> list[str]:
    return [f"{p.file}: {p.message}" for p in scan_public_for_labels(root)]


def test_a_clean_task_and_a_one_class_sample_submission_pass(tmp_path: Path) -> None:
    labels = task(tmp_path)
    sample = [(i, "theft") for i in labels]  # right wherever the truth is theft: chance
    write_csv(tmp_path / "data/public/sample_submission.csv", ["id", "label"], sample)
    assert sum(v == "theft" for v in labels.values()) >= 10  # many coincidental lines
    assert messages(tmp_path) == []


def test_labels_copied_under_another_name_in_another_order_are_refused(tmp_path: Path) -> None:
    labels = task(tmp_path)
    rows = sorted(labels.items(), key=lambda kv: kv[1])
    write_csv(tmp_path / "data/public/extra.csv", ["case", "answer"], rows)
    (found,) = messages(tmp_path)
    line = 2 + [i for i, _ in rows].index("0")
    assert found.startswith("data/public/extra.csv: pairs 60 of 60 item ids with their private")
    assert "`label` from data/private/test.csv" in found and f"e.g. line {line}:" in found


def test_a_label_column_added_to_the_public_items_is_refused(tmp_path: Path) -> None:
    labels = task(tmp_path)
    rows = [(i, f"case {i}", label) for i, label in labels.items()]
    write_csv(tmp_path / "data/public/test.csv", ["id", "text", "hint"], rows)
    (found,) = messages(tmp_path)
    assert found.startswith("data/public/test.csv: pairs 60 of 60")


def test_a_feature_that_predicts_the_label_is_not_a_leak(tmp_path: Path) -> None:
    labels = task(tmp_path, classes=("True", "False"))
    rng = random.Random(3)
    rows = [
        (i, f"case {i}", label if rng.random() < 0.8 else ("True" if label == "False" else "False"))
        for i, label in labels.items()
    ]
    write_csv(tmp_path / "data/public/test.csv", ["id", "text", "cryo_sleep"], rows)
    assert messages(tmp_path) == []


def test_json_answers_by_id_and_tiny_tasks(tmp_path: Path) -> None:
    (tmp_path / "data/public").mkdir(parents=True)
    (tmp_path / "data/private").mkdir(parents=True)
    answers = {"q1": ["e4", "e5"], "q2": ["d4"], "q3": ["c4", "c5"]}
    (tmp_path / "data/private/answers.json").write_text(json.dumps(answers))
    questions = [{"question_id": q, "prompt": f"position {q}"} for q in answers]
    (tmp_path / "data/public/questions.json").write_text(json.dumps(questions, indent=1))
    assert messages(tmp_path) == []
    leaked = [{**q, "best": answers[q["question_id"]]} for q in questions]
    (tmp_path / "data/public/questions.json").write_text(json.dumps(leaked, indent=1))
    (found,) = messages(tmp_path)
    assert "pairs 3 of 3 item ids with their private `value` from data/private/answers.json" in (
        found
    )


def test_a_private_row_pasted_into_a_text_file_is_refused_but_a_header_is_not(
    tmp_path: Path,
) -> None:
    labels = task(tmp_path)
    (tmp_path / "data/public/task.md").write_text("# Task\n\nColumns:\n\nid,label\n")
    assert messages(tmp_path) == []
    row = f"12,{labels['12']}"  # a line of 8 characters or more
    (tmp_path / "data/public/task.md").write_text(f"# Task\n\nFor example:\n\n{row}\n")
    assert messages(tmp_path) == [
        "data/public/task.md: line 5 is a line of the private data/private/test.csv"
    ]
