"""A weights generation end to end through the training seam: job -> executor -> adapter ->
the next generation's task model serves it. The executor is a fake at the plugin boundary (the
real trainer lives in sia-train); everything else is the real loop."""

from __future__ import annotations

import json
from pathlib import Path

from sia_core import hookimpl
from sia_core.contracts.records import AlgorithmFit, AlgorithmSpec, ExecutorSpec, TrainResult
from sia_core.loop import Loop
from sia_core.machinery.runstore import RunStore

from .test_loop import make_config, write_script


class FakeExecutor:
    """'Trains' by writing an adapter folder; fails when the job says so."""

    name = "fake"

    def available(self):
        return True, "in-process test executor"

    def run(self, job, on_progress):
        if job.settings.get("fail"):
            raise RuntimeError("the GPU fell off")
        out = Path(job.out_dir)
        out.mkdir(parents=True)
        (out / "adapter_config.json").write_text(json.dumps({"algorithm": job.algorithm}))
        on_progress({"step": 1, "steps": 1, "reward_mean": 1.0})
        metrics = {"reward_after": 1.0}
        if "tokens" in job.settings:  # what a trainer reports when its rollouts made no call
            metrics["tokens"] = job.settings["tokens"]
        return TrainResult(status="ok", adapter=str(out), metrics=metrics)


def fit(stats):
    return AlgorithmFit(name="grpo", score=0.9, reason="binary episode rewards")


class TrainingPlugins:
    @hookimpl
    def sia_rl_algorithms(self):
        yield AlgorithmSpec(name="grpo", fit=f"{__name__}:fit", trainer="x:y")

    @hookimpl
    def sia_executors(self):
        yield ExecutorSpec(name="fake", factory=f"{__name__}:FakeExecutor")


SCRIPT = {
    "meta": {"scaffold": "llm_calc_scaffold.py"},
    "feedback": {
        "2": {"lever": "weights", "rationale": "the model cannot read the numbers"},
        "3": {"lever": "harness", "rationale": "keep the weights, same scaffold"},
    },
    "task_model": {
        "trainable": True,
        "default": "no idea",
        # after training the model repeats the two numbers of the question
        "adapter_rules": [{"match": r"(\d+) \+ (\d+)", "reply": r"\1 and \2"}],
    },
}


def run(sia_pm, task_dir, tmp_path, **train_settings):
    store = RunStore.open(tmp_path / "runs", "1", create=True)
    config = make_config(
        task_dir, write_script(tmp_path, SCRIPT), max_gen=3, train_settings=train_settings
    )
    return store, Loop(config, store, sia_pm).run()


def test_adapter_is_trained_and_served_to_later_generations(
    sia_pm, register_plugin, tiny_task_dir, tmp_path
):
    register_plugin(TrainingPlugins(), "training")
    store, rows = run(sia_pm, tiny_task_dir, tmp_path)
    root = store.root
    assert [r.lever for r in rows] == ["harness", "weights", "harness"]
    assert rows[0].dev == 0.0 and rows[1].dev == 1.0 and rows[2].dev == 1.0
    result = json.loads((root / "gen_2/train_result.json").read_text())
    assert result["status"] == "ok"
    job = json.loads((root / "gen_2/train_job.json").read_text())
    assert job["algorithm"] == "grpo" and job["base_model"] == "scripted-base"
    assert job["init_adapter"] is None and job["settings"]["lora_rank"] == 32
    # the scaffold was frozen for the weights generation
    assert (root / "gen_2/target_agent.py").read_text() == (
        root / "gen_1/target_agent.py"
    ).read_text()
    # the completions differ and the records name the adapter; gen 3 inherits it
    calls = {
        g: json.loads((root / f"gen_{g}/agent_execution.json").read_text())["calls"]
        for g in (1, 2, 3)
    }
    assert {c["adapter"] for c in calls[1]} == {None}
    assert {c["adapter"] for c in calls[2]} == {str(root / "gen_2/adapter")}
    assert {c["adapter"] for c in calls[3]} == {str(root / "gen_2/adapter")}
    assert calls[1][0]["completion"] == "no idea" and " and " in calls[2][0]["completion"]
    archive = json.loads((root / "archive.json").read_text())
    assert [n["adapter"] for n in archive["nodes"]] == [None, "gen_2/adapter", "gen_2/adapter"]
    decision = json.loads((root / "gen_2/decision.json").read_text())
    assert decision["rl_algorithm"] == "grpo" and decision["algorithm_fits"][0]["score"] == 0.9


def test_a_failed_training_job_is_a_failed_step_not_a_dead_run(
    sia_pm, register_plugin, tiny_task_dir, tmp_path
):
    register_plugin(TrainingPlugins(), "training")
    store, rows = run(sia_pm, tiny_task_dir, tmp_path, fail=True)
    result = json.loads((store.root / "gen_2/train_result.json").read_text())
    assert result["status"] == "failed" and "the GPU fell off" in result["error"]
    assert [r.status for r in rows] == ["done", "failed", "done"]
    assert_refused(store.root, "the GPU fell off")
    assert rows[1].dev == 0.0  # still the base model
    calls = json.loads((store.root / "gen_2/agent_execution.json").read_text())["calls"]
    assert {c["adapter"] for c in calls} == {None}


def assert_refused(root: Path, why: str) -> None:
    """A failed weights step is said everywhere and never becomes the incumbent."""
    gate = [
        json.loads(line)["data"]
        for line in (root / "events.jsonl").read_text().splitlines()
        if '"gate"' in line and '"step_finished"' in line
    ][1]
    assert gate["accepted"] is False and gate["reason"].startswith("the weights update failed")
    assert why in gate["reason"] and gate["node"]["status"] == "failed"
    decision = json.loads((root / "gen_2/decision.json").read_text())
    assert any("the weights update failed" in n and why in n for n in decision["notes"])
    assert "the weights update failed" in (root / "gen_2/improvement.md").read_text()
    assert json.loads((root / "archive.json").read_text())["incumbent"] == 1


def test_a_weights_step_that_trained_on_nothing_is_refused_even_when_dev_rises(
    sia_pm, register_plugin, tiny_task_dir, tmp_path
):
    """The executor says ok and serves an adapter (dev rises to 1.0 on it), but its rollouts
    made no model call: nothing was learned, so the gate keeps the incumbent."""
    register_plugin(TrainingPlugins(), "training")
    store, rows = run(sia_pm, tiny_task_dir, tmp_path, tokens=0)
    result = json.loads((store.root / "gen_2/train_result.json").read_text())
    assert result["status"] == "failed" and "trained on 0 tokens" in result["error"]
    assert [r.status for r in rows] == ["done", "failed", "done"]
    assert_refused(store.root, "trained on 0 tokens")
    assert rows[2].parent == 1  # the next generation is made from the incumbent


def test_a_real_update_is_still_accepted(sia_pm, register_plugin, tiny_task_dir, tmp_path):
    register_plugin(TrainingPlugins(), "training")
    store, rows = run(sia_pm, tiny_task_dir, tmp_path, tokens=12)
    assert [r.status for r in rows] == ["done", "done", "done"]
    assert rows[1].dev == 1.0 and rows[1].incumbent  # gen 3 only ties it
    assert json.loads((store.root / "archive.json").read_text())["incumbent"] == 2
