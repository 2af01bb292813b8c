"""What runs inside the Modal container: the same ``python -m sia_train.worker`` as locally.

:func:`run_job` unpacks the job's files, runs the worker as a subprocess, yields each progress
line as ``{"progress": event}`` while it runs, and finally ``{"final": message}`` with the
worker's ``result.json`` and its output folder as tar.gz bytes (see
:func:`sia_executor_modal.jobpack.unpack_result`). Standard library + sia_core only.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from . import jobpack
from .jobpack import NOT_RETURNED, pack_dir, unpack_job

_TAIL_LINES = 40


def run_job(job_json: str, payload: bytes, python: str | None = None) -> Iterator[dict[str, Any]]:
    """Generator body of the Modal function (``remote_gen``); ``python`` runs the worker."""
    job = unpack_job(job_json, payload)
    out = Path(job.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    job_path = out / "job.json"
    job_path.write_text(job_json, encoding="utf-8")
    env = {
        **os.environ,
        "SIA_CACHE_DIR": str(
            jobpack.VOLUME_ROOT / "cache"
        ),  # GGUF conversions persist on the Volume
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        "TRANSFORMERS_VERBOSITY": "error",
        "PYTHONUNBUFFERED": "1",
    }
    lines: list[str] = []
    with open(out / "worker.log", "a", encoding="utf-8") as log:
        proc = subprocess.Popen(
            [python or sys.executable, "-m", "sia_train.worker", str(job_path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            env=env,
        )
        assert proc.stdout is not None
        for line in proc.stdout:
            log.write(line)
            log.flush()
            lines = [*lines[-_TAIL_LINES:], line.rstrip("\n")]
            stripped = line.strip()
            if stripped.startswith("{"):
                try:
                    event = json.loads(stripped)
                except ValueError:
                    continue
                if isinstance(event, dict) and "event" in event:
                    yield {"progress": event}
        rc = proc.wait()
    result_path = out / "result.json"
    _commit_volume()
    yield {
        "final": {
            "result": result_path.read_text(encoding="utf-8") if result_path.exists() else None,
            "out": pack_dir(out, NOT_RETURNED),
            "returncode": rc,
            "log_tail": "\n".join(lines[-_TAIL_LINES:]),
            "remote_out": str(out),
        }
    }


def _commit_volume() -> None:
    """Persist the Volume's changes now (checkpoints, conversions) rather than at exit."""
    volume_name = os.environ.get("SIA_MODAL_VOLUME")
    if not volume_name:
        return
    try:
        import modal

        modal.Volume.from_name(volume_name).commit()
    except Exception as exc:  # the result still goes back as bytes
        print(f"sia: volume commit failed: {exc}", file=sys.stderr)
