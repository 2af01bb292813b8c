"""The local backend in a real run: the main job's model, started and stopped by sia."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.core.test_resume import install_killer


def test_killed_run_leaves_no_model_server(tmp_path: Path) -> None:
    """sia starts the llama.cpp server, calls it through the gateway, is SIGKILLed mid-run,
    and the server dies with it."""
    site = tmp_path / "site"
    site.mkdir()
    install_killer(site)
    dump = tmp_path / "children.txt"
    runs = tmp_path / "runs"
    env = {
        **os.environ,
        "PYTHONPATH": str(site),
        "SIA_TEST_KILL_AT": "item_finished:1:3",
        "SIA_TEST_KILL_DUMP": str(dump),
    }
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "sia_core.surface.cli",
            "--task",
            "tiny-add",
            "--backend",
            "local",
            "--max_gen",
            "1",
            "--runs-dir",
            str(runs),
            "--run_id",
            "1",
            "--parallel",
            "1",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    servers = [line for line in dump.read_text().splitlines() if "llama_cpp.server" in line]
    assert len(servers) == 1, dump.read_text()
    pid = int(servers[0].split()[0])
    deadline = time.monotonic() + 120  # a hang guard
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not Path(f"/proc/{pid}").exists(), "the model server outlived the run"
    # the calls before the kill went to the real model through the gateway
    log = (runs / "run_1/local_model_server.log").read_text(errors="replace")
    assert "chat/completions" in log or "llama_perf" in log or "prompt eval" in log
    assert json.loads((runs / "run_1/run.json").read_text())["status"] == "running"
