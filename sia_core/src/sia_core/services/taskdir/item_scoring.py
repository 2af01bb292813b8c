"""Per-item scoring (sia-native tasks): a split's score over all its items, one answer's
score (e.g. an RL reward) and canary hits (:class:`PerItemScoring`)."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from sia_core.contracts.errors import TaskError
from sia_core.contracts.records import Item, ScoreResult
from sia_core.services.taskdir.task_core import TaskCore


class PerItemScoring(TaskCore):
    """Scoring a ``per_item`` task with its built-in or custom per-item scorer."""

    def _require_per_item(self) -> Callable[[Any, Any, Item], float]:
        if self.config.kind != "per_item" or self._score_item is None:
            raise TaskError(
                self.name,
                ["this task is scored by a whole-run evaluate.py: use score_program_output()"],
            )
        return self._score_item

    def score_answer(self, split: str, item_id: str, answer: Any) -> float:
        """One item's score (e.g. an RL reward); a missing answer scores the worst value."""
        score_item = self._require_per_item()
        self._check_split(split)
        by_id = self._index.get(split, {})
        if item_id not in by_id:
            raise TaskError(self.name, [f"no item {item_id!r} in split {split!r}"])
        if _unanswered(answer):
            return self._worst()
        return float(score_item(answer, self._labels[split][item_id], by_id[item_id]))

    def canary_hit(self, answer: Any, label: str, item: Item) -> bool:
        """Whether ``answer`` is right for a canary ``item`` whose (drawn) label is ``label``."""
        score_item = self._require_per_item()
        if _unanswered(answer):
            return False
        try:
            return float(score_item(answer, label, item)) >= 1.0 - 1e-9
        except Exception:  # a scorer choking on an answer: not a hit
            return False

    def score(self, split: str, answers: Mapping[str, Any]) -> ScoreResult:
        """Score a split. Missing or ``None`` answers count wrong; divides by ALL items.

        ``per_item`` has every id of the split. Per-item values are in 0..1: 1 = correct (or, for
        a ``minimize`` task, the custom scorer's loss; a missing answer then scores 1).
        """
        score_item = self._require_per_item()
        self._check_split(split)
        items = self._items.get(split, [])
        labels = self._labels.get(split, {})
        worst = self._worst()
        per_item: dict[str, float] = {}
        n_answered = 0
        errors: list[str] = []
        for item in items:
            answer = answers.get(item.id)
            if _unanswered(answer):
                per_item[item.id] = worst
                continue
            n_answered += 1
            try:
                value = float(score_item(answer, labels[item.id], item))
                if not math.isfinite(value):  # it would turn the whole split's mean into nan
                    raise ValueError(f"the scorer returned {value}")
                per_item[item.id] = value
            except Exception as exc:  # trusted task code, but one bad item must not end a run
                per_item[item.id] = worst
                errors.append(f"{item.id}: {type(exc).__name__}: {exc}")
        n_items = len(items)
        total = math.fsum(per_item.values())
        extra: dict[str, Any] = {"metric": self.config.metric}
        unknown = [key for key in answers if key not in per_item]
        if unknown:
            extra["n_unknown_ids"] = len(unknown)
        if errors:
            extra["scorer_errors"] = len(errors)
            extra["first_scorer_error"] = errors[0]
        if self._aggregate is not None:
            try:
                extra.update(self._aggregate(dict(per_item), dict(answers), dict(labels)))
            except Exception as exc:
                extra["aggregate_error"] = f"{type(exc).__name__}: {exc}"
        return ScoreResult(
            split=split,
            score=total / n_items if n_items else 0.0,
            n_items=n_items,
            n_answered=n_answered,
            per_item=per_item,
            extra=extra,
        )


def _unanswered(answer: Any) -> bool:
    return answer is None or (isinstance(answer, str) and not answer.strip())
