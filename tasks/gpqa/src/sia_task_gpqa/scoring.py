"""Scoring for gpqa: the answer's letter against the private label, per-domain breakdown.

The letter is read in this order (the first rule that matches wins):

1. ``Answer: C`` / ``answer is (C)`` / ``ANSWER = C``: the letter after the last "answer";
2. a reply that is only a letter, optionally in parentheses or with a full stop (``C``, ``(c)``);
3. the first standalone capital A-D (``C) 2.0 m/s`` or ``I pick C``).

An answer with no letter is a *parse failure*: wrong, and counted in ``parse_failure_rate``.
Scores divide by all questions of a split, answered or not.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

_ANSWER_RE = re.compile(r"answer\s*(?:is|:|=)?\s*[:=]?\s*\(?\s*([A-D])\s*\)?(?![A-Za-z])", re.I)
_ALONE_RE = re.compile(r"^\s*\(?\s*([A-Da-d])\s*\)?\s*\.?\s*$")
_STANDALONE_RE = re.compile(r"(?<![A-Za-z])([A-D])(?![A-Za-z])")


def parse_letter(answer: Any) -> str | None:
    """The chosen option's letter (``"A"``..``"D"``), or ``None`` when the answer names none."""
    if not isinstance(answer, str):
        return None
    found = [m for m in _ANSWER_RE.finditer(answer) if m.group(1).isupper()]
    if found:
        return found[-1].group(1)
    alone = _ALONE_RE.match(answer)
    if alone:
        return alone.group(1).upper()
    first = _STANDALONE_RE.search(answer)
    return first.group(1) if first else None


def score_item(answer: Any, label: Any, item: Any) -> float:
    """1.0 if the answer's letter is the label's, else 0.0."""
    letter = parse_letter(answer)
    return 1.0 if letter is not None and letter == str(label).strip().upper() else 0.0


def _domains(task_dir: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for split in ("train", "dev", "test"):
        path = task_dir / "data" / "public" / f"{split}.jsonl"
        if not path.is_file():
            continue
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                row = json.loads(line)
                out[str(row["id"])] = str(row.get("domain") or "unknown")
    return out


def make_aggregate(
    domains: Mapping[str, str],
) -> Callable[[Mapping[str, float], Mapping[str, Any], Mapping[str, Any]], dict[str, Any]]:
    """An ``aggregate`` that knows each item's domain (read from the task's public files)."""

    def aggregate(
        per_item: Mapping[str, float], answers: Mapping[str, Any], labels: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Accuracy and count per domain; unanswered items; parse failures and their rate."""
        by_domain: dict[str, list[float]] = {}
        for item_id, value in per_item.items():
            by_domain.setdefault(domains.get(item_id, "unknown"), []).append(value)
        unanswered = [i for i in per_item if answers.get(i) is None]
        unparsed = [
            i for i in per_item if answers.get(i) is not None and parse_letter(answers[i]) is None
        ]
        n = len(per_item)
        return {
            "accuracy_by_domain": {d: math.fsum(v) / len(v) for d, v in sorted(by_domain.items())},
            "n_by_domain": {d: len(v) for d, v in sorted(by_domain.items())},
            "unanswered": len(unanswered),
            "parse_failures": len(unparsed),
            "parse_failure_rate": len(unparsed) / n if n else 0.0,
        }

    return aggregate


def make_scorer(
    task_dir: Path,
) -> tuple[Callable[[Any, Any, Any], float], Callable[..., dict[str, Any]]]:
    """``(score_item, aggregate)`` for the built task folder at ``task_dir``."""
    return score_item, make_aggregate(_domains(task_dir))
