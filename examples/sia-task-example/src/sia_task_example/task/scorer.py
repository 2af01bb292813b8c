"""Scorer for the example task (Roman numerals): trusted task code, run outside the sandbox.

``score_item``: 1.0 when the first integer in the answer equals the label (``"1994"``,
``1994`` and ``"It is 1994."`` all count), else 0.0. ``aggregate``: accuracy by the size of the
number, since long numerals (``MMMDCCCLXXXVIII``) are where models slip.
"""

import re
from typing import Any

_INT = re.compile(r"-?\d+")
BUCKETS = (("1-99", 1, 99), ("100-999", 100, 999), ("1000-3999", 1000, 3999))


def first_int(answer: Any) -> int | None:
    """The first integer in the answer, or None."""
    if isinstance(answer, bool):
        return None
    if isinstance(answer, int):
        return answer
    match = _INT.search(str(answer).replace(",", ""))
    return int(match.group()) if match else None


def score_item(answer: Any, label: Any, item: Any) -> float:
    """1.0 if the answer's first integer is the label."""
    got = first_int(answer)
    return 1.0 if got is not None and got == int(label) else 0.0


def aggregate(per_item: dict, answers: dict, labels: dict) -> dict:
    """Accuracy per size of the number (1-99, 100-999, 1000-3999)."""
    out = {}
    for name, low, high in BUCKETS:
        ids = [i for i in per_item if low <= int(labels[i]) <= high]
        if ids:
            out[f"accuracy_{name}"] = sum(per_item[i] for i in ids) / len(ids)
    return out
