"""``--rl-algorithm auto`` picks the objective from the reward's shape on real loop runs, with the
installed objective plugins (grpo, ppo, entropic) and their real fits. The shape comes from the
verifier: the task's per-item scorer and, where the task has one, its ``score_steps`` step scorer
(never from the scaffold). The training itself is a fake executor at the plugin boundary."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from sia_core import hookimpl
from sia_core.contracts.records import ExecutorSpec
from sia_core.loop import Loop
from sia_core.machinery.plugins import new_plugin_manager
from sia_core.machinery.runstore import RunStore
from sia_core.testing.fixtures import tiny_task_source

from .test_loop import make_config, write_script


class Executors:
    @hookimpl
    def sia_executors(self) -> Any:
        # test_report's executor: writes an adapter folder and a training log, trains nothing
        yield ExecutorSpec(name="fake", factory="tests.plugins.test_report:LoggingExecutor")


#: continuous partial credit with one rare full score: a heavy right tail
SKEWED = """
def score_item(answer, label, item):
    if item.id == "dev-01" and str(answer).strip() == str(label):
        return 1.0
    return 0.05 + 0.005 * int(item.id[-2:])
"""

#: exact answers, and a reward for every step of the trajectory (each model call, the answer)
STEPPED = """
def score_item(answer, label, item):
    return 1.0 if str(answer).strip() == str(label) else 0.0


def score_steps(answer, label, item, trajectory):
    return [1.0 if step.get("kind") == "llm_call" else 0.5 for step in trajectory]
"""


def task_with_scorer(tmp_path: Path, scorer: str | None) -> Path:
    root = tmp_path / "task"
    shutil.copytree(tiny_task_source(), root, ignore=shutil.ignore_patterns("__pycache__"))
    if scorer is not None:
        (root / "scorer.py").write_text(scorer)
        toml = (root / "task.toml").read_text()
        (root / "task.toml").write_text(toml.replace('scorer = "exact"', 'scorer = "scorer.py"'))
    return root


def script(scaffold: str) -> dict[str, Any]:
    return {
        "meta": {"scaffold": scaffold},
        "feedback": {"2": {"lever": "weights", "rationale": "train"}, "3": {"lever": "stop"}},
        "task_model": {"trainable": True, "default": "no idea"},
    }


@pytest.mark.parametrize(
    ("scorer", "scaffold", "chosen"),
    [
        (None, "calc_scaffold.py", "grpo"),
        (SKEWED, "calc_scaffold.py", "entropic"),
        (STEPPED, "llm_calc_scaffold.py", "ppo"),  # a scaffold whose steps call the model
    ],
    ids=["binary-episode-rewards", "right-skewed-continuous", "dense-step-rewards"],
)
def test_auto_picks_the_objective_from_the_reward_shape(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, scorer: str | None, scaffold: str, chosen: str
) -> None:
    monkeypatch.setenv("SIA_REPORT", "0")
    pm = new_plugin_manager()  # the installed objective plugins and their real fits
    assert {"grpo", "ppo", "entropic"} <= set(pm.rl_algorithms().names())
    pm.register_object(Executors(), "executors")
    task = task_with_scorer(tmp_path, scorer)
    config = make_config(task, write_script(tmp_path, script(scaffold)), max_gen=2, executor="fake")
    store = RunStore.open(tmp_path / "runs", "1", create=True)
    rows = Loop(config, store, pm).run()
    assert [r.lever for r in rows] == ["harness", "weights"]
    decision = json.loads((store.gen_dir(2) / "decision.json").read_text())
    assert decision["rl_algorithm"] == chosen, decision["notes"]
    fits = {f["name"]: f["score"] for f in decision["algorithm_fits"]}
    assert fits[chosen] == max(fits.values())
    stats = decision["reward_stats"]
    assert stats["n_rewards"] == 12
    if chosen == "ppo":  # the verifier's step rewards reached the stats
        assert stats["step_reward_density"] == 1.0
        metrics = json.loads((store.gen_dir(1) / "metrics.json").read_text())
        steps = metrics["dev"]["extra"]["step_rewards"]
        assert steps["steps"] >= 12 and steps["rewarded"] == steps["steps"]  # each item's call
    elif chosen == "entropic":
        assert not stats["binary"] and stats["skew"] > 2.5
    else:
        assert stats["binary"] and stats["step_reward_density"] == 0.0


def test_step_rewards_are_the_verifiers_and_survive_a_bad_scorer(tmp_path: Path) -> None:
    from sia_core.services.taskdir import load_task

    odd = (
        "def score_item(answer, label, item):\n    return 1.0\n\n"
        "def score_steps(answer, label, item, trajectory):\n"
        "    if item.id == 'dev-02':\n        raise ValueError('bad step')\n"
        "    return [float('nan'), 'x', 2.0, 3.0, 4.0][: len(trajectory) + 2]\n"
    )
    task = load_task(task_with_scorer(tmp_path, odd))
    assert task.scores_steps
    steps = [{"kind": "note"}, {"kind": "llm_call"}, {"kind": "answer"}]
    # one value per step: non-finite and non-numeric are no reward, extra values are dropped
    assert task.step_rewards("dev", "dev-01", 3, steps) == [None, None, 2.0]
    summary = task.step_reward_summary(
        "dev",
        [
            {"item_id": "dev-01", "answer": 3, "trajectory": steps},
            {"item_id": "dev-02", "answer": 3, "trajectory": steps},
            {"item_id": "dev-03", "answer": 3, "trajectory": "not a list"},
        ],
    )
    assert summary["steps"] == 3 and summary["rewarded"] == 1 and summary["mean"] == 2.0
    assert summary["errors"] == 1 and "bad step" in summary["first_error"]
    assert (
        load_task(task_with_scorer(tmp_path / "plain", None)).step_reward_summary("dev", []) == {}
    )


def test_training_gives_each_model_call_the_verifiers_step_rewards(tmp_path: Path) -> None:
    """The trainer's view (sia_train.rewards): a step's reward goes to the call that led to it."""
    from sia_core.services.taskdir import load_task
    from sia_train.rewards import train_step_rewards

    stepped = (
        "def score_item(answer, label, item):\n    return 1.0\n\n"
        "def score_steps(answer, label, item, trajectory):\n"
        "    return [{'note': 0.25, 'llm_call': 1.0, 'answer': 2.0}[s['kind']] for s in trajectory]\n"
    )
    task = load_task(task_with_scorer(tmp_path, stepped))
    rewards = train_step_rewards(task)
    assert rewards is not None
    example = task.train_examples()[0]
    kinds = ["note", "llm_call", "note", "llm_call", "answer"]
    trajectory = [{"kind": k} for k in kinds]
    # call 1 gets its own 1.0 and the note before any call (0.25) and after it (0.25)
    assert rewards(example, 3, trajectory) == (1.5, 3.0)
    assert rewards(example, 3, [{"kind": "answer"}]) == ()  # no model call: nothing to credit
    assert train_step_rewards(load_task(task_with_scorer(tmp_path / "p", None))) is None
