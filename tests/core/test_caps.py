"""Run caps through the `sia` CLI (in-process, real loop, sandbox and gateway): a cap stops the run
before the next spending step, a resume with the same cap says it is still over, and a resume
with a higher cap reaches the same final state as a run without the cap."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from sia_core.contracts.errors import SiaError
from sia_core.surface.cli import make_cli

from .test_ledger import SCRIPT, StubBackendPlugin, prices, stub  # noqa: F401 (fixtures)
from .test_loop import write_script
from .test_weights_seam import SCRIPT as WEIGHTS_SCRIPT
from .test_weights_seam import TrainingPlugins


def sia(pm, capsys: pytest.CaptureFixture[str], *args: str) -> str:
    """Run `sia ARGS` in this process; stdout + stderr."""
    make_cli(lambda: pm).main(args=list(args), prog_name="sia", standalone_mode=False)
    out = capsys.readouterr()
    return out.out + out.err


def final_state(root: Path) -> dict[str, Any]:
    """What a run decided, scored and spent (no timings)."""
    state: dict[str, Any] = {
        "archive": json.loads((root / "archive.json").read_text()),
        "context": (root / "context.md").read_text(),
        "status": json.loads((root / "run.json").read_text())["status"],
    }
    cost = json.loads((root / "run.json").read_text())["cost"]
    state["cost"] = {k: cost[k] for k in ("llm_calls", "tokens")}
    state["usd"] = round(cost["cost_usd"], 9)
    for g in sorted(root.glob("gen_*")):
        metrics = json.loads((g / "metrics.json").read_text())
        metrics.pop("seconds")
        test = g / "sealed/metrics_test.json"
        state[g.name] = {
            "scaffold": (g / "target_agent.py").read_text(),
            "decision": json.loads((g / "decision.json").read_text()),
            "metrics": metrics,
            "test": json.loads(test.read_text()) if test.exists() else None,
            "calls": json.loads((g / "cost.json").read_text())["llm_calls"],
        }
    return state


def events(root: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in (root / "events.jsonl").read_text().splitlines()]


def run_json(root: Path) -> dict[str, Any]:
    return json.loads((root / "run.json").read_text())


@pytest.fixture
def stub_pm(sia_pm, register_plugin):
    register_plugin(StubBackendPlugin(), "stub-http")
    return sia_pm


def test_usd_cap_stops_after_the_current_step_and_a_raised_cap_continues(
    stub_pm, capsys, tiny_task_dir, tmp_path, request
):
    server = request.getfixturevalue("stub")  # the loopback OpenAI stub, from test_ledger
    request.getfixturevalue("prices")
    script = write_script(tmp_path, SCRIPT)
    runs = tmp_path / "runs"
    base = (
        f"--task_dir {tiny_task_dir} --backend stub-http --backend-opt script={script} "
        f"--backend-opt url={server.url} --sandbox process --runs-dir {runs} --max-gen 3"
    ).split()
    out = sia(stub_pm, capsys, *base, "--run_id", "ref")
    assert "sia: cost estimate ~$" in out
    ref = runs / "run_ref"
    reference = final_state(ref)
    assert reference["status"] == "finished"
    # a cap that generation 2's Feedback step crosses: the run stops before gen 2's `run` step
    steps1 = json.loads((ref / "gen_1/cost.json").read_text())["by_step"]
    gen1 = steps1["propose"]["cost_usd"] + steps1["run"]["cost_usd"]  # its test step comes last
    fb2 = json.loads((ref / "gen_2/cost.json").read_text())["by_step"]["propose"]["cost_usd"]
    cap = round(gen1 + fb2 / 2, 6)
    out = sia(stub_pm, capsys, *base, "--run_id", "c", "--max-usd", str(cap))
    root = runs / "run_c"
    info = run_json(root)
    assert info["status"] == "stopped"
    assert info["stopped_by_cap"]["cap"] == "max_usd" and info["stopped_by_cap"]["limit"] == cap
    assert info["stopped_by_cap"]["used"] == pytest.approx(gen1 + fb2)
    assert info["caps"] == {"max_usd": cap, "max_tokens": None, "max_train_seconds": None}
    assert f"cost cap reached: --max-usd {cap:g} (spent $" in out
    stop = [e for e in events(root) if e["type"] == "run_stopped"]
    assert [(e["gen"], e["data"]["step"]) for e in stop] == [(2, "run")]
    steps = [(e["gen"], e["data"]["step"]) for e in events(root) if e["type"] == "step_finished"]
    assert steps[-1] == (2, "propose") and (1, "gate") in steps  # free steps of gen 1 finished
    assert not (root / "gen_2/metrics.json").exists()

    # the same cap: still over, nothing runs
    n_steps = len(steps)
    out = sia(stub_pm, capsys, "resume", "c", "--runs-dir", str(runs))
    assert "cost cap still reached: --max-usd" in out
    # the estimate on resume: what was spent + the measured cost per finished generation
    assert "sia: cost estimate ~$" in out and "per generation measured over 1 finished" in out
    assert run_json(root)["status"] == "stopped"
    assert len([e for e in events(root) if e["type"] == "step_finished"]) == n_steps

    # re-running the same command with a higher cap continues it (caps are not run identity)
    out = sia(stub_pm, capsys, *base, "--run_id", "c", "--max-usd", "100")
    assert "resuming it" in out
    state = final_state(root)
    assert state == {**reference, "usd": state["usd"]}
    assert state["usd"] == pytest.approx(reference["usd"])
    steps = [(e["gen"], e["data"]["step"]) for e in events(root) if e["type"] == "step_finished"]
    assert len(steps) == len(set(steps))  # no step ran twice
    assert run_json(root)["caps"]["max_usd"] == 100 and "stopped_by_cap" not in run_json(root)


def test_token_cap_alias_and_resume_with_max_tokens(stub_pm, capsys, tiny_task_dir, tmp_path):
    script = write_script(tmp_path)
    runs = tmp_path / "runs"
    args = (
        f"--task tiny-add --backend scripted --backend-opt script={script} --sandbox process "
        f"--runs-dir {runs} --run_id 1 --max-gen 2 --test-eval none"
    ).split()
    out = sia(stub_pm, capsys, *args, "--max-run-tokens", "10")
    assert "cost estimate" not in out  # the scripted model is free: no estimate line
    root = runs / "run_1"
    info = run_json(root)
    assert info["stopped_by_cap"]["cap"] == "max_tokens"
    assert "token budget reached: --max-tokens 10 (used" in info["stop_reason"]
    assert [e["data"]["step"] for e in events(root) if e["type"] == "run_stopped"] == ["propose"]
    sia(stub_pm, capsys, "resume", "1", "--runs-dir", str(runs), "--max-tokens", "100000")
    info = run_json(root)
    assert info["status"] == "finished" and info["caps"]["max_tokens"] == 100000
    assert sorted(info["cost"]["generations"]) == ["1", "2"]


def test_train_seconds_cap_stops_after_the_training_step(
    stub_pm, register_plugin, capsys, tiny_task_dir, tmp_path
):
    register_plugin(TrainingPlugins(), "training")
    script = write_script(tmp_path, WEIGHTS_SCRIPT)
    runs = tmp_path / "runs"
    args = (
        f"--task tiny-add --backend scripted --backend-opt script={script} --sandbox process "
        f"--runs-dir {runs} --max-gen 3"
    ).split()
    sia(stub_pm, capsys, *args, "--run_id", "ref")
    reference = final_state(runs / "run_ref")
    train = [
        json.loads(x)
        for x in (runs / "run_ref/ledger.jsonl").read_text().splitlines()
        if '"kind": "train"' in x
    ]
    assert [(t["gen"], t["status"], t["executor"]) for t in train] == [(2, "ok", "fake")]
    assert train[0]["device_seconds"] > 0

    sia(stub_pm, capsys, *args, "--run_id", "c", "--max-train-seconds", "0.000001")
    root = runs / "run_c"
    info = run_json(root)
    assert info["stopped_by_cap"]["cap"] == "max_train_seconds"
    stop = [e for e in events(root) if e["type"] == "run_stopped"]
    assert [(e["gen"], e["data"]["step"]) for e in stop] == [(2, "run")]
    sia(stub_pm, capsys, "resume", "c", "--runs-dir", str(runs), "--max-train-seconds", "1e6")
    state = final_state(root)
    reference["cost"] = state["cost"]  # equal call counts; train seconds are timings
    assert state == reference


def test_unknown_run_is_one_line_listing_the_runs(stub_pm, capsys, tmp_path):
    (tmp_path / "runs/run_4").mkdir(parents=True)
    with pytest.raises(SiaError, match=r"no run '9' in .* \(runs there: 4\)"):
        sia(stub_pm, capsys, "resume", "9", "--runs-dir", str(tmp_path / "runs"))
