"""SIGKILL a real ``sia`` process while it writes an artifact or appends to events.jsonl.

The kill comes from runstore's ``SIA_TEST_FAULT`` point inside the real write (half a temporary
file written; a complete temporary file not yet renamed; half an event line appended), so the
run folder is exactly what a crash at that instant leaves. ``sia resume`` must then reach the
uninterrupted run's final state (the scripted backend is deterministic) and leave no temporary
file behind. SIGKILL at step boundaries is tests/core/test_resume.py; during training,
tests/plugins/test_weights_e2e.py.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import pytest

from tests.core.test_loop import write_script

from .common import events, final_state, run_args, sia, stale_temps

#: (fault, where): the first write of a path ending in ``where``, or the first such event
FAULTS = [
    ("kill-mid-write", "gen_1/target_agent.py"),
    ("kill-before-rename", "gen_1/decision.json"),
    ("kill-mid-write", "gen_2/agent_execution.json"),
    ("kill-before-rename", "gen_2/metrics.json"),
    ("kill-before-rename", "sealed/metrics_test.json"),
    ("kill-mid-write", "archive.json"),
    ("kill-before-rename", "context.md"),
    ("kill-mid-append", "step_finished:2:run"),
    ("kill-mid-append", "step_finished:3:gate"),
    ("kill-mid-append", "gen_finished:2"),
    ("kill-mid-append", "run_finished"),
]


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    base = tmp_path_factory.mktemp("ref")
    script = write_script(base)
    runs = base / "runs"
    proc = sia(run_args(script, runs, max_gen=3))
    assert proc.returncode == 0, proc.stderr
    return final_state(runs / "run_1"), script


@pytest.mark.slow
@pytest.mark.parametrize(("fault", "where"), FAULTS, ids=[f"{f}:{w}" for f, w in FAULTS])
def test_sigkill_while_writing_then_resume_equals_uninterrupted(
    fault: str, where: str, reference: tuple[dict[str, Any], Path], tmp_path: Path
) -> None:
    expected, script = reference
    runs = tmp_path / "runs"
    root = runs / "run_1"
    killed = sia(run_args(script, runs, max_gen=3), env={"SIA_TEST_FAULT": f"{fault}:{where}"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    # the crash happened exactly there
    if fault == "kill-mid-append":
        raw = (root / "events.jsonl").read_bytes()
        assert not raw.endswith(b"\n"), "no half-written line"
        tail = raw.rsplit(b"\n", 1)[-1]
        assert tail.startswith(b'{"type": "' + where.split(":")[0].encode())
    else:
        (temp,) = stale_temps(root)
        assert temp.name.startswith("." + Path(where).name + ".")
        target = root / where if "/" in where and not where.startswith("sealed") else None
        if target is not None:
            assert not target.exists(), "the unfinished write is not visible under its name"
    left = ((root / "events.jsonl").read_bytes(), stale_temps(root))
    status = json.loads(sia(["show", "1", "--json", "--runs-dir", str(runs)]).stdout)
    # a reader changes nothing (it may be watching a live run whose writes are in flight)
    assert ((root / "events.jsonl").read_bytes(), stale_temps(root)) == left
    # run.json says "finished" before the last event is appended
    assert status["status"] == ("finished" if where == "run_finished" else "interrupted")

    resumed = sia(["resume", "1", "--runs-dir", str(runs)])
    assert resumed.returncode == 0, resumed.stderr
    assert final_state(root) == expected
    assert stale_temps(root) == []
    log = events(root)
    steps = [(e["gen"], e["data"]["step"]) for e in log if e["type"] == "step_finished"]
    assert len(steps) == len(set(steps)), "a finished step was redone"
    assert [e["gen"] for e in log if e["type"] == "gen_finished"] == [1, 2, 3]
    assert [e["seq"] for e in log] == list(range(1, len(log) + 1))
