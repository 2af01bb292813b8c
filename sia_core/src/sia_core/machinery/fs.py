"""Operating-system plumbing that the core and the plugins share: one home for each piece.

- :func:`die_with_parent`: a ``preexec_fn`` so a child dies with the process that forked it.
- :func:`describe_exit`: a return code in words (``exit code 3``, ``killed by SIGKILL``).
- :func:`pid_alive`: whether a pid recorded in a file names a live process.
- :func:`locked`: an exclusive ``flock`` held for a ``with`` block.

Crash-safe file writes (temp file, fsync, rename) are :func:`sia_core.machinery.runstore.atomic_write_text`.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import signal
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from sia_core.contracts.errors import SiaError

__all__ = ["describe_exit", "die_with_parent", "locked", "pid_alive"]

_PR_SET_PDEATHSIG = 1


def die_with_parent(parent_pid: int | None = None) -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the child get SIGKILL when its parent dies (Linux; ``None``
    elsewhere).

    The kernel ties this to the *thread* that forks the child: fork from a thread that lives as
    long as the process (see the local backend's spawner thread).
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    prctl.restype = ctypes.c_int
    parent = os.getpid() if parent_pid is None else parent_pid
    sigkill = int(signal.SIGKILL)

    def preexec() -> None:
        # resolved above, so the forked child makes just this one libc call
        prctl(_PR_SET_PDEATHSIG, sigkill, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return preexec


def describe_exit(rc: int | None) -> str:
    """``exit code N``, ``killed by SIGNAME`` or, for ``None``, ``still running``."""
    if rc is None:
        return "still running"
    if rc < 0:
        try:
            return f"killed by {signal.Signals(-rc).name}"
        except ValueError:
            return f"killed by signal {-rc}"
    return f"exit code {rc}"


def pid_alive(pid: Any) -> bool:
    """Whether ``pid`` (as stored in a file, so of any type) names a live process."""
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return False  # 0 and -1 would signal a whole process group
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def locked(lock_path: Path, *, wait: bool = True, busy: str = "") -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``lock_path`` (made if missing) for the block, so two
    processes never do the same work at once; the holder's pid is written in the file. With
    ``wait=False`` a lock held elsewhere raises ``SiaError``: "``busy`` is in use by another sia
    process (pid N)"."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            pid = os.read(fd, 32).decode(errors="replace").strip() or "?"
            raise SiaError(f"{busy} is in use by another sia process (pid {pid})") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
