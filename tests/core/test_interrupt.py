"""Ctrl-C during a run prints the exact command that continues it, and the same command run
again continues the run instead of starting a new one."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

SLOW = """
import re, time

def solve(item, ctx):
    time.sleep(0.5)
    a, b = map(int, re.findall(r"\\d+", item["input"])[:2])
    return a + b
"""


def command(tmp_path: Path) -> list[str]:
    (tmp_path / "slow_scaffold.py").write_text(SLOW)
    script = {"meta": {"scaffold": "slow_scaffold.py"}, "task_model": {"name": "echo"}}
    (tmp_path / "script.json").write_text(json.dumps(script))
    return [
        *(sys.executable, "-m", "sia_core.surface.cli", "--task", "tiny-add", "--max_gen", "1"),
        *("--backend", "scripted", "--backend-opt", f"script={tmp_path / 'script.json'}"),
        *("--sandbox", "process", "--parallel", "1", "--runs-dir", str(tmp_path / "runs")),
    ]


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_prints_the_resume_command_and_the_same_command_continues(tmp_path: Path) -> None:
    cmd = command(tmp_path)
    log = tmp_path / "stderr"
    with open(log, "w") as err:
        # as from a terminal: a test run started in the background by a shell without job
        # control inherits SIGINT ignored, and Python then keeps ignoring it
        proc = subprocess.Popen(
            cmd, stdout=subprocess.DEVNULL, stderr=err, preexec_fn=_default_sigint
        )
        deadline = time.monotonic() + 120  # a hang guard: the step starts within a second
        while "running the scaffold ..." not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)  # an item or two in
        proc.send_signal(signal.SIGINT)
        assert proc.wait(120) == 130
    text = log.read_text()
    runs = tmp_path / "runs"
    assert f"Continue with: sia resume 1 --runs-dir {runs.resolve()}" in text, text
    assert "Traceback" not in text
    assert "run interrupted (Ctrl-C): every finished step is kept" in text
    assert "run failed" not in text
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=os.environ)
    assert again.returncode == 0, again.stderr
    assert "sia: run 1 was interrupted; continuing it" in again.stderr
    assert sorted(p.name for p in runs.iterdir()) == ["run_1"]
    assert json.loads((runs / "run_1/run.json").read_text())["status"] == "finished"
    # a finished run is not continued: the same command starts run 2
    third = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=os.environ)
    assert third.returncode == 0 and "run 2" in third.stderr
