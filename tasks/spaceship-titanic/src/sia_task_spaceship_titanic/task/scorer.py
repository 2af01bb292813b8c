"""Spaceship Titanic scorer: accuracy on ``Transported``, with booleans read leniently.

An answer counts as ``True`` when it is ``True``, ``1``, or (any case, surrounding whitespace
and a final full stop ignored) ``"true"``, ``"t"``, ``"1"``, ``"yes"``, ``"y"`` or
``"transported"``; as ``False`` for ``False``, ``0``, ``"false"``, ``"f"``, ``"0"``, ``"no"``,
``"n"``, ``"not transported"``. Anything else (another number, a sentence, a list) is wrong.
sia divides by all items of a split.

Loaded by sia from this file (task.toml: ``scorer = "scorer.py:score_item"``); stdlib only.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

TRUE_WORDS = frozenset({"true", "t", "1", "1.0", "yes", "y", "transported"})
FALSE_WORDS = frozenset({"false", "f", "0", "0.0", "no", "n", "not transported", "not_transported"})
_WS = re.compile(r"\s+")


def parse_bool(value: Any) -> bool | None:
    """``True``/``False`` for an answer that clearly says so, else ``None``."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return True if value == 1 else False if value == 0 else None
    if not isinstance(value, str):
        return None
    text = _WS.sub(" ", value).strip().lower().rstrip(".").strip()
    if text in TRUE_WORDS:
        return True
    if text in FALSE_WORDS:
        return False
    return None


def score_item(answer: Any, label: Any, item: Any) -> float:
    """1.0 when the answer's boolean equals the label's, else 0.0."""
    got, want = parse_bool(answer), parse_bool(label)
    return 1.0 if got is not None and got == want else 0.0


def aggregate(
    per_item: Mapping[str, float], answers: Mapping[str, Any], labels: Mapping[str, Any]
) -> dict[str, Any]:
    """Extra metrics: answers that are no boolean, and the share predicted ``True``."""
    parsed = [parse_bool(answers.get(item_id)) for item_id in labels]
    given = [p for p in parsed if p is not None]
    return {
        "n_unparsable": sum(
            1
            for item_id, p in zip(labels, parsed, strict=True)
            if p is None and not _unanswered(answers.get(item_id))
        ),
        "share_predicted_true": sum(given) / len(given) if given else 0.0,
    }


def _unanswered(answer: Any) -> bool:
    return answer is None or (isinstance(answer, str) and not answer.strip())
