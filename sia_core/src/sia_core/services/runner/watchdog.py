"""The work-dir watchdog: kills a scaffold whose work dir grows past the spec's limits."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from sia_core.contracts.sandbox import SandboxedProcess
from sia_core.services.runner.spec import RunSpec


def _mb(n: int) -> str:
    return f"{n / (1024 * 1024):.0f} MB"


def _dir_usage(path: Path, max_files: int) -> tuple[int, int]:
    """``(bytes, entries)`` below ``path``, links not followed; stops counting past
    ``max_files`` entries (the caller only needs to know it is over)."""
    total = count = 0
    todo = [str(path)]
    while todo and count <= max_files:
        try:
            with os.scandir(todo.pop()) as it:
                for entry in it:
                    count += 1
                    try:
                        info = entry.stat(follow_symlinks=False)
                    except OSError:
                        continue
                    total += info.st_blocks * 512
                    if entry.is_dir(follow_symlinks=False):
                        todo.append(entry.path)
        except OSError:
            continue
    return total, count


class _WorkDirWatch:
    """Kills ``proc``'s tree once ``path`` holds more than the spec allows; ``breach`` says why.

    A watchdog, not a quota: a fast writer may go over by what it writes in one interval (the
    per-file ``RLIMIT_FSIZE`` still holds). Docs/security.md says so.
    """

    def __init__(self, proc: SandboxedProcess, path: Path, spec: RunSpec) -> None:
        self.breach = ""
        self._proc, self._path = proc, path
        self._max_bytes = spec.work_dir_mb * 1024 * 1024
        self._max_files = spec.work_dir_files
        self._interval = spec.watch_interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True, name="sia-disk-watch")
        self._thread.start()

    def _watch(self) -> None:
        while not self._stop.wait(self._interval):
            used, files = _dir_usage(self._path, self._max_files)
            if used > self._max_bytes:
                self.breach = (
                    f"work dir over its limit ({_mb(used)} > {_mb(self._max_bytes)}): "
                    "killed, and its files removed"
                )
            elif files > self._max_files:
                self.breach = (
                    f"work dir over its limit (more than {self._max_files} files): "
                    "killed, and its files removed"
                )
            if self.breach:
                self._proc.kill_tree()
                return

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=5.0)
