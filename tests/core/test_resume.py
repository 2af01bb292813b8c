"""SIGKILL the orchestrator at many points; `sia resume` reaches the same final state."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from .test_loop import write_script
from .test_plugins import make_fake_dist

DATA = Path(__file__).parent / "data"


def install_killer(site: Path) -> None:
    source = (DATA / "killer_plugin.py").read_text()
    make_fake_dist(site, "sia-test-killer", "test-killer", "sia_test_killer", source)


def run_args(script: Path, runs: Path, max_gen: int) -> list[str]:
    return [
        "--task",
        "tiny-add",
        "--max_gen",
        str(max_gen),
        "--run_id",
        "1",
        "--backend",
        "scripted",
        "--backend-opt",
        f"script={script}",
        "--runs-dir",
        str(runs),
        "--test-eval",
        "every",
    ]


def sia(args: list[str], site: Path, kill_at: str = "") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(site), "SIA_TEST_KILL_AT": kill_at}
    return subprocess.run(
        [sys.executable, "-m", "sia_core.surface.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


def final_state(root: Path) -> dict[str, Any]:
    """Everything a run decided and scored, without timings."""
    state: dict[str, Any] = {"archive": json.loads((root / "archive.json").read_text())}
    state["context"] = (root / "context.md").read_text()
    state["status"] = json.loads((root / "run.json").read_text())["status"]
    for g in sorted(root.glob("gen_*")):
        metrics = json.loads((g / "metrics.json").read_text())
        metrics.pop("seconds")
        execution = json.loads((g / "agent_execution.json").read_text())
        state[g.name] = {
            "scaffold": (g / "target_agent.py").read_text(),
            "diff": (g / "diff.patch").read_text(),
            "decision": json.loads((g / "decision.json").read_text()),
            "improvement": (g / "improvement.md").read_text(),
            "metrics": metrics,
            "test": json.loads((g / "sealed/metrics_test.json").read_text()),
            "answers": execution["answers"],
            "statuses": {i["item_id"]: i["status"] for i in execution["items"]},
        }
    return state


KILL_POINTS = [
    "step_finished:1:propose",  # after the Meta step
    "item_finished:1:5",  # in the middle of the scaffold run (workers are killed with it)
    "step_finished:2:propose",  # after a Feedback step
    "step_finished:2:score",  # scored, not yet gated
    "step_finished:3:gate",  # gated, gen_finished not yet written
]


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    base = tmp_path_factory.mktemp("ref")
    site = base / "site"
    site.mkdir()
    install_killer(site)
    script = write_script(base)
    runs = base / "runs"
    proc = sia(
        run_args(script, runs, max_gen=3),
        site,
    )
    assert proc.returncode == 0, proc.stderr
    return final_state(runs / "run_1"), script


@pytest.mark.slow
@pytest.mark.parametrize("kill_at", KILL_POINTS)
def test_sigkill_then_resume_equals_uninterrupted(kill_at, reference, tmp_path):
    expected, script = reference
    site = tmp_path / "site"
    site.mkdir()
    install_killer(site)
    runs = tmp_path / "runs"
    args = run_args(script, runs, max_gen=3)
    killed = sia(args, site, kill_at=kill_at)
    assert killed.returncode == -signal.SIGKILL, (kill_at, killed.stderr)
    status = json.loads(sia(["show", "1", "--json", "--runs-dir", str(runs)], site).stdout)
    assert status["status"] == "interrupted"
    resumed = sia(["resume", "1", "--runs-dir", str(runs)], site)
    assert resumed.returncode == 0, resumed.stderr
    assert final_state(runs / "run_1") == expected
    events = [json.loads(x) for x in (runs / "run_1/events.jsonl").read_text().splitlines()]
    steps = [(e["gen"], e["data"]["step"]) for e in events if e["type"] == "step_finished"]
    assert len(steps) == len(set(steps)), "a finished step was redone"
    # no scaffold worker survived the kill
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert str(runs) not in ps


def test_truncated_event_line_is_dropped(reference, tmp_path):
    """A crash that cut the last line of events.jsonl short loses only that line."""
    _, script = reference
    site = tmp_path / "site"
    site.mkdir()
    runs = tmp_path / "runs"
    args = run_args(script, runs, max_gen=2)
    assert sia(args, site).returncode == 0
    log = runs / "run_1/events.jsonl"
    lines = log.read_text().splitlines(keepends=True)
    log.write_text("".join(lines[:-1]) + lines[-1][: len(lines[-1]) // 2])
    proc = sia(["resume", "1", "--runs-dir", str(runs)], site)
    assert proc.returncode == 0, proc.stderr
    assert json.loads((runs / "run_1/run.json").read_text())["status"] == "finished"


def test_corrupt_artifact_is_one_clear_line(reference, tmp_path):
    _, script = reference
    site = tmp_path / "site"
    site.mkdir()
    runs = tmp_path / "runs"
    args = run_args(script, runs, max_gen=1)
    assert sia(args, site).returncode == 0
    (runs / "run_1/gen_1/metrics.json").write_text("{ not json")
    proc = sia(["resume", "1", "--runs-dir", str(runs), "--max_gen", "2"], site)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1].startswith("sia: error:")
    assert "metrics.json is corrupt" in proc.stderr
