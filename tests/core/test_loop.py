"""The generation loop end to end with the scripted backend and the real process sandbox."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import attrs
import pytest

from sia_core import hookimpl
from sia_core.contracts.config import RunConfig
from sia_core.contracts.records import AlgorithmFit, AlgorithmSpec, ExecutorSpec
from sia_core.loop import Loop
from sia_core.machinery.runstore import RunStore

DATA = Path(__file__).parent / "data"

#: gen 2 adds the numbers itself (better), gen 3 answers 0 (worse), gen 4 stops
SCRIPT = {
    "meta": {"scaffold": "reference"},
    "feedback": {
        "2": {"lever": "harness", "scaffold": "calc_scaffold.py", "rationale": "compute the sum"},
        "3": {"lever": "harness", "scaffold": "zero_scaffold.py", "rationale": "try zero"},
        "4": {"lever": "stop", "rationale": "good enough"},
    },
    "task_model": {"name": "scripted-echo"},
}


def write_script(tmp_path: Path, script: dict[str, Any] = SCRIPT) -> Path:
    folder = tmp_path / "script"
    folder.mkdir(exist_ok=True)
    for f in DATA.glob("*_scaffold.py"):
        shutil.copy(f, folder / f.name)
    path = folder / "script.json"
    path.write_text(json.dumps(script))
    return path


def make_config(task_dir: Path, script: Path, **kw: Any) -> RunConfig:
    kw.setdefault("test_eval", "every")
    return RunConfig(
        task="tiny-add",
        task_dir=str(task_dir),
        backend="scripted",
        backend_settings={"script": str(script)},
        sandbox="process",
        **kw,
    )


def run_loop(sia_pm, task_dir: Path, script: Path, runs: Path, run_id: str = "1", **kw: Any):
    store = RunStore.open(runs, run_id, create=True)
    rows = Loop(make_config(task_dir, script, **kw), store, sia_pm).run()
    return store, rows


def test_three_generations_write_every_artifact_and_gate(sia_pm, tiny_task_dir, tmp_path):
    store, rows = run_loop(
        sia_pm, tiny_task_dir, write_script(tmp_path), tmp_path / "runs", max_gen=3
    )
    root = store.root
    for name in ("run.json", "events.jsonl", "context.md", "archive.json"):
        assert (root / name).is_file(), name
    for gen in (1, 2, 3):
        g = root / f"gen_{gen}"
        for name in (
            "target_agent.py",
            "diff.patch",
            "decision.json",
            "improvement.md",
            "agent_execution.json",
            "metrics.json",
            "agent_transcript.json",
            "sealed/metrics_test.json",
            "sealed/agent_execution_test.json",
        ):
            assert (g / name).is_file(), f"gen_{gen}/{name}"
    dev = {r.gen: r.dev for r in rows}
    assert dev[1] < 0.5  # echoing model: the reference parses the first number of the question
    assert dev[2] == 1.0
    assert dev[3] == 0.0
    assert [r.incumbent for r in rows] == [False, True, False]
    archive = json.loads((root / "archive.json").read_text())
    assert archive["incumbent"] == 2
    # gen 3 was made from the incumbent at the time (gen 2), not blindly from the last
    assert json.loads((root / "gen_3/decision.json").read_text())["parent_gen"] == 2
    assert "+    a, b = map(int" in (root / "gen_2/diff.patch").read_text()
    run_json = json.loads((root / "run.json").read_text())
    assert run_json["status"] == "finished" and run_json["incumbent"] == 2
    # gen 1 used the task model for real through the gateway
    execution = json.loads((root / "gen_1/agent_execution.json").read_text())
    assert execution["calls"] and all(c["item_id"].startswith("dev-") for c in execution["calls"])
    assert execution["usage"]["calls"] == 24  # 12 dev + 12 test items, one call each
    # test scores are sealed: no agent-visible file mentions them
    assert (
        "test" not in json.loads((root / "gen_2/metrics.json").read_text())
        or json.loads((root / "gen_2/metrics.json").read_text())["test"] is None
    )
    assert "sealed" not in (root / "context.md").read_text()


def test_stop_decision_ends_the_run(sia_pm, tiny_task_dir, tmp_path):
    store, rows = run_loop(
        sia_pm, tiny_task_dir, write_script(tmp_path), tmp_path / "runs", max_gen=6
    )
    assert [r.gen for r in rows if r.status == "done"] == [1, 2, 3]
    assert rows[-1].lever == "stop" and rows[-1].status == "stopped"
    run_json = json.loads((store.root / "run.json").read_text())
    assert run_json["status"] == "stopped"
    assert "decided to stop" in run_json["stop_reason"]
    assert not (store.root / "gen_5").exists()


def _decisions(root: Path) -> list[dict[str, Any]]:
    out = []
    for gen in sorted(int(p.name[4:]) for p in root.glob("gen_*")):
        d = json.loads((root / f"gen_{gen}/decision.json").read_text())
        out.append(d)
    return out


def test_test_labels_never_change_a_decision(sia_pm, tiny_task_dir, tmp_path):
    """Perturbing the sealed test labels changes test scores and nothing else."""
    script = write_script(tmp_path)
    store_a, rows_a = run_loop(sia_pm, tiny_task_dir, script, tmp_path / "runs_a", max_gen=4)
    labels = tiny_task_dir / "data/private/test_labels.jsonl"
    perturbed = []
    for line in labels.read_text().splitlines():
        row = json.loads(line)
        row["label"] = int(row["label"]) + 1000
        perturbed.append(json.dumps(row))
    labels.write_text("\n".join(perturbed) + "\n")
    store_b, rows_b = run_loop(sia_pm, tiny_task_dir, script, tmp_path / "runs_b", max_gen=4)
    assert [r.test for r in rows_a] != [r.test for r in rows_b]
    assert all(r.test == 0.0 for r in rows_b if r.test is not None)

    def strip(rows):
        return [attrs.evolve(r, test=None, seconds=0) for r in rows]

    def events(store):
        return [
            (e.type, e.gen, {k: v for k, v in e.data.items() if k != "seconds"})
            for e in store.events
        ]

    assert strip(rows_a) == strip(rows_b)
    assert _decisions(store_a.root) == _decisions(store_b.root)
    assert (store_a.root / "context.md").read_text() == (store_b.root / "context.md").read_text()
    assert events(store_a) == events(store_b)


def test_feedback_failure_and_bad_code_keep_the_parent(sia_pm, tiny_task_dir, tmp_path):
    script = write_script(
        tmp_path,
        {
            "meta": {"scaffold": "reference"},
            "feedback": {
                "2": {"fail": "provider returned 500"},
                "3": {
                    "lever": "harness",
                    "scaffold": {"text": "def solve(item, ctx):\n  return (\n"},
                    "rationale": "broken",
                },
            },
        },
    )
    store, rows = run_loop(sia_pm, tiny_task_dir, script, tmp_path / "runs", max_gen=3)
    root = store.root
    ref = (root / "gen_1/target_agent.py").read_text()
    d2 = json.loads((root / "gen_2/decision.json").read_text())
    assert d2["source"] == "core" and "provider returned 500" in d2["rationale"]
    assert (root / "gen_2/target_agent.py").read_text() == ref
    d3 = json.loads((root / "gen_3/decision.json").read_text())
    assert any("syntax error" in n for n in d3["notes"])
    assert (root / "gen_3/rejected_target_agent.py").exists()
    assert (root / "gen_3/target_agent.py").read_text() == ref
    assert all(r.status == "done" for r in rows)


def test_crashing_scaffold_scores_wrong_and_the_loop_goes_on(sia_pm, tiny_task_dir, tmp_path):
    crash = "def solve(item, ctx):\n    if item['id'].endswith('1'):\n        raise ValueError('bad item')\n    import re\n    a, b = map(int, re.findall(r'\\d+', item['input'])[:2])\n    return a + b\n"
    script = write_script(tmp_path, {"meta": {"scaffold": {"text": crash}}})
    store, _ = run_loop(sia_pm, tiny_task_dir, script, tmp_path / "runs", max_gen=1)
    metrics = json.loads((store.root / "gen_1/metrics.json").read_text())
    failed = [
        i
        for i in json.loads((store.root / "gen_1/agent_execution.json").read_text())["items"]
        if i["status"] == "error"
    ]
    assert failed and all("bad item" in i["error"] for i in failed)
    n = metrics["dev"]["n_items"]
    assert metrics["dev"]["score"] == pytest.approx((n - len(failed)) / n)  # divides by all items


def test_weights_lever_without_a_trainer_falls_back_to_harness(sia_pm, tiny_task_dir, tmp_path):
    script = write_script(
        tmp_path,
        {
            "feedback": {"2": {"lever": "weights", "rationale": "stalled"}},
            "task_model": {"trainable": True},
        },
    )
    store, _ = run_loop(sia_pm, tiny_task_dir, script, tmp_path / "runs", max_gen=2)
    d2 = json.loads((store.root / "gen_2/decision.json").read_text())
    assert d2["lever"] == "harness" and d2["proposed_lever"] == "weights"
    assert any("no RL algorithm plugin" in n for n in d2["notes"])


class _Objectives:
    """Two fake RL objectives and an executor, registered as a plugin object."""

    @hookimpl
    def sia_rl_algorithms(self):
        yield AlgorithmSpec(name="dense", fit=f"{__name__}:fit_dense", trainer="x:y")
        yield AlgorithmSpec(name="sparse", fit=f"{__name__}:fit_sparse", trainer="x:y")

    @hookimpl
    def sia_executors(self):
        yield ExecutorSpec(name="fake", factory="x:y")


def fit_dense(stats):
    return AlgorithmFit(name="dense", score=stats.step_reward_density, reason="dense step rewards")


def fit_sparse(stats):
    return AlgorithmFit(name="sparse", score=0.8 if stats.binary else 0.1, reason="binary rewards")


def test_api_only_task_model_stays_on_harness(sia_pm, register_plugin, tiny_task_dir, tmp_path):
    register_plugin(_Objectives(), "objectives")
    script = write_script(tmp_path, {"feedback": {"2": {"lever": "weights", "rationale": "x"}}})
    store, _ = run_loop(sia_pm, tiny_task_dir, script, tmp_path / "runs", max_gen=2)
    d2 = json.loads((store.root / "gen_2/decision.json").read_text())
    assert d2["lever"] == "harness"
    assert any("not trainable" in n for n in d2["notes"])


def test_lever_override_and_objective_choice_are_recorded(
    sia_pm, register_plugin, tiny_task_dir, tmp_path, monkeypatch
):
    """--lever weights with a trainable model picks the objective by reward shape."""
    register_plugin(_Objectives(), "objectives")
    # the training step belongs to the sia-train plugin; here it only has to be reached
    monkeypatch.setattr(Loop, "_train", lambda self, gen: (None, {"adapter": None}))
    script = write_script(tmp_path, {"task_model": {"trainable": True}})
    store, _ = run_loop(
        sia_pm, tiny_task_dir, script, tmp_path / "runs", max_gen=2, lever="weights"
    )
    d2 = json.loads((store.root / "gen_2/decision.json").read_text())
    assert d2["lever"] == "weights" and d2["source"] == "override"
    assert d2["rl_algorithm"] == "sparse"
    assert {f["name"] for f in d2["algorithm_fits"]} == {"dense", "sparse"}
    assert d2["reward_stats"]["binary"] is True
    assert any(n.startswith("RL objective sparse") for n in d2["notes"])
    assert any(e.type == "step_finished" and e.data["step"] == "train" for e in store.events)


def test_rerun_of_finished_generations_redoes_nothing(sia_pm, tiny_task_dir, tmp_path):
    script = write_script(tmp_path)
    store, _ = run_loop(sia_pm, tiny_task_dir, script, tmp_path / "runs", max_gen=2)
    n_events = len(store.events)
    store2 = RunStore.open(tmp_path / "runs", "1")
    rows = Loop(make_config(tiny_task_dir, script, max_gen=3), store2, sia_pm).run()
    steps = [(e.gen, e.data["step"]) for e in store2.events if e.type == "step_finished"]
    assert len(steps) == len(set(steps))  # every step of every generation ran exactly once
    assert [r.gen for r in rows] == [1, 2, 3]
    assert len(store2.events) > n_events


def test_token_budget_stops_cleanly(sia_pm, tiny_task_dir, tmp_path):
    script = write_script(tmp_path)
    store, rows = run_loop(
        sia_pm, tiny_task_dir, script, tmp_path / "runs", max_gen=3, max_run_tokens=10
    )
    assert [r.gen for r in rows] == [1]
    run_json = json.loads((store.root / "run.json").read_text())
    assert run_json["status"] == "stopped" and "token budget" in run_json["stop_reason"]


def test_per_generation_call_budget_refuses_extra_calls(sia_pm, tiny_task_dir, tmp_path):
    script = write_script(tmp_path)
    store, _ = run_loop(
        sia_pm, tiny_task_dir, script, tmp_path / "runs", max_gen=1, max_calls_per_gen=5, parallel=1
    )
    execution = json.loads((store.root / "gen_1/agent_execution.json").read_text())
    statuses = [c["status"] for c in execution["calls"]]
    assert statuses.count("ok") == 5 and "over_budget" in statuses
