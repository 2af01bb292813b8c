"""The ``process`` sandbox (the core default) and :func:`run`, a whole program run to its end.

:class:`ProcessSandbox` isolates little: the command gets its own session, a clean environment
and rlimits, nothing more. It has no file-system or network isolation, and as root the kernel
does not enforce ``RLIMIT_NPROC``. A process that calls ``setsid()`` leaves the session;
``kill_tree`` still finds it through its parent while that parent lives, but an orphaned one
(double fork plus ``setsid``, a real daemon) escapes.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import attrs

from sia_core.contracts.sandbox import Limits, Sandbox, SandboxedProcess, rlimit_triples


class ProcessSandbox:
    """The core default: a plain child process with its own session, a clean env and rlimits.

    No file-system or network isolation (``ro_paths``/``rw_paths`` are accepted and ignored);
    ``RLIMIT_NPROC`` is not enforced for root; a process that calls ``setsid()`` and outlives
    its parent escapes ``kill_tree``.
    """

    name = "process"
    isolation = (
        "own session + rlimits (address space, file size, fds, cpu; nproc not enforced for root);"
        " no file-system or network isolation"
    )

    def available(self) -> tuple[bool, str]:
        """Works wherever ``/proc`` and POSIX sessions exist (Linux)."""
        if not sys.platform.startswith("linux"):
            return False, f"needs Linux (/proc and sessions); this is {sys.platform}"
        if not os.path.isdir("/proc/self"):
            return False, "/proc is not mounted"
        return True, "plain process with its own session and rlimits"

    def spawn(
        self,
        argv: Sequence[str],
        *,
        cwd: Path,
        env: Mapping[str, str],
        limits: Limits,
        ro_paths: Sequence[Path] = (),
        rw_paths: Sequence[Path] = (),
        stdin: Any = subprocess.PIPE,
        stdout: Any = subprocess.PIPE,
        stderr: Any = subprocess.PIPE,
        pass_fds: Sequence[int] = (),
    ) -> SandboxedProcess:
        """Start ``argv`` in a new session with exactly ``env`` and ``limits`` applied."""
        rlimits = rlimit_triples(limits)
        setrlimit = resource.setrlimit

        # runs in the forked child before exec: keep it to the bare C calls (no imports, locks)
        def _apply() -> None:
            for res, soft, hard in rlimits:
                setrlimit(res, (soft, hard))

        popen = subprocess.Popen(
            list(argv),
            cwd=str(cwd),
            env=dict(env),
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            pass_fds=tuple(pass_fds),
            close_fds=True,
            start_new_session=True,
            preexec_fn=_apply,
        )
        return SandboxedProcess(popen)


def make_process_sandbox() -> ProcessSandbox:
    """Factory referenced by the core's ``process`` :class:`~sia_core.contracts.records.SandboxSpec`."""
    return ProcessSandbox()


# --------------------------------------------------------------------------------------------
# Whole-program runs
# --------------------------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class CompletedRun:
    """The outcome of :func:`run`. ``rc`` is negative for a signal, ``None`` if timed out."""

    rc: int | None
    stdout: str
    stderr: str
    timed_out: bool
    seconds: float


def _tail(path: Path, limit: int) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - limit))
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""


def run(
    argv: Sequence[str],
    *,
    cwd: Path,
    env: Mapping[str, str],
    limits: Limits,
    sandbox: Sandbox | None = None,
    ro_paths: Sequence[Path] = (),
    rw_paths: Sequence[Path] = (),
    stdout_path: Path | None = None,
    stderr_path: Path | None = None,
    max_capture_bytes: int = 1_000_000,
) -> CompletedRun:
    """Run ``argv`` to completion in ``sandbox`` (default: process), at most ``limits.wall_s``.

    Output goes to files (``stdout_path``/``stderr_path``, temporary ones if not given; the
    same path for both interleaves them), so a background child holding the output open cannot
    block. On timeout the whole tree is killed; when the main process exits, whatever it left
    running in the background is killed too. ``stdout``/``stderr`` hold at most the last
    ``max_capture_bytes`` of each.
    """
    box: Sandbox = sandbox if sandbox is not None else ProcessSandbox()
    with tempfile.TemporaryDirectory(prefix="sia-run-") as tmp:
        out_path = stdout_path or Path(tmp) / "stdout"
        err_path = stderr_path or Path(tmp) / "stderr"
        same = stdout_path is not None and stdout_path == stderr_path
        start = time.monotonic()
        with open(out_path, "wb") as out_f:
            err_f: IO[bytes] | None = None if same else open(err_path, "wb")  # noqa: SIM115
            try:
                proc = box.spawn(
                    argv,
                    cwd=cwd,
                    env=env,
                    limits=limits,
                    ro_paths=ro_paths,
                    rw_paths=rw_paths,
                    stdin=subprocess.DEVNULL,
                    stdout=out_f,
                    stderr=subprocess.STDOUT if same else err_f,
                )
            finally:
                if err_f is not None:
                    err_f.close()
        try:
            rc = proc.wait(timeout=max(0.0, limits.wall_s))
        finally:
            proc.kill_tree()
        seconds = time.monotonic() - start
        return CompletedRun(
            rc=rc,
            stdout=_tail(out_path, max_capture_bytes),
            stderr="" if same else _tail(err_path, max_capture_bytes),
            timed_out=rc is None,
            seconds=seconds,
        )
