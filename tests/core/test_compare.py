"""`sia compare`, and the cost and time columns of `sia runs` / `sia show`, on real runs (the
scripted roles, a task model behind a loopback OpenAI stub with prices), read back by `sia` run
as a user runs it: in a subprocess, on a pipe (plain lines) and on a terminal (a table)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .test_caps import sia as sia_inproc
from .test_ledger import SCRIPT, StubBackendPlugin, prices, stub  # noqa: F401 (fixtures)
from .test_loop import write_script


def sia(*args: str, tty: bool = False) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TTY_COMPATIBLE": "1" if tty else "0", "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "sia_core.surface.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


@pytest.fixture
def two_runs(sia_pm, register_plugin, capsys, tiny_task_dir, tmp_path, request) -> Path:
    """Run 1: two generations; run 2: three (gen 2 asks the model and adds up)."""
    register_plugin(StubBackendPlugin(), "stub-http")
    server = request.getfixturevalue("stub")
    request.getfixturevalue("prices")
    runs = tmp_path / "runs"
    base = (
        f"--task_dir {tiny_task_dir} --backend stub-http --backend-opt script="
        f"{write_script(tmp_path, SCRIPT)} --backend-opt url={server.url} --sandbox process "
        f"--runs-dir {runs}"
    ).split()
    sia_inproc(sia_pm, capsys, *base, "--max-gen", "2", "--run_id", "1")
    sia_inproc(sia_pm, capsys, *base, "--max-gen", "3", "--run_id", "2")
    return runs


def test_compare_plain_json_and_table(two_runs: Path) -> None:
    runs = str(two_runs)
    data = json.loads(sia("compare", "1", "2", "--runs-dir", runs, "--json").stdout)
    a, b = data["a"], data["b"]
    assert [g["gen"] for g in data["generations"]] == [1, 2, 3]
    assert data["generations"][2]["a"] is None and data["generations"][2]["b"]["lever"] == "harness"
    assert a["levers"] == ["harness", "harness"] and len(b["levers"]) == 3
    assert b["best_dev"] == 1.0 and a["cost_usd"] > 0 and b["cost_usd"] > a["cost_usd"]
    assert set(b["test"]) == {"1", "2"}  # the first generation and the incumbent, sealed
    run2 = json.loads((two_runs / "run_2/run.json").read_text())["cost"]
    assert b["cost_usd"] == pytest.approx(run2["cost_usd"])
    assert data["generations"][1]["b"]["cost_usd"] == pytest.approx(
        run2["generations"]["2"]["cost_usd"]
    )

    plain = sia("compare", "1", "2", "--runs-dir", runs)
    assert plain.returncode == 0, plain.stderr
    lines = plain.stdout.splitlines()
    assert lines[0].split("\t") == [
        "gen",
        *[f"run {r} {c}" for r in "12" for c in ("lever", "dev", "cost $", "tokens", "time")],
    ]
    rows = [line.split("\t") for line in lines[1:4]]
    assert [r[0] for r in rows] == ["1", "2", "3"]
    assert rows[1][7] == "1.0000*" and rows[2][1:6] == [""] * 5
    assert int(rows[1][9]) == data["generations"][1]["b"]["tokens"] > 0
    assert float(rows[0][3]) == pytest.approx(data["generations"][0]["a"]["cost_usd"], abs=1e-4)
    assert lines[4].startswith("sealed test (report only): run 1: gen 1: ")
    assert lines[5] == data["summary"]
    assert data["summary"].startswith("run 2 vs run 1: best dev 1.0000 (gen 2) vs ")
    assert "3 vs 2 generations" in data["summary"]
    assert "┃" not in plain.stdout

    table = sia("compare", "1", "2", "--runs-dir", runs, tty=True)
    assert table.returncode == 0, table.stderr
    assert "run 1 vs run 2 (* incumbent)" in table.stdout and "┃" in table.stdout
    assert data["summary"] in table.stdout

    missing = sia("compare", "1", "7", "--runs-dir", runs)
    assert missing.returncode == 1
    last = missing.stderr.strip().splitlines()[-1]
    assert last == f"sia: error: no run '7' in {runs} (runs there: 1, 2)"


def test_runs_and_show_have_cost_and_time(two_runs: Path) -> None:
    runs = str(two_runs)
    listing = sia("runs", "--runs-dir", runs).stdout.splitlines()
    run2 = json.loads((two_runs / "run_2/run.json").read_text())["cost"]
    assert len(listing) == 2
    assert f"cost ${run2['cost_usd']:.4f} tokens {run2['tokens']} train 0s time " in listing[1]
    as_json = json.loads(sia("runs", "--runs-dir", runs, "--json").stdout)["runs"]
    assert as_json[1]["cost_usd"] == pytest.approx(run2["cost_usd"])
    assert as_json[1]["wall_seconds"] > 0 and as_json[1]["llm_calls"] == run2["llm_calls"]

    show = sia("show", "2", "--runs-dir", runs).stdout
    assert f"cost ${run2['cost_usd']:.4f}, {run2['tokens']} tokens" in show
    assert "tokens" in show and "cost $" in show
    gen2 = sia("show", "2", "2", "--runs-dir", runs).stdout
    g = run2["generations"]["2"]
    assert (
        f"  cost ${g['cost_usd']:.4f}: {g['tokens']} tokens in {g['llm_calls']} LLM calls" in gen2
    )
    # a run from before the ledger: its figures come from the artifacts, and nothing is written
    before = json.loads(sia("runs", "--runs-dir", runs, "--json").stdout)["runs"][1]
    (two_runs / "run_2/ledger.jsonl").unlink()
    after = json.loads(sia("runs", "--runs-dir", runs, "--json").stdout)["runs"][1]
    assert after == before and not (two_runs / "run_2/ledger.jsonl").exists()
