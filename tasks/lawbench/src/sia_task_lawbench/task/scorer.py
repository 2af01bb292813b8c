"""LawBench scorer: exact match on the charge name, plus macro-F1 over the 191 classes.

An answer is correct when, after trimming and collapsing whitespace, it equals the label, or
equals the label written without its CAIL brackets (``走私、贩卖、运输、制造毒品`` stands for
``[走私、贩卖、运输、制造]毒品``: classes.json maps it back). Anything else is wrong: a number,
a list, a label with extra words, an unknown charge. sia divides by all items of a split.

Loaded by sia from this file (task.toml: ``scorer = "scorer.py:score_item"``); stdlib only.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

CLASSES_PATH = Path(__file__).resolve().parent / "data" / "public" / "classes.json"
_WS = re.compile(r"\s+")


def _load_classes() -> tuple[frozenset[str], dict[str, str]]:
    classes = json.loads(CLASSES_PATH.read_text(encoding="utf-8"))
    unbracketed: dict[str, str] = {}
    for name in classes:
        plain = name.replace("[", "").replace("]", "")
        if plain != name:
            unbracketed[plain] = name
    return frozenset(classes), unbracketed


CLASSES, UNBRACKETED = _load_classes()


def canonical(answer: Any) -> str | None:
    """The class an answer names, in its CAIL spelling; ``None`` when it names none."""
    if not isinstance(answer, str):
        return None
    text = _WS.sub(" ", answer).strip()
    if text in CLASSES:
        return text
    return UNBRACKETED.get(text)


def score_item(answer: Any, label: Any, item: Any) -> float:
    """1.0 when ``answer`` names the labelled charge (brackets optional), else 0.0."""
    got = canonical(answer)
    return 1.0 if got is not None and got == _WS.sub(" ", str(label)).strip() else 0.0


def macro_f1(predictions: Mapping[str, str | None], labels: Mapping[str, str]) -> float:
    """Macro-F1 over the classes that occur in ``labels`` or among the predictions.

    A class that is neither labelled nor predicted in the split has no defined F1 and is left
    out (lawbench's test split has 190 of the 191 classes). An answer that names no class counts
    as a miss for the labelled class and as nobody's false positive.
    """
    true_pos: dict[str, int] = {}
    false_pos: dict[str, int] = {}
    false_neg: dict[str, int] = {}
    for item_id, label in labels.items():
        predicted = predictions.get(item_id)
        if predicted == label:
            true_pos[label] = true_pos.get(label, 0) + 1
            continue
        false_neg[label] = false_neg.get(label, 0) + 1
        if predicted is not None:
            false_pos[predicted] = false_pos.get(predicted, 0) + 1
    classes = set(true_pos) | set(false_pos) | set(false_neg)
    if not classes:
        return 0.0
    total = 0.0
    for name in classes:
        tp = true_pos.get(name, 0)
        denominator = 2 * tp + false_pos.get(name, 0) + false_neg.get(name, 0)
        total += 2 * tp / denominator if denominator else 0.0
    return total / len(classes)


def _unanswered(answer: Any) -> bool:
    return answer is None or (isinstance(answer, str) and not answer.strip())


def aggregate(
    per_item: Mapping[str, float], answers: Mapping[str, Any], labels: Mapping[str, Any]
) -> dict[str, Any]:
    """Extra metrics: ``macro_f1`` and how many answers named no known class."""
    wanted = {item_id: _WS.sub(" ", str(label)).strip() for item_id, label in labels.items()}
    predictions = {item_id: canonical(answers.get(item_id)) for item_id in wanted}
    answered = [i for i in wanted if not _unanswered(answers.get(i))]
    return {
        "macro_f1": macro_f1(predictions, wanted),
        "n_unknown_class": sum(1 for i in answered if predictions[i] is None),
    }
