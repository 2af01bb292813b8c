"""benchmarks/bench_levers.py on a small budget: the variant task is valid, the arms run through
the real loop (local model, offline Feedback-Agent) and the comparison is printed.

The full run (six generations, 200 dev items, 30 training steps per weights generation) is
recorded in docs/levers.md; here two generations on 12 items keep the script working.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from sia_core.services.taskdir import load_task

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks/bench_levers.py"


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_bench_levers_runs_its_arms_and_prints_the_comparison(tmp_path: Path) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "SIA_CACHE_DIR": str(tmp_path / "cache")}
    proc = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--gens",
            "2",
            "--dev",
            "12",
            "--test",
            "12",
            "--arms",
            "harness,auto",
            "--keep",
            str(tmp_path / "bench"),
        ],
        capture_output=True,
        text=True,
        timeout=800,  # about 40 s idle
        env=env,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    task = load_task(tmp_path / "bench" / "task")
    assert task.name == "spaceship-cryo-levers"
    public = tmp_path / "bench" / "task" / "data" / "public"
    assert len((public / "dev.jsonl").read_text().splitlines()) == 12
    out = proc.stdout
    for arm in ("harness", "auto"):
        assert f"### arm `{arm}`" in out
        rows = [r for r in out.split(f"### arm `{arm}`")[1].split("###")[0].splitlines()]
        gens = [r for r in rows if re.match(r"\| [12] \|", r)]
        assert len(gens) == 2, rows
        assert all(re.search(r"\| done \| \d\.\d{3} \|", r) for r in gens), gens
    assert "- harness: pulled harness" in out
    last = out.strip().splitlines()[-1]
    assert re.fullmatch(r"W\+H vs H: [+-]\d\.\d{3} \(noise ±\d\.\d{3}\)", last), last
