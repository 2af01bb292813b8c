"""Answer normalisation (:func:`normalize`) and the built-in per-item scorers (``exact``,
``numeric``); also the canonical JSON form the other modules compare values by."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from typing import Any

from sia_core.contracts.records import Item
from sia_core.services.taskdir.layout import ANSWER_TYPES, FLOAT_TOLERANCE

_THOUSANDS_RE = re.compile(r"(?<=\d),(?=\d{3}\b)")
_INT_RE = re.compile(r"[-+]?\d+")
_FLOAT_RE = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")
_CHOICE_RE = re.compile(r"(?<![A-Za-z])[A-Z](?![A-Za-z])")
_WS_RE = re.compile(r"\s+")


def _canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _norm_text(answer: Any) -> str:
    if isinstance(answer, str):
        text = answer
    elif isinstance(answer, dict | list):
        text = _canonical_json(answer)
    else:
        text = str(answer)
    return _WS_RE.sub(" ", text).strip()


def _norm_int(answer: Any) -> int | None:
    if isinstance(answer, bool):
        return None
    if isinstance(answer, int):
        return answer
    if isinstance(answer, float):
        return int(answer) if math.isfinite(answer) and answer.is_integer() else None
    if isinstance(answer, str):
        match = _INT_RE.search(_THOUSANDS_RE.sub("", answer))
        return int(match.group()) if match else None
    return None


def _norm_float(answer: Any) -> float | None:
    if isinstance(answer, bool):
        return None
    if isinstance(answer, int | float):
        value = float(answer)
    elif isinstance(answer, str):
        match = _FLOAT_RE.search(_THOUSANDS_RE.sub("", answer))
        if not match:
            return None
        value = float(match.group())
    else:
        return None
    return value if math.isfinite(value) else None


def _norm_choice(answer: Any) -> str | None:
    if not isinstance(answer, str):
        return None
    text = answer.strip()
    if len(text) == 1 and "a" <= text.lower() <= "z":
        return text.upper()
    match = _CHOICE_RE.search(text)
    return match.group() if match else None


def _norm_json(answer: Any) -> str | None:
    value = answer
    if isinstance(answer, str):
        try:
            value = json.loads(answer)
        except ValueError:
            value = answer  # a plain string is its own JSON value
    try:
        return _canonical_json(value)
    except (TypeError, ValueError):
        return None


_NORMALIZERS: dict[str, Callable[[Any], Any]] = {
    "text": _norm_text,
    "int": _norm_int,
    "float": _norm_float,
    "choice": _norm_choice,
    "json": _norm_json,
}


def normalize(answer: Any, answer_type: str) -> Any:
    """Normalise an answer (or a label) for exact matching; ``None`` means unparsable.

    - ``text``: stripped, runs of whitespace collapsed to one space.
    - ``int``: the first integer in a string (``"The answer is 42."`` -> 42); bools rejected.
    - ``float``: the first number in a string, as a finite float; bools rejected.
    - ``choice``: the first standalone capital letter A-Z (a lone lowercase letter is upcased).
    - ``json``: a canonical JSON dump (a string is parsed as JSON first where it is JSON).
    """
    normalizer = _NORMALIZERS.get(answer_type)
    if normalizer is None:
        raise ValueError(
            f"unknown answer_type {answer_type!r}; choose one of: {', '.join(ANSWER_TYPES)}"
        )
    return None if answer is None else normalizer(answer)


def _exact_scorer(answer_type: str) -> Callable[[Any, Any, Item], float]:
    def score_item(answer: Any, label: Any, item: Item) -> float:
        got, want = normalize(answer, answer_type), normalize(label, answer_type)
        if got is None or want is None:
            return 0.0
        if answer_type == "float":
            return 1.0 if math.isclose(got, want, rel_tol=0.0, abs_tol=FLOAT_TOLERANCE) else 0.0
        return 1.0 if got == want else 0.0

    return score_item


def _numeric_scorer(tolerance: float) -> Callable[[Any, Any, Item], float]:
    def score_item(answer: Any, label: Any, item: Item) -> float:
        got, want = normalize(answer, "float"), normalize(label, "float")
        if got is None or want is None:
            return 0.0
        return 1.0 if abs(got - want) <= tolerance else 0.0

    return score_item
