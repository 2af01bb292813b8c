"""Per-item scoring (sia-native tasks): a split's score over all its items, one answer's
score (e.g. an RL reward) and canary hits (:class:`PerItemScoring`)."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
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


class StepRewards(PerItemScoring):
    """The task's optional step scorer: rewards for the steps of a trajectory."""

    @property
    def scores_steps(self) -> bool:
        """Whether the task's scorer module defines ``score_steps``."""
        return self._score_steps is not None

    def step_rewards(
        self, split: str, item_id: str, answer: Any, trajectory: Sequence[Any]
    ) -> list[float | None]:
        """One reward (or ``None``: no reward) per trajectory step, from the task's
        ``score_steps(answer, label, item, trajectory)``. The trajectory is the scaffold's
        (untrusted); the rewards are the verifier's. Entries past the trajectory are dropped,
        missing ones are ``None``, a non-finite or non-numeric one is ``None``."""
        if self._score_steps is None:
            return []
        self._check_split(split)
        item = self._index.get(split, {}).get(item_id)
        if item is None:
            raise TaskError(self.name, [f"no item {item_id!r} in split {split!r}"])
        steps = list(trajectory) if isinstance(trajectory, Sequence) else []
        raw = self._score_steps(answer, self._labels[split][item_id], item, steps)
        out: list[float | None] = []
        for i in range(len(steps)):
            value = raw[i] if isinstance(raw, Sequence) and i < len(raw) else None
            try:
                number = float(value) if value is not None else None
            except (TypeError, ValueError):
                number = None
            out.append(number if number is not None and math.isfinite(number) else None)
        return out

    def step_reward_summary(self, split: str, items: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """How many trajectory steps of a split's item results carry a verifier reward:
        ``{"steps", "rewarded", "density", "mean"}`` (plus ``errors`` and the first one), for
        :class:`~sia_core.contracts.records.RewardStats`; ``{}`` when the task scores no steps."""
        if self._score_steps is None:
            return {}
        steps = rewarded = 0
        total = 0.0
        errors: list[str] = []
        for result in items:
            trajectory = result.get("trajectory")
            trajectory = trajectory if isinstance(trajectory, list) else []
            try:
                rewards = self.step_rewards(
                    split, str(result.get("item_id")), result.get("answer"), trajectory
                )
            except Exception as exc:  # one bad item must not end the run
                errors.append(f"{result.get('item_id')}: {type(exc).__name__}: {exc}")
                continue
            steps += len(rewards)
            given = [r for r in rewards if r is not None]
            rewarded += len(given)
            total += math.fsum(given)
        out: dict[str, Any] = {
            "steps": steps,
            "rewarded": rewarded,
            "density": rewarded / steps if steps else 0.0,
            "mean": total / rewarded if rewarded else 0.0,
        }
        if errors:
            out.update(errors=len(errors), first_error=errors[0])
        return out


def _unanswered(answer: Any) -> bool:
    return answer is None or (isinstance(answer, str) and not answer.strip())
