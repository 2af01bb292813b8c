"""Regenerate the spaceship-titanic task's split files from the shared source data.

    python tasks/spaceship-titanic/make_splits.py [--source /work/shared/data/spaceship-titanic]

The source is Kaggle's train.csv split as MLE-bench does it: ``train.csv`` (7,823 rows) and
``test.csv`` (870 rows) with ``test_labels.csv``. Here train = the source ``train.csv`` minus a
dev slice of 10% (782 rows) stratified on ``Transported`` (largest-remainder quotas, then a
``random.Random(0)`` shuffle of the sorted ids of each class); test = the source ``test.csv``.

Rows are written as JSON lines with typed values: booleans for ``CryoSleep``/``VIP``/
``Transported``, floats for ``Age`` and the five spending columns, strings for the rest, and
``null`` where the source cell is empty. Deterministic: a rerun writes byte-identical files.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
from pathlib import Path
from typing import Any

SEED = 0
DEV_FRACTION = 0.1
HERE = Path(__file__).resolve().parent
TASK = HERE / "src" / "sia_task_spaceship_titanic" / "task"
DEFAULT_SOURCE = Path("/work/shared/data/spaceship-titanic")
ID = "PassengerId"
TARGET = "Transported"
BOOLS = ("CryoSleep", "VIP", TARGET)
FLOATS = ("Age", "RoomService", "FoodCourt", "ShoppingMall", "Spa", "VRDeck")
COLUMNS = (
    ID,
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
)


def typed(column: str, cell: str) -> Any:
    """A CSV cell as its JSON value (``None`` for an empty cell)."""
    if cell == "":
        return None
    if column in BOOLS:
        if cell not in ("True", "False"):
            raise ValueError(f"{column}: not a boolean: {cell!r}")
        return cell == "True"
    if column in FLOATS:
        return float(cell)
    return cell


def _read(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8", newline="") as f:
        return [{k: typed(k, v) for k, v in row.items()} for row in csv.DictReader(f)]


def _write(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="\n") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def pick_dev(
    rows: list[dict[str, Any]], fraction: float = DEV_FRACTION, seed: int = SEED
) -> set[str]:
    """Ids of a dev slice of ``round(fraction * n)`` rows, stratified on the target."""
    groups: dict[bool, list[str]] = {}
    for row in rows:
        groups.setdefault(row[TARGET], []).append(row[ID])
    n_dev = round(fraction * len(rows))
    keys = sorted(groups)
    quotas = {k: n_dev * len(groups[k]) / len(rows) for k in keys}
    counts = {k: int(quotas[k]) for k in keys}
    left = n_dev - sum(counts.values())
    for k in sorted(keys, key=lambda k: quotas[k] - counts[k], reverse=True)[:left]:
        counts[k] += 1
    rng = random.Random(seed)
    chosen: set[str] = set()
    for k in keys:
        ids = sorted(groups[k])
        rng.shuffle(ids)
        chosen.update(ids[: counts[k]])
    return chosen


def make_splits(source: Path, task: Path = TASK) -> dict[str, int]:
    """Write the split files into ``task``; the number of rows of each split."""
    train = _read(source / "train.csv")
    test = _read(source / "test.csv")
    labels = {r[ID]: r[TARGET] for r in _read(source / "test_labels.csv")}
    dev_ids = pick_dev(train)
    public, private = task / "data" / "public", task / "data" / "private"

    def inputs(row: dict[str, Any]) -> dict[str, Any]:
        return {c: row[c] for c in COLUMNS}

    _write(
        public / "train.jsonl",
        [{**inputs(r), TARGET: r[TARGET]} for r in train if r[ID] not in dev_ids],
    )
    dev = [r for r in train if r[ID] in dev_ids]
    _write(public / "dev.jsonl", [inputs(r) for r in dev])
    _write(private / "dev_labels.jsonl", [{ID: r[ID], TARGET: r[TARGET]} for r in dev])
    _write(public / "test.jsonl", [inputs(r) for r in test])
    _write(private / "test_labels.jsonl", [{ID: r[ID], TARGET: labels[r[ID]]} for r in test])
    return {"train": len(train) - len(dev), "dev": len(dev), "test": len(test)}


def main() -> None:
    """Command line: regenerate the files and print the split sizes."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE)
    args = parser.parse_args()
    sizes = make_splits(args.source)
    print(", ".join(f"{k} {v}" for k, v in sizes.items()))


if __name__ == "__main__":
    main()
