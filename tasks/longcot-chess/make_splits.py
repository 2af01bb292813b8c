"""Regenerate longcot-chess's split files from LongCoT's data and the seeded generator.

    .venv/bin/python tasks/longcot-chess/make_splits.py [--source DIR] [--check]

``--source`` is the folder with ``longcot/chess_hard.json`` and ``sia_subset/`` (default: the
project's shared data folder). ``--check`` regenerates into memory and exits 1 if any committed
file differs. The result is deterministic: fixed seeds, sorted inputs, exact answers.

Splits (ids carry the template, which the scorer's per-template breakdown reads):

- test: SIA's 50 items (11 ``best_3_moves``, 39 ``knight_path``), SIA's ids and order.
- dev: 11 other LongCoT ``best_3_moves`` + the 11 other LongCoT ``knight_path`` + 28 generated
  ``knight_path`` (50 items, the same 11/39 template mix as test).
- train: the other 28 LongCoT ``best_3_moves`` + 100 generated ``knight_path`` (128 items).

Every ``knight_path`` answer, LongCoT's own included, is checked against the exact solver.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path
from typing import Any

from sia_task_longcot_chess import knight

HERE = Path(__file__).resolve().parent
TASK_DIR = HERE / "src" / "sia_task_longcot_chess" / "task"
DEFAULT_SOURCE = HERE.parents[1].parent / "shared" / "data" / "longcot-chess"

SPLIT_SEED = 0  # which leftover LongCoT best_3_moves items go to dev
GENERATOR_SEED = 20_260_501  # the generated knight_path items
N_DEV_BEST3 = 11
N_DEV_GENERATED = 28
N_TRAIN_GENERATED = 100
BOARD, N_TARGETS = 100, 30  # as in every LongCoT hard knight_path item


def _row(item_id: str, template: str, prompt: str, label: Any = None) -> dict[str, Any]:
    row: dict[str, Any] = {"id": item_id, "template": template, "prompt": prompt}
    if label is not None:
        row["label"] = label
    return row


def generated_items(count: int, seed: int = GENERATOR_SEED) -> list[dict[str, Any]]:
    """``count`` generated knight_path items with exact answers, in a fixed order."""
    rng = random.Random(seed)
    rows = []
    for k in range(count):
        problem = knight.generate_problem(rng, BOARD, BOARD, N_TARGETS)
        rows.append(
            _row(
                f"knight_path_gen_{k + 1:03d}",
                "knight_path",
                knight.format_prompt(problem),
                str(knight.solve(problem)),
            )
        )
    return rows


def build(source: Path) -> dict[str, str]:
    """Every split file's text, by its path relative to the task directory."""
    hard = json.loads((source / "longcot" / "chess_hard.json").read_text())["questions"]
    subset = source / "sia_subset"
    sia_items = json.loads((subset / "chess_hard_50.json").read_text())
    sia_answers = json.loads((subset / "answers_50.json").read_text())
    sia_to_longcot = json.loads((subset / "sia_id_to_longcot_hard_id.json").read_text())
    in_test = set(sia_to_longcot.values())

    test = [_row(it["question_id"], it["problem"]["template"], it["prompt"]) for it in sia_items]
    test_labels = {it["question_id"]: sia_answers[it["question_id"]] for it in sia_items}

    rest = sorted(
        (q for q in hard if q["question_id"] not in in_test),
        key=lambda q: int(q["question_id"]),
    )
    best3 = [q for q in rest if q["problem"]["template"] == "best_3_moves"]
    knights = [q for q in rest if q["problem"]["template"] == "knight_path"]
    random.Random(SPLIT_SEED).shuffle(best3)
    for q in (q for q in hard if q["problem"]["template"] == "knight_path"):
        exact = knight.solve(knight.parse_prompt(q["prompt"]))
        if exact != int(q["answer"]):
            raise SystemExit(f"LongCoT item {q['question_id']}: answer {q['answer']} != {exact}")

    def longcot(q: dict[str, Any], with_label: bool) -> dict[str, Any]:
        template = q["problem"]["template"]
        return _row(
            f"{template}_longcot_{q['question_id']}",
            template,
            q["prompt"],
            q["answer"] if with_label else None,
        )

    generated = generated_items(N_DEV_GENERATED + N_TRAIN_GENERATED)
    longcot_prompts = {q["prompt"] for q in hard}
    if any(g["prompt"] in longcot_prompts for g in generated):
        raise SystemExit("a generated item repeats a LongCoT prompt; change GENERATOR_SEED")

    dev_longcot = best3[:N_DEV_BEST3] + knights
    dev = [longcot(q, False) for q in dev_longcot]
    dev_labels = {row["id"]: q["answer"] for row, q in zip(dev, dev_longcot, strict=True)}
    for g in generated[:N_DEV_GENERATED]:
        dev.append(_row(g["id"], g["template"], g["prompt"]))
        dev_labels[g["id"]] = g["label"]
    train = [longcot(q, True) for q in best3[N_DEV_BEST3:]] + generated[N_DEV_GENERATED:]

    def jsonl(rows: list[dict[str, Any]]) -> str:
        return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)

    def labels(by_id: dict[str, Any]) -> str:
        return jsonl([{"id": i, "label": label} for i, label in by_id.items()])

    return {
        "data/public/train.jsonl": jsonl(train),
        "data/public/dev.jsonl": jsonl(dev),
        "data/public/test.jsonl": jsonl(test),
        "data/private/dev_labels.jsonl": labels(dev_labels),
        "data/private/test_labels.jsonl": labels(test_labels),
    }


def main(argv: list[str] | None = None) -> int:
    """Write (or with ``--check`` compare) the split files; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE)
    parser.add_argument("--check", action="store_true", help="compare, do not write")
    args = parser.parse_args(argv)
    files = build(args.source)
    stale = []
    for rel, text in files.items():
        path = TASK_DIR / rel
        if args.check:
            if not path.is_file() or path.read_text(encoding="utf-8") != text:
                stale.append(rel)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        print(f"wrote {rel}: {text.count(chr(10))} items")
    if stale:
        print("out of date: " + ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
