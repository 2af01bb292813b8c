"""The ``local`` executor: the training worker as a subprocess of the orchestrator.

``run(job, on_progress)`` writes ``out_dir/job.json``, starts ``sys.executable -m
sia_train.worker out_dir/job.json`` in its own session (so a kill reaches its whole process
group) with ``PR_SET_PDEATHSIG`` (so it dies with the orchestrator), appends its stdout and
stderr to ``out_dir/worker.log``, forwards its JSON progress lines to ``on_progress`` and returns
the worker's ``result.json``. A crash, a nonzero exit, a timeout or a missing result is a
``TrainResult(status="failed")`` whose ``error`` ends with the worker's last log lines; ``run``
never raises for a failed job.

Importing this module imports neither torch nor transformers: ``available()`` only looks them up.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from sia_core.contracts.records import TrainJob, TrainResult, from_dict, to_json
from sia_core.machinery.fs import describe_exit, die_with_parent
from sia_core.machinery.runstore import atomic_write_text

log = logging.getLogger(__name__)

#: what the worker imports; ``available()`` checks them without importing them
WORKER_MODULES = ("torch", "transformers", "peft")
RESULT_NAME = "result.json"
JOB_NAME = "job.json"
WORKER_LOG = "worker.log"
_TAIL_LINES = 30
_TAIL_CHARS = 4000

#: quiet, offline-safe defaults for the worker's environment (the caller's values win)
WORKER_ENV = {
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "TRANSFORMERS_VERBOSITY": "error",
    "TOKENIZERS_PARALLELISM": "false",
    "PYTHONUNBUFFERED": "1",
}


def missing_modules(modules: tuple[str, ...] = WORKER_MODULES) -> list[str]:
    """The modules of ``modules`` that are not installed (found with ``find_spec``, not imported)."""
    missing = []
    for name in modules:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            missing.append(name)
    return missing


def progress_event(line: str | bytes) -> dict[str, Any] | None:
    """The progress event a worker output line carries (a JSON object with an ``event`` key,
    see :func:`sia_train.train_log.print_progress`), or ``None`` for any other line."""
    text = (line.decode("utf-8", "replace") if isinstance(line, bytes) else line).strip()
    if not text.startswith("{"):
        return None
    try:
        event = json.loads(text)
    except ValueError:
        return None
    return event if isinstance(event, dict) and "event" in event else None


def log_tail(path: Path, since: int = 0, lines: int = _TAIL_LINES) -> str:
    """The last ``lines`` lines of ``path`` written after byte ``since``."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(since, size - _TAIL_CHARS * 4))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(text.rstrip().splitlines()[-lines:])[-_TAIL_CHARS:]


def read_result(path: Path) -> TrainResult | None:
    """The worker's ``result.json``, or ``None`` when missing or unreadable."""
    try:
        return from_dict(TrainResult, json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
        if path.exists():
            log.warning("unreadable %s: %s", path, exc)
        return None
    except Exception as exc:  # cattrs structuring errors
        log.warning("unreadable %s: %s", path, exc)
        return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


class LocalExecutor:
    """Runs each training job in a local worker subprocess (CPU, or the local GPU if any).

    ``timeout_s`` (or the job setting ``train_timeout_s``) bounds one job's wall-clock time;
    ``env`` adds environment variables for the worker.
    """

    name = "local"

    def __init__(
        self,
        *,
        python: str | None = None,
        timeout_s: float | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.python = python or sys.executable
        self.timeout_s = timeout_s
        self.env = dict(env or {})

    def available(self) -> tuple[bool, str]:
        """Whether torch, transformers and peft are installed (nothing is imported)."""
        missing = missing_modules()
        if missing:
            return (
                False,
                f"{', '.join(missing)} not installed (pip install 'sia-train[torch]')",
            )
        return True, "torch, transformers and peft installed: trains in a local subprocess"

    def run(self, job: TrainJob, on_progress: Callable[[dict[str, Any]], None]) -> TrainResult:
        """Run ``job`` in a worker subprocess; a failed job comes back as ``status="failed"``."""
        out = Path(job.out_dir)
        log_path = out / WORKER_LOG
        try:
            out.mkdir(parents=True, exist_ok=True)
            job_path = out / JOB_NAME
            atomic_write_text(job_path, to_json(job, indent=2))
            (out / RESULT_NAME).unlink(missing_ok=True)  # only this attempt's result counts
            with open(log_path, "ab") as f:
                since = f.tell()
                f.write(f"=== sia-train worker, job {job.job_id}, {time.ctime()} ===\n".encode())
        except OSError as exc:
            return TrainResult(status="failed", error=f"cannot prepare {out}: {exc}")
        timeout = job.settings.get("train_timeout_s", self.timeout_s)
        env = {**os.environ, **WORKER_ENV, **self.env}
        argv = [self.python, "-m", "sia_train.worker", str(job_path.resolve())]
        nproc = int(job.settings.get("nproc") or 1)
        if nproc > 1:  # data parallel: torchrun starts the ranks (sia_train.distributed)
            argv[1:3] = [
                "-m",
                "torch.distributed.run",
                f"--nproc_per_node={nproc}",
                "--master_addr=127.0.0.1",
                f"--master_port={_free_port()}",
                "-m",
                "sia_train.worker",
            ]
        start = time.monotonic()
        try:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
                preexec_fn=die_with_parent(),
            )
        except OSError as exc:
            return TrainResult(status="failed", log=str(log_path), error=f"cannot start: {exc}")
        timed_out = threading.Event()
        timer = None
        if timeout:

            def expire() -> None:
                timed_out.set()
                _kill_group(proc)

            timer = threading.Timer(float(timeout), expire)
            timer.daemon = True
            timer.start()
        try:
            self._pump(proc, log_path, on_progress)
            rc = proc.wait()
        except BaseException:
            _kill_group(proc)
            proc.wait()
            raise
        finally:
            if timer is not None:
                timer.cancel()
        return self._result(job, out, log_path, since, rc, timed_out.is_set(), timeout, start)

    @staticmethod
    def _pump(
        proc: subprocess.Popen[bytes],
        log_path: Path,
        on_progress: Callable[[dict[str, Any]], None],
    ) -> None:
        """Copy the worker's output into its log; forward its progress lines."""
        assert proc.stdout is not None
        with open(log_path, "ab") as log_f:
            for raw in proc.stdout:
                log_f.write(raw)
                log_f.flush()
                event = progress_event(raw)
                if event is not None:
                    try:
                        on_progress(event)
                    except Exception:
                        log.exception("on_progress failed on %s", event.get("event"))

    @staticmethod
    def _result(
        job: TrainJob,
        out: Path,
        log_path: Path,
        since: int,
        rc: int | None,
        timed_out: bool,
        timeout: Any,
        start: float,
    ) -> TrainResult:
        result = read_result(out / RESULT_NAME)
        if rc == 0 and result is not None and result.status == "ok" and not timed_out:
            return result
        tail = log_tail(log_path, since)
        if timed_out:
            why = f"the training worker ran past train_timeout_s={timeout} and was killed"
        elif result is not None and result.error:
            why = result.error
        else:
            why = f"the training worker ended ({describe_exit(rc)})"
            if rc == 0:
                why += f" without writing {RESULT_NAME}"
        seconds = round(time.monotonic() - start, 2)
        return TrainResult(
            status="failed",
            adapter=None,
            log=str(log_path),
            metrics={**(result.metrics if result else {}), "seconds": seconds, "returncode": rc},
            error=f"{why}\n--- last lines of {log_path} ---\n{tail}" if tail else why,
        )


def make_local_executor() -> LocalExecutor:
    """Factory named by the ``local`` :class:`~sia_core.contracts.records.ExecutorSpec`."""
    return LocalExecutor()
