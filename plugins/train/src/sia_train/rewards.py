"""The reward of a rollout: the task's per-item scorer on the answer and the train label."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

from sia_core.contracts.errors import SiaError
from sia_core.contracts.records import Item
from sia_core.services.taskdir import Task

log = logging.getLogger(__name__)


def train_reward(task: Task) -> Callable[[dict[str, Any], Any], float]:
    """``reward(example, answer)``: the task's per-item scorer on the train label.

    ``Task.score_answer`` knows only the dev/test labels, so the scorer function is taken from
    the task (a private attribute: see the module README). A missing answer, or a scorer error,
    scores the task's worst value. For a ``minimize`` task the reward is minus the score.
    """
    score_item = getattr(task, "_score_item", None)
    if task.config.kind != "per_item" or score_item is None:
        raise SiaError(
            f"task {task.name!r} has no per-item scorer: weight training needs per-item rewards"
        )
    maximize = task.config.direction != "minimize"
    worst = 0.0 if maximize else 1.0

    def reward(example: dict[str, Any], answer: Any) -> float:
        if answer is None or (isinstance(answer, str) and not answer.strip()):
            score = worst
        else:
            item = Item(id=str(example["id"]), input=example["input"], split="train")
            try:
                score = float(score_item(answer, example["label"], item))
            except Exception as exc:
                log.warning("scorer failed on %s: %s", example["id"], exc)
                score = worst
            if not math.isfinite(score):
                score = worst
        return score if maximize else -score

    return reward
