"""Starting child processes from one long-lived thread, so ``PR_SET_PDEATHSIG`` outlives callers.

``PR_SET_PDEATHSIG`` fires when the *thread* that forked the child exits, not the process: a
server started from a short-lived worker thread would be killed with that thread. :func:`spawn`
forks every child from one daemon thread that lives as long as the process.

Standard library only.
"""

from __future__ import annotations

import os
import queue
import subprocess
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["spawn"]


class _Spawner:
    """Runs ``Popen`` on one long-lived daemon thread (restarted in a forked child)."""

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[tuple[Callable[[], Any], queue.SimpleQueue[Any]]] = (
            queue.SimpleQueue()
        )
        self._thread: threading.Thread | None = None
        self._pid = -1
        self._lock = threading.Lock()

    def popen(self, argv: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        with self._lock:
            if self._thread is None or not self._thread.is_alive() or self._pid != os.getpid():
                self._jobs = queue.SimpleQueue()
                self._thread = threading.Thread(
                    target=self._run, name="sia-llama-spawner", daemon=True
                )
                self._thread.start()
                self._pid = os.getpid()
        reply: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._jobs.put((lambda: subprocess.Popen(argv, **kwargs), reply))
        ok, value = reply.get()
        if not ok:
            raise value
        return value  # type: ignore[no-any-return]

    def _run(self) -> None:
        while True:
            job, reply = self._jobs.get()
            try:
                reply.put((True, job()))
            except BaseException as exc:
                reply.put((False, exc))


_SPAWNER = _Spawner()


def spawn(argv: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
    """``subprocess.Popen(argv, **kwargs)``, forked by the spawner thread; its errors re-raised."""
    return _SPAWNER.popen(argv, **kwargs)
