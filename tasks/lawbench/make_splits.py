"""Regenerate the lawbench task's split files from the shared source data.

    python tasks/lawbench/make_splits.py [--source /work/shared/data/lawbench]

train = the source ``train.csv`` minus a dev slice of exactly one row per class (191 rows), drawn
with ``random.Random(0)``; test = the source ``test.csv`` (913 rows, the split the SIA paper
reports on) with ``test_labels.csv`` as its private labels. Ids get a split prefix
(``train-<n>``, ``test-<n>``, ``<n>`` being the source id) because the source's train and test
ids overlap. A dev row is drawn only from rows whose text occurs once in train and never in test,
so the dev split shares no input with the other splits. The output is deterministic: running
the script again rewrites byte-identical files.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import re
import shutil
from collections import Counter
from pathlib import Path

SEED = 0
HERE = Path(__file__).resolve().parent
TASK = HERE / "src" / "sia_task_lawbench" / "task"
DEFAULT_SOURCE = Path("/work/shared/data/lawbench")
_WS = re.compile(r"\s+")


def _norm(text: str) -> str:
    return _WS.sub(" ", text).strip()


def _read(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def _write(path: Path, header: list[str], rows: list[list[str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def pick_dev(train: list[dict[str, str]], test_texts: set[str], seed: int = SEED) -> set[str]:
    """Source ids of the dev slice: one row per class, seeded, from rows with a unique text."""
    counts = Counter(_norm(r["text"]) for r in train)
    by_class: dict[str, list[str]] = {}
    for row in train:
        text = _norm(row["text"])
        if counts[text] == 1 and text not in test_texts:
            by_class.setdefault(row["label"], []).append(row["id"])
    classes = sorted({r["label"] for r in train})
    missing = [c for c in classes if c not in by_class]
    if missing:
        raise SystemExit(f"no row with a unique text for classes: {missing}")
    rng = random.Random(seed)
    return {rng.choice(sorted(by_class[c], key=int)) for c in classes}


def make_splits(source: Path, task: Path = TASK) -> dict[str, int]:
    """Write the split files into ``task``; the number of rows of each split."""
    train = _read(source / "train.csv")
    test = _read(source / "test.csv")
    test_labels = {r["id"]: r["label"] for r in _read(source / "test_labels.csv")}
    classes = json.loads((source / "classes.json").read_text(encoding="utf-8"))
    if sorted(classes) != sorted({r["label"] for r in train}):
        raise SystemExit("classes.json and the train labels disagree")
    dev_ids = pick_dev(train, {_norm(r["text"]) for r in test})

    public, private = task / "data" / "public", task / "data" / "private"
    train_rows = [
        [f"train-{r['id']}", r["text"], r["label"]] for r in train if r["id"] not in dev_ids
    ]
    dev = [r for r in train if r["id"] in dev_ids]
    _write(public / "train.csv", ["id", "text", "label"], train_rows)
    _write(public / "dev.csv", ["id", "text"], [[f"train-{r['id']}", r["text"]] for r in dev])
    _write(
        private / "dev_labels.csv", ["id", "label"], [[f"train-{r['id']}", r["label"]] for r in dev]
    )
    _write(public / "test.csv", ["id", "text"], [[f"test-{r['id']}", r["text"]] for r in test])
    _write(
        private / "test_labels.csv",
        ["id", "label"],
        [[f"test-{r['id']}", test_labels[r["id"]]] for r in test],
    )
    shutil.copyfile(source / "classes.json", public / "classes.json")
    return {"train": len(train_rows), "dev": len(dev), "test": len(test)}


def main() -> None:
    """Command line: regenerate the files and print the split sizes."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE)
    args = parser.parse_args()
    sizes = make_splits(args.source)
    print(", ".join(f"{k} {v}" for k, v in sizes.items()))


if __name__ == "__main__":
    main()
