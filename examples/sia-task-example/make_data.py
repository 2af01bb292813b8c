"""Regenerate the example task's items: Roman numerals (1-3999) to integers.

    python examples/sia-task-example/make_data.py

Deterministic (fixed seed); every number appears in at most one split.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

TASK = Path(__file__).resolve().parent / "src" / "sia_task_example" / "task"
SEED = 7
SIZES = {"train": 40, "dev": 20, "test": 20}
_VALUES = (
    (1000, "M"),
    (900, "CM"),
    (500, "D"),
    (400, "CD"),
    (100, "C"),
    (90, "XC"),
    (50, "L"),
    (40, "XL"),
    (10, "X"),
    (9, "IX"),
    (5, "V"),
    (4, "IV"),
    (1, "I"),
)


def to_roman(number: int) -> str:
    """``1994`` -> ``"MCMXCIV"`` (standard subtractive form, 1-3999)."""
    if not 1 <= number <= 3999:
        raise ValueError(f"{number} is outside 1-3999")
    out = []
    for value, symbol in _VALUES:
        count, number = divmod(number, value)
        out.append(symbol * count)
    return "".join(out)


def main() -> None:
    """Write the split and label files."""
    numbers = random.Random(SEED).sample(range(1, 4000), sum(SIZES.values()))
    start = 0
    for split, size in SIZES.items():
        chosen = numbers[start : start + size]
        start += size
        rows = [{"id": f"{split}-{k + 1:02d}", "input": to_roman(n)} for k, n in enumerate(chosen)]
        labels = [{"id": r["id"], "label": n} for r, n in zip(rows, chosen, strict=True)]
        public = TASK / "data" / "public" / f"{split}.jsonl"
        if split == "train":
            rows = [{**r, "label": lab["label"]} for r, lab in zip(rows, labels, strict=True)]
        else:
            private = TASK / "data" / "private" / f"{split}_labels.jsonl"
            private.write_text("".join(json.dumps(x) + "\n" for x in labels), encoding="utf-8")
        public.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        print(f"{split}: {size} items")


if __name__ == "__main__":
    main()
