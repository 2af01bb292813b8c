"""What the fault-injection tests share: a real ``sia`` subprocess, run state to compare."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.core.test_resume import final_state, run_args

__all__ = ["events", "final_state", "last_line", "run_args", "sia", "stale_temps"]


def sia(
    args: list[str], *, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """``python -m sia_core.surface.cli ARGS`` in a fresh process (``env`` added to this one's)."""
    return subprocess.run(
        [sys.executable, "-m", "sia_core.surface.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "SIA_TEST_FAULT": "", **(env or {})},
        timeout=timeout,
    )


def events(root: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in (root / "events.jsonl").read_text().splitlines() if x]


def stale_temps(root: Path) -> list[Path]:
    """Temporary files of atomic writes left in the run folder (outside scaffold work dirs)."""
    return [p for p in root.rglob(".*.tmp") if "work" not in p.relative_to(root).parts]


def last_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    return lines[-1] if lines else ""
