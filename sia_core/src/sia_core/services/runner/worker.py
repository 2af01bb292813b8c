"""One scaffold host worker: the sandboxed ``python -I scaffold_host.py`` process.

:data:`HOST_PATH` is the harness it runs. The runner writes one JSON request per line to its
stdin and reads the answers from a separate pipe (never stdout, which goes to the worker's log
with stderr); :class:`_Worker` sends a request and waits for its answer, its death or the
timeout, and :func:`_steps` reads the trajectory out of an answer.
"""

from __future__ import annotations

import contextlib
import json
import queue
import shutil
import threading
import time
from pathlib import Path
from typing import IO, Any

from sia_core.contracts.records import TrajectoryStep
from sia_core.contracts.sandbox import SandboxedProcess
from sia_core.machinery.fs import describe_exit
from sia_core.services.runner.watchdog import _WorkDirWatch
from sia_core.services.untrusted import OutputPump

__all__ = ["HOST_PATH"]

#: the harness each worker runs (stdlib only, executed by path)
HOST_PATH = Path(__file__).with_name("scaffold_host.py")

_OVERSIZE = object()  # reader marker: a response line over the size cap
_EOF = object()


def _steps(raw: Any) -> tuple[TrajectoryStep, ...]:
    steps = []
    for step in raw if isinstance(raw, list) else ():
        if isinstance(step, dict):
            t = step.get("t")
            steps.append(
                TrajectoryStep(
                    kind=str(step.get("kind", "note")),
                    content=step.get("content"),
                    t=float(t) if isinstance(t, int | float) else 0.0,
                )
            )
    return tuple(steps)


class _Worker:
    """A running scaffold host: the sandboxed process, its token and its response pipe."""

    def __init__(
        self, proc: SandboxedProcess, token: str, responses: IO[bytes], output: OutputPump
    ) -> None:
        self.proc = proc
        self.token = token
        self.output = output
        self.watch: _WorkDirWatch | None = None
        self.home: Path | None = None
        self._responses = responses
        self._lines: queue.Queue[Any] = queue.Queue()
        self._cap = 0
        self._reader = threading.Thread(target=self._read, daemon=True, name="sia-worker-reader")

    def start_reader(self, cap: int) -> None:
        self._cap = cap
        self._reader.start()

    def _read(self) -> None:
        f = self._responses
        try:
            while True:
                line = f.readline(self._cap + 1)
                if not line:
                    break
                if len(line) > self._cap and not line.endswith(b"\n"):
                    while True:  # skip the rest of the oversized line
                        chunk = f.readline(1 << 20)
                        if not chunk or chunk.endswith(b"\n"):
                            break
                    self._lines.put(_OVERSIZE)
                    continue
                self._lines.put(line)
        except (OSError, ValueError):
            pass
        finally:
            # closed here, not by close(): closing a buffered file another thread is reading
            # blocks until that read returns
            with contextlib.suppress(OSError):
                f.close()
            self._lines.put(_EOF)

    def request(self, payload: dict[str, Any], timeout: float) -> tuple[str, Any]:
        """Send one request; ``("ok", response)``, ``("timeout", None)``, ``("died", rc)``
        or ``("bad", message)``."""
        stdin = self.proc.popen.stdin
        assert stdin is not None
        try:
            stdin.write((json.dumps(payload, ensure_ascii=False) + "\n").encode("utf-8"))
            stdin.flush()
        except (OSError, ValueError):
            return "died", self._exit_code()
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return "timeout", None
            try:
                got = self._lines.get(timeout=min(0.1, remaining))
            except queue.Empty:
                # a forked child may hold the pipe open after the host died: also poll the host
                if self.proc.poll() is not None:
                    try:
                        got = self._lines.get(timeout=0.2)
                    except queue.Empty:
                        return "died", self.proc.poll()
                else:
                    continue
            if got is _EOF:
                return "died", self._exit_code()
            if got is _OVERSIZE:
                return "bad", f"worker response over {self._cap} bytes"
            try:
                response = json.loads(got)
            except ValueError as e:
                return "bad", f"malformed worker response: {e}"
            if not isinstance(response, dict):
                return "bad", "malformed worker response: not an object"
            return "ok", response

    def _exit_code(self) -> int | None:
        return self.proc.wait(timeout=1.0)

    def died_message(self, rc: int | None) -> str:
        if self.watch is not None and self.watch.breach:
            return self.watch.breach
        self.output.wait_eof(1.0)  # the tail comes from the pipe sia holds, never a path
        tail = self.output.tail()
        msg = f"worker died ({describe_exit(rc)})"
        return f"{msg}; last output:\n{tail}" if tail else msg

    def close(self) -> None:
        """Kill the worker and everything it started; close the pipes."""
        self.proc.kill_tree()
        if self.watch is not None:
            self.watch.stop()
            if self.watch.breach and self.home is not None:
                shutil.rmtree(self.home, ignore_errors=True)  # the next worker starts clean
        self.output.close()
        if self._reader.is_alive():
            self._reader.join(timeout=1.0)
        elif not self._reader.ident:  # the reader never started
            with contextlib.suppress(OSError):
                self._responses.close()
