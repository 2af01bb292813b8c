"""Where scaffold code runs: the sandbox interface.

A sandbox plugin yields a :class:`~sia_core.contracts.records.SandboxSpec` whose ``factory`` returns an
object following :class:`Sandbox`. Its ``spawn`` starts one command under :class:`Limits` and
returns a :class:`SandboxedProcess` whose ``kill_tree`` ends the command *and everything it
started*. Wall-clock timeouts are the caller's job (``wait(timeout)`` then ``kill_tree``);
:func:`~sia_core.services.process_sandbox.run` does that for whole-program runs.

The core's own ``process`` sandbox and :func:`run` live in
:mod:`sia_core.services.process_sandbox`.
"""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import attrs

__all__ = ["Limits", "Sandbox", "SandboxedProcess", "rlimit_triples"]

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
