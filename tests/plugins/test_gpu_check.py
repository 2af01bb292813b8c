"""benchmarks/gpu_check.py's CPU dry run: the script the GPU check runs, on a tiny config.

The GPU run itself (SmolLM2-135M's shape and a ~1B Llama on an H200) is still to do: no GPU was
lent here (docs/training.md). This keeps the script working: both trainers take their steps on
a random-weight model built from a config and a tokenizer made on the spot, offline.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks/gpu_check.py"


@pytest.mark.slow
def test_the_gpu_check_dry_run_times_both_trainers() -> None:
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--dry-run"],
        capture_output=True,
        text=True,
        timeout=900,
        env={"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| tiny |")]
    assert [r.split("|")[2].strip() for r in rows] == ["sia worker (GRPO)", "trl GRPOTrainer"]
    for row in rows:
        seconds, tokens_per_s = (float(x) for x in row.split("|")[3:5])
        assert seconds > 0 and tokens_per_s > 0
