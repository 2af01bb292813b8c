"""The handle on a command in a bwrap sandbox: its exit status read from the supervisor's pipe,
killing its whole tree, and releasing what its spawn holds on the host."""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import subprocess
import threading
import time
import weakref
from pathlib import Path
from typing import Any

from sia_core.contracts.sandbox import SandboxedProcess

from .gateway import HostRelay
from .host_resources import PidsCgroup


def release_spawn(
    status_fd: int, relays: list[HostRelay], scratch: Path, cgroup: PidsCgroup | None
) -> None:
    """Close the status pipe and the relays; remove the scratch folder and the cgroup."""
    with contextlib.suppress(OSError):
        os.close(status_fd)
    for relay in relays:
        relay.close()
    shutil.rmtree(scratch, ignore_errors=True)
    if cgroup is not None:
        cgroup.remove()


class BwrapProcess(SandboxedProcess):
    """A command in a bwrap sandbox. ``wait``/``poll`` give the command's own exit status
    (the supervisor reports it), while processes it left behind stay alive until
    ``kill_tree``, exactly as with the process sandbox."""

    def __init__(
        self,
        popen: subprocess.Popen[Any],
        status_fd: int,
        relays: list[HostRelay],
        scratch: Path,
        cgroup: PidsCgroup | None,
    ) -> None:
        super().__init__(popen)
        self.cgroup = cgroup.path if cgroup is not None else None
        self._status_fd: int | None = status_fd
        self._buf = b""
        self._status: int | None = None
        self._lock = threading.Lock()
        self._finalizer = weakref.finalize(self, release_spawn, status_fd, relays, scratch, cgroup)

    def _read_status(self, timeout: float | None) -> bool:
        """Read the status pipe for up to ``timeout`` s; ``True`` once it is at EOF.

        The lock is held for short slices only, so ``poll``/``kill_tree`` from another thread
        wait at most one slice, and the fd is never closed while a ``select`` uses it.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            remaining = 0.05 if deadline is None else max(0.0, deadline - time.monotonic())
            with self._lock:
                fd = self._status_fd
                if fd is None:
                    return True
                try:
                    ready, _, _ = select.select([fd], [], [], min(0.05, remaining))
                    chunk = os.read(fd, 256) if ready else None
                except OSError:
                    return True
                if chunk is not None:
                    self._buf += chunk
                    if self._status is None and b"\n" in self._buf:
                        line = self._buf.partition(b"\n")[0].decode("ascii", "replace")
                        kind, _, value = line.partition(" ")
                        with contextlib.suppress(ValueError):
                            self._status = -int(value) if kind == "signal" else int(value)
                    return not chunk
            if deadline is not None and time.monotonic() >= deadline:
                return False

    def poll(self) -> int | None:
        """The command's exit code (negative: killed by that signal), ``None`` while it runs."""
        if self._status is None:
            eof = self._read_status(0)
            if self._status is None and (eof or self.popen.poll() is not None):
                return self.popen.wait()  # bwrap itself failed or was killed
        return self._status

    def wait(self, timeout: float | None = None) -> int | None:
        """Wait for the command (not its leftovers); ``None`` if still running at ``timeout``."""
        if self._status is None:
            deadline = None if timeout is None else time.monotonic() + timeout
            while self._status is None and not self._read_status(
                None if deadline is None else max(0.0, deadline - time.monotonic())
            ):
                if deadline is not None and time.monotonic() >= deadline:
                    return None
        return self.poll()

    def kill_tree(self) -> None:
        """SIGKILL everything in the sandbox (supervisor, command, leftovers), reap, clean up."""
        super().kill_tree()
        with self._lock:
            self._status_fd = None
            self._finalizer()
