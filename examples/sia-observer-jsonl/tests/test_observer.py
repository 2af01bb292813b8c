"""The example observer (sia-observer-jsonl), tested as a third party would: installed, then a real
`sia` run with `SIA_EVENTS_JSONL` set."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


def test_example_observer_plugin_sees_every_logged_event(tmp_path: Path) -> None:
    out = tmp_path / "events.jsonl"
    env = {**os.environ, "SIA_EVENTS_JSONL": str(out)}
    listed = subprocess.run(
        [sys.executable, "-m", "sia_core.surface.cli", "plugins", "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    plugin = next(p for p in json.loads(listed.stdout)["plugins"] if p["name"] == "observer-jsonl")
    assert plugin["distribution"] == "sia-observer-jsonl" and plugin["hooks"] == ["sia_on_event"]
    runs = tmp_path / "runs"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "sia_core.surface.cli",
            "--task",
            "tiny-add",
            "--max_gen",
            "2",
            "--runs-dir",
            str(runs),
            "--run_id",
            "1",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    seen = [json.loads(line) for line in out.read_text().splitlines()]
    logged = [json.loads(line) for line in (runs / "run_1/events.jsonl").read_text().splitlines()]
    # the observer also sees progress-only events (step_started, item_finished) ...
    assert {e["type"] for e in seen} >= {"step_started", "item_finished"}
    # ... and every logged event, identical and in order
    assert [e for e in seen if e["seq"] > 0] == logged
