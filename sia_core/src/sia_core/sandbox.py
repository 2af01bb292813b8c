"""Where scaffold code runs: the sandbox interface and the ``process`` sandbox (the core default).

A sandbox plugin yields a :class:`~sia_core.records.SandboxSpec` whose ``factory`` returns an
object following :class:`Sandbox`. Its ``spawn`` starts one command under :class:`Limits` and
returns a :class:`SandboxedProcess` whose ``kill_tree`` ends the command *and everything it
started*. Wall-clock timeouts are the caller's job (``wait(timeout)`` then ``kill_tree``);
:func:`run` does that for whole-program runs.

The ``process`` sandbox (:class:`ProcessSandbox`) isolates little: the command gets its own
session, a clean environment and rlimits, nothing more. It has no file-system or network
isolation, and as root the kernel does not enforce ``RLIMIT_NPROC``. A process that calls
``setsid()`` leaves the session; ``kill_tree`` still finds it through its parent while that
parent lives, but an orphaned one (double fork plus ``setsid``, a real daemon) escapes.
"""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any, Protocol, runtime_checkable

import attrs

__all__ = [
    "CompletedRun",
    "Limits",
    "ProcessSandbox",
    "Sandbox",
    "SandboxedProcess",
    "make_process_sandbox",
    "rlimit_triples",
    "run",
]

_MB = 1024 * 1024


@attrs.frozen(kw_only=True)
class Limits:
    """Resource limits for one sandboxed command. ``None`` leaves a limit as inherited.

    ``memory_mb`` caps the address space (``RLIMIT_AS``), ``file_size_mb`` the size of any file
    the command writes (``RLIMIT_FSIZE``), ``max_procs`` the processes of the user
    (``RLIMIT_NPROC``; the kernel does not enforce it for root), ``open_files`` the descriptors
    (``RLIMIT_NOFILE``), ``cpu_s`` the CPU seconds (``RLIMIT_CPU``). ``wall_s`` is enforced by
    whoever waits on the command, e.g. :func:`run`.
    """

    wall_s: float = 600.0
    cpu_s: int | None = None
    memory_mb: int | None = 4096
    file_size_mb: int | None = 512
    max_procs: int | None = 512
    open_files: int | None = 1024


# --------------------------------------------------------------------------------------------
# /proc helpers
# --------------------------------------------------------------------------------------------


def _proc_table() -> dict[int, tuple[int, int, str]]:
    """``pid -> (ppid, session id, state)`` for every process visible in ``/proc``."""
    table: dict[int, tuple[int, int, str]] = {}
    try:
        names = os.listdir("/proc")
    except OSError:
        return table
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                raw = f.read().decode("ascii", "replace")
        except OSError:
            continue  # exited meanwhile
        # the command name (field 2) may hold spaces and parens: split after the last ')'
        fields = raw[raw.rfind(")") + 2 :].split()
        if len(fields) < 4:
            continue
        state, ppid, sid = fields[0], int(fields[1]), int(fields[3])
        table[int(name)] = (ppid, sid, state)
    return table


def _own_ancestry(table: Mapping[int, tuple[int, int, str]]) -> set[int]:
    """This process and its ancestors: never signalled, whatever else the table says."""
    own = {os.getpid(), os.getppid(), 0, 1}
    pid = os.getpid()
    while pid in table and pid not in (0, 1):
        pid = table[pid][0]
        own.add(pid)
    return own


# --------------------------------------------------------------------------------------------
# The process handle
# --------------------------------------------------------------------------------------------


class SandboxedProcess:
    """A command started by a sandbox, the leader of its own session.

    ``kill_tree`` SIGKILLs the session: the process group, every process whose session id is
    the leader's (found in ``/proc``, also detached background children that stayed in the
    session) and every descendant of those (by parent pid, which catches children that called
    ``setsid`` while their parent is alive). It repeats until none is left, then reaps.
    """

    def __init__(self, popen: subprocess.Popen[Any]) -> None:
        self.popen = popen
        self.pid: int = popen.pid
        self.sid: int = popen.pid  # start_new_session: the child is its session's leader
        self._killed = False

    def __repr__(self) -> str:
        return f"<SandboxedProcess pid={self.pid} rc={self.popen.returncode}>"

    def poll(self) -> int | None:
        """The exit code, or ``None`` while the command runs."""
        return self.popen.poll()

    def wait(self, timeout: float | None = None) -> int | None:
        """Wait for the command; its exit code, or ``None`` if still running after ``timeout``."""
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def members(self) -> set[int]:
        """Live (non-zombie) processes that belong to this command's tree right now."""
        table = _proc_table()
        roots = {pid for pid, (_, sid, _) in table.items() if sid == self.sid}
        # once the leader is reaped its pid may be reused: only trust it as a root before
        if self.popen.returncode is None:
            roots.add(self.pid)
        children: dict[int, list[int]] = {}
        for pid, (ppid, _, _) in table.items():
            children.setdefault(ppid, []).append(pid)
        found: set[int] = set()
        todo = [r for r in roots if r in table]
        while todo:
            pid = todo.pop()
            if pid in found:
                continue
            found.add(pid)
            todo.extend(children.get(pid, ()))
        return {pid for pid in found if table[pid][2] not in ("Z", "X")} - _own_ancestry(table)

    def kill_tree(self) -> None:
        """SIGKILL the command and everything it started; idempotent; reaps the leader."""
        if self._killed and self.popen.returncode is not None:
            return
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline:
            pids = self.members()
            if not pids:
                break
            # freeze before killing anything: a killed parent's children are re-parented at once
            # and can no longer be found by parent pid; a frozen tree cannot fork either
            for pid in pids:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGSTOP)
            pids |= self.members()  # whatever was forked while we were stopping
            if self.popen.returncode is None:  # not reaped: the group id is still ours
                with contextlib.suppress(OSError):
                    os.killpg(self.sid, signal.SIGKILL)
            for pid in pids:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.005)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=5.0)
        for stream in (self.popen.stdin, self.popen.stdout, self.popen.stderr):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        self._killed = True


# --------------------------------------------------------------------------------------------
# The interface and the process sandbox
# --------------------------------------------------------------------------------------------


@runtime_checkable
class Sandbox(Protocol):
    """Where scaffold code runs. ``spawn`` must start ``argv`` in a new session/process tree."""

    name: str
    isolation: str  # one line: what it isolates, shown by ``sia plugins`` and the run header

    def available(self) -> tuple[bool, str]:
        """Whether this sandbox works on this machine, and why (not)."""
        ...

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
        """Start ``argv`` under ``limits`` with exactly ``env``; ``cwd`` must be writable."""
        ...


def rlimit_triples(limits: Limits) -> list[tuple[int, int, int]]:
    """``(resource, soft, hard)`` triples, computed in the parent (the child only applies them)."""
    wanted: list[tuple[int, int | None]] = [
        (resource.RLIMIT_AS, limits.memory_mb * _MB if limits.memory_mb else None),
        (resource.RLIMIT_FSIZE, limits.file_size_mb * _MB if limits.file_size_mb else None),
        (resource.RLIMIT_NPROC, limits.max_procs),
        (resource.RLIMIT_NOFILE, limits.open_files),
        (resource.RLIMIT_CPU, limits.cpu_s),
    ]
    out: list[tuple[int, int, int]] = []
    for res, value in wanted:
        if value is None:
            continue
        _, hard = resource.getrlimit(res)
        soft = value if hard == resource.RLIM_INFINITY else min(value, hard)
        # RLIMIT_CPU: SIGXCPU at the soft limit, SIGKILL one second later
        new_hard = soft + 1 if res == resource.RLIMIT_CPU else soft
        if hard != resource.RLIM_INFINITY:
            new_hard = min(new_hard, hard)
        out.append((res, soft, new_hard))
    return out


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
    """Factory referenced by the core's ``process`` :class:`~sia_core.records.SandboxSpec`."""
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
