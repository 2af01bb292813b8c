"""The reward of a rollout: the task's per-item scorer on the answer and the train label, and,
where the task's scorer defines ``score_steps``, the verifier's reward for each model call."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
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


def train_step_rewards(
    task: Task,
) -> Callable[[dict[str, Any], Any, Sequence[dict[str, Any]]], tuple[float, ...]] | None:
    """``step_rewards(example, answer, trajectory)``: one reward per model call of a rollout, from
    the task's ``score_steps`` on the train label (``None`` when the task scores no steps).

    The scorer rewards trajectory steps; a step's reward goes to the model call that led to it
    (the latest ``llm_call`` at or before it; before any call, the first call). Non-finite and
    missing rewards are 0; a scorer error gives no step rewards for that rollout (the episode
    reward stays). For a ``minimize`` task the rewards are negated, as :func:`train_reward` does.
    """
    score_steps = getattr(task, "_score_steps", None)
    if score_steps is None:
        return None
    sign = 1.0 if task.config.direction != "minimize" else -1.0

    def step_rewards(
        example: dict[str, Any], answer: Any, trajectory: Sequence[dict[str, Any]]
    ) -> tuple[float, ...]:
        steps = list(trajectory)
        n_calls = sum(1 for s in steps if s.get("kind") == "llm_call")
        if not n_calls:
            return ()
        item = Item(id=str(example["id"]), input=example["input"], split="train")
        try:
            raw = score_steps(answer, example["label"], item, steps)
        except Exception as exc:
            log.warning("score_steps failed on %s: %s", example["id"], exc)
            return ()
        per_call = [0.0] * n_calls
        call = -1
        for i, step in enumerate(steps):
            if step.get("kind") == "llm_call":
                call += 1
            value = raw[i] if isinstance(raw, Sequence) and i < len(raw) else None
            try:
                reward = float(value) if value is not None else 0.0
            except (TypeError, ValueError):
                reward = 0.0
            if math.isfinite(reward):
                per_call[max(call, 0)] += sign * reward
        return tuple(per_call)

    return step_rewards
