"""sia-trackers[mlflow]: a real run through the `sia` CLI (and `sia resume`) logged to a local
MLflow store, read back with MLflow's own client; opt-in, failure isolation, lazy import.

The run has a weights generation. Its training job is the one boundary faked here: a test
executor (installed as a plugin through a dist-info folder on PYTHONPATH) writes the training
worker's ``train_log.jsonl`` format and progress events instead of training a model.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import pytest

from sia_core.loop import Loop, RunConfig
from sia_core.machinery.runstore import RunStore
from sia_trackers import TrackedRun, TrackerObserver, requested, wanted

#: a test plugin: the executor writes the worker's log format; an RL objective for it to run
TESTKIT = '''
"""Training seam for tracker tests: writes sia-train's train_log.jsonl format, trains nothing."""
import json
from pathlib import Path

from sia_core import hookimpl
from sia_core.contracts.records import AlgorithmFit, AlgorithmSpec, ExecutorSpec, TrainResult

STEPS = 4


def curve(step):
    return {"reward_mean": 0.1 * step, "reward_std": 0.05 * step, "kl": 0.01 * step,
            "loss": 1.0 / step}


class LogWriter:
    name = "testkit"

    def available(self):
        return True, "tracker-test executor"

    def run(self, job, on_progress):
        out = Path(job.out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "adapter_config.json").write_text("{}")
        log = out / "train_log.jsonl"
        with open(log, "w") as f:
            for step in range(1, STEPS + 1):
                line = {"step": step, **curve(step), "reward_min": 0.0, "reward_max": 1.0,
                        "clip_frac": 0.0, "tokens": 100, "seconds": 0.5, "items": ["1"],
                        "stats": {"adv_abs_mean": 0.3}}
                f.write(json.dumps(line) + "\\n")
                if step <= 2:  # as the worker reports them live; steps 3-4 only in the log
                    on_progress({"event": "step", "step": step, "steps": STEPS,
                                 "checkpoint": False, "reward_mean": line["reward_mean"],
                                 "kl": line["kl"], "loss": line["loss"], "tokens": 100,
                                 "seconds": 0.5})
        return TrainResult(status="ok", adapter=str(out), log=str(log),
                           metrics={"steps": STEPS, "reward_first": 0.1, "reward_last": 0.4})


def fit(stats):
    return AlgorithmFit(name="testkit-rl", score=0.5, reason="tracker test")


@hookimpl
def sia_executors():
    yield ExecutorSpec(name="testkit", factory="sia_tracker_testkit:LogWriter")


@hookimpl
def sia_rl_algorithms():
    yield AlgorithmSpec(name="testkit-rl", fit="sia_tracker_testkit:fit", trainer="x:y")
'''

CALC = textwrap.dedent(
    """
    import re


    def solve(item, ctx):
        a, b = map(int, re.findall(r"\\d+", item["input"])[:2])
        return a + b
    """
)

#: gen 1 the reference, gen 2 trains the weights, gen 3 computes the sum (a new incumbent)
SCRIPT = {
    "meta": {"scaffold": "reference"},
    "feedback": {
        "2": {"lever": "weights", "rl_algorithm": "testkit-rl", "rationale": "train"},
        "3": {"lever": "harness", "scaffold": {"text": CALC}, "rationale": "compute it"},
    },
    "task_model": {"name": "scripted-echo", "trainable": True},
}
STEPS = 4
GEN_FILES = {"target_agent.py", "diff.patch", "improvement.md", "decision.json"}


def install_testkit(tmp_path: Path) -> Path:
    """A folder that, on sys.path, is an installed plugin distribution (entry point included)."""
    site = tmp_path / "site"
    dist = site / "sia_tracker_testkit-0.0.dist-info"
    dist.mkdir(parents=True)
    (site / "sia_tracker_testkit.py").write_text(TESTKIT, encoding="utf-8")
    (dist / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: sia-tracker-testkit\nVersion: 0.0\n", encoding="utf-8"
    )
    (dist / "entry_points.txt").write_text(
        "[sia]\ntestkit = sia_tracker_testkit\n", encoding="utf-8"
    )
    return site


def register_testkit(register_plugin: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Register the test executor in this process (the CLI test installs it instead)."""
    monkeypatch.syspath_prepend(str(install_testkit(tmp_path)))
    import sia_tracker_testkit

    register_plugin(sia_tracker_testkit, "testkit")


def write_script(tmp_path: Path) -> Path:
    path = tmp_path / "script.json"
    path.write_text(json.dumps(SCRIPT), encoding="utf-8")
    return path


def sia(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(
        [sys.executable, "-m", "sia_core.surface.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return out


def read_events(run_dir: Path) -> list[dict[str, Any]]:
    lines = (run_dir / "events.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(x) for x in lines]


@pytest.mark.slow
def test_mlflow_logs_a_cli_run_and_its_resume_to_one_mlflow_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, runs = tmp_path / "mlruns", tmp_path / "runs"
    env = {
        **os.environ,
        "PYTHONPATH": str(install_testkit(tmp_path)),
        "SIA_LOAD_PLUGINS": "tracker-mlflow,testkit",
        "SIA_TRACKERS": "mlflow",
        "MLFLOW_TRACKING_URI": f"file:{store}",
    }
    common = ["--runs-dir", str(runs)]
    first = sia(
        *("--task", "tiny-add", "--backend", "scripted", "--sandbox", "process"),
        *("--backend-opt", f"script={write_script(tmp_path)}", "--executor", "testkit"),
        *("--test-eval", "every", "--max_gen", "2", "--run_id", "1", *common),
        env=env,
    )
    assert "tracker mlflow logs to MLflow run" in first.stderr
    # the resume names no tracker: a run tracked once stays tracked, in the same MLflow run
    env.pop("SIA_TRACKERS")
    again = sia("resume", "1", "--max_gen", "3", *common, env=env)
    assert "tracker mlflow continues MLflow run" in again.stderr

    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    client = MlflowClient(tracking_uri=f"file:{store}")
    experiment = client.get_experiment_by_name("sia-tiny-add")
    assert experiment is not None
    (run,) = client.search_runs([experiment.experiment_id])
    rid, run_dir = run.info.run_id, runs / "run_1"
    state = json.loads((run_dir / "trackers" / "mlflow.json").read_text())
    assert state["backend"]["id"] == rid
    assert run.info.status == "FINISHED" and run.info.run_name == "tiny-add run 1"

    # params: the run config (max_gen may grow on resume, so it is a tag)
    params, tags = run.data.params, run.data.tags
    assert params["backend"] == "scripted" and params["sandbox"] == "process"
    assert params["executor"] == "testkit" and params["seed"] == "0"
    assert "max_gen" not in params and tags["sia.max_gen"] == "3"
    assert tags["sia.status"] == "finished" and tags["sia.incumbent_gen"] == "3"
    assert tags["gen_2.lever"] == "weights" and tags["gen_2.rl_algorithm"] == "testkit-rl"

    def history(key: str) -> list[tuple[int, float]]:
        return sorted((m.step, m.value) for m in client.get_metric_history(rid, key))

    # per generation: the dev score of each generation's metrics.json, the lever, best so far
    devs = {
        g: json.loads((run_dir / f"gen_{g}" / "metrics.json").read_text())["dev"]["score"]
        for g in (1, 2, 3)
    }
    assert history("dev_score") == [(g, devs[g]) for g in (1, 2, 3)]
    assert devs[3] == 1.0 > devs[1]
    assert history("lever") == [(1, 0.0), (2, 1.0), (3, 0.0)]
    assert history("best_dev_score")[-1] == (3, 1.0)
    assert [s for s, _ in history("time/gen_s")] == [1, 2, 3]
    assert [s for s, _ in history("llm_calls")] == [1, 2, 3]

    # training curves: every step once, live-logged steps 1-2 merged with the log's 3-4
    steps = list(range(1, STEPS + 1))
    for key, value in {"reward_mean": 0.1, "reward_std": 0.05, "kl": 0.01}.items():
        logged = history(f"train/{key}")
        assert [s for s, _ in logged] == steps, key
        assert [v for _, v in logged] == pytest.approx([value * s for s in steps]), key
    assert [v for _, v in history("train/loss")] == pytest.approx([1.0 / s for s in steps])
    assert history("train/gen") == [(s, 2.0) for s in steps]
    assert history("train_summary/reward_last") == [(2, 0.4)]

    # sealed test scores: sent once, only after the run's last step (test_eval=every wrote
    # them during generation 1 already)
    tests = {
        g: json.loads((run_dir / f"gen_{g}" / "sealed" / "metrics_test.json").read_text())
        for g in (1, 2, 3)
    }
    assert history("test_score") == [(g, tests[g]["score"]) for g in (1, 2, 3)]
    events = read_events(run_dir)
    last_gate_first_part = max(
        e["ts"]
        for e in events
        if e["type"] == "step_finished" and e["data"]["step"] == "gate" and e["gen"] == 2
    )
    sent = [m.timestamp for m in client.get_metric_history(rid, "test_score")]
    assert min(sent) >= int(last_gate_first_part * 1000)

    # cost: per generation from gen_N/cost.json and the run's totals from run.json
    cost_file = run_dir / "gen_1" / "cost.json"
    if cost_file.exists():
        tokens = json.loads(cost_file.read_text())["tokens"]
        assert history("cost/tokens")[0] == (1, tokens)
    run_cost = json.loads((run_dir / "run.json").read_text()).get("cost")
    if run_cost:
        assert history("run/tokens")[-1][1] == run_cost["tokens"]

    # artifacts: each generation's four files, the evolution log; nothing sealed or private
    top = {a.path for a in client.list_artifacts(rid)}
    assert top == {"context.md", "gen_1", "gen_2", "gen_3"}
    for g in (1, 2, 3):
        files = {Path(a.path).name for a in client.list_artifacts(rid, f"gen_{g}")}
        assert files == GEN_FILES
    local = client.download_artifacts(rid, "gen_2/decision.json", str(tmp_path / "dl"))
    assert Path(local).read_text() == (run_dir / "gen_2" / "decision.json").read_text()


def tiny_config(task_dir: Path, tmp_path: Path) -> RunConfig:
    return RunConfig(
        task="tiny-add",
        task_dir=str(task_dir),
        max_gen=1,
        backend="scripted",
        backend_settings={"script": str(write_script(tmp_path))},
        sandbox="process",
        test_eval="none",
    )


def test_a_failing_tracker_never_stops_the_run(
    sia_pm, register_plugin, tiny_task_dir, tmp_path, monkeypatch, capsys
) -> None:
    from sia_trackers.mlflow_tracker import MlflowTracker

    monkeypatch.setenv("SIA_TRACKERS", "mlflow")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "nosuchscheme://nowhere")
    register_plugin(TrackerObserver("mlflow", MlflowTracker), "tracker-mlflow")
    store = RunStore.open(tmp_path / "runs", "1", create=True)
    rows = Loop(tiny_config(tiny_task_dir, tmp_path), store, sia_pm).run()
    assert [r.status for r in rows] == ["done"]
    assert json.loads((store.root / "run.json").read_text())["status"] == "finished"
    err = capsys.readouterr().err
    assert err.count("tracker mlflow failed") == 1, err
    assert "the run goes on" in err


class Recorder:
    """A tracker backend that records what it is asked to log."""

    def __init__(self, opened: Callable[[TrackedRun], None] = lambda run: None) -> None:
        self.opened = opened
        self.calls: list[tuple[str, Any]] = []

    def start(self, run, previous):
        self.opened(run)
        self.calls.append(("start", previous))
        return {"id": "rec-1", "where": "memory"}, previous is not None

    def log_metrics(self, metrics, *, step, axis):
        self.calls.extend(("metric", (k, step)) for k in metrics)

    def __getattr__(self, name):
        return lambda *a, **k: self.calls.append((name, a))


def test_a_lagging_tracker_logs_each_training_step_once(
    sia_pm, register_plugin, tiny_task_dir, tmp_path, monkeypatch
) -> None:
    """The tracker's worker opens only after the weights generation has finished: the live
    progress events queued meanwhile and the step's train_log.jsonl still give each step once."""
    register_testkit(register_plugin, monkeypatch, tmp_path)

    def wait_for_training(run: TrackedRun) -> None:
        events = run.run_dir / "events.jsonl"
        deadline = time.monotonic() + 600  # a hang guard
        while '"step": "train"' not in events.read_text() and time.monotonic() < deadline:
            time.sleep(0.05)

    recorder = Recorder(wait_for_training)
    monkeypatch.setenv("SIA_TRACKERS", "recorder")
    register_plugin(TrackerObserver("recorder", lambda: recorder), "tracker-recorder")
    config = attrs.evolve(tiny_config(tiny_task_dir, tmp_path), max_gen=2, executor="testkit")
    Loop(config, RunStore.open(tmp_path / "runs", "1", create=True), sia_pm).run()
    metrics = [arg for kind, arg in recorder.calls if kind == "metric"]
    for key in ("train/reward_mean", "train/reward_std", "train/gen"):
        assert sorted(step for k, step in metrics if k == key) == [1, 2, 3, 4], key
    assert sorted(step for k, step in metrics if k == "dev_score") == [1, 2]
    assert recorder.calls[-1] == ("finish", ("finished",))


def test_trackers_are_opt_in(sia_pm, register_plugin, tiny_task_dir, tmp_path, monkeypatch):
    recorder = Recorder()
    monkeypatch.delenv("SIA_TRACKERS", raising=False)
    register_plugin(TrackerObserver("recorder", lambda: recorder), "tracker-recorder")
    store = RunStore.open(tmp_path / "runs", "1", create=True)
    Loop(tiny_config(tiny_task_dir, tmp_path), store, sia_pm).run()
    assert recorder.calls == [] and not (store.root / "trackers").exists()

    monkeypatch.setenv("SIA_TRACKERS", "none")
    assert requested() == set() and not wanted("recorder", store.root)
    monkeypatch.setenv("SIA_TRACKERS", " Recorder , wandb")
    assert requested() == {"recorder", "wandb"} and wanted("recorder", store.root)


def test_sia_help_imports_neither_mlflow_nor_wandb() -> None:
    code = (
        "import sys\nfrom sia_core.surface.cli import main\nfrom sia_core.machinery.plugins import "
        "get_plugin_manager\nmain(['--help'])\n"
        "names = set(get_plugin_manager().infos)\n"
        "print(sorted(n for n in names if n.startswith('tracker-')))\n"
        "print([m for m in ('mlflow', 'wandb') if m in sys.modules])"
    )
    env = {**os.environ, "SIA_LOAD_PLUGINS": "tracker-mlflow,tracker-wandb"}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env
    )
    assert out.returncode == 0, out.stderr
    loaded, heavy = out.stdout.strip().splitlines()[-2:]
    assert loaded == "['tracker-mlflow', 'tracker-wandb']"
    assert heavy == "[]"
