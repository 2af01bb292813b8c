"""``TrackerObserver``: the ``sia_on_event`` observer a tracker plugin registers. It starts a
:class:`~sia_trackers.session.TrackerSession` for each run the tracker is wanted for and feeds it
the run's events."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from sia_core import hookimpl
from sia_core.contracts.records import Event

from .base import TrackedRun, TrackerBackend, missing, say, wanted
from .session import TrackerSession

#: how long the end of a run waits for a tracker to log what is queued
FINISH_WAIT_S = 600.0


class TrackerObserver:
    """The ``sia_on_event`` observer of one tracker; ``factory()`` makes its backend per run.

    ``requires``: the top-level modules the backend imports (at first use); when one is missing,
    a run that wants this tracker gets one line naming ``install`` and goes on untracked by it."""

    def __init__(
        self,
        name: str,
        factory: Callable[[], TrackerBackend],
        *,
        requires: Sequence[str] = (),
        install: str = "",
    ) -> None:
        self.name = name
        self.factory = factory
        self.requires = tuple(requires)
        self.install = install
        self._run_dirs: dict[str, Path] = {}
        self._sessions: dict[str, TrackerSession] = {}

    @hookimpl
    def sia_on_event(self, event: Event) -> None:
        """Start, feed and finish the run's tracker session (errors: one line, never raised)."""
        try:
            self._on_event(event)
        except Exception as exc:  # the worker reports its own errors; this is a last guard
            self._sessions.pop(event.run_id, None)
            say(f"tracker {self.name} failed on {event.type} ({type(exc).__name__}: {exc})")

    def available(self) -> bool:
        """Whether the backend's libraries are installed; if not, says which extra to install."""
        gone = missing(self.requires)
        if gone:
            how = f": {self.install}" if self.install else ""
            say(
                f"tracker {self.name} needs {', '.join(gone)}, which is not installed{how}; "
                "this run goes on without it"
            )
        return not gone

    def _on_event(self, event: Event) -> None:
        t, data = event.type, event.data
        if t == "run_opened" and data.get("run_dir"):
            self._run_dirs[event.run_id] = Path(data["run_dir"])
            return
        if t in ("run_started", "run_resumed"):
            run_dir = data.get("run_dir") or self._run_dirs.get(event.run_id)
            if run_dir is not None and wanted(self.name, Path(run_dir)) and self.available():
                run = TrackedRun(
                    run_id=event.run_id, run_dir=Path(run_dir), task=str(data.get("task", "task"))
                )
                started = TrackerSession(self.name, self.factory, run, install=self.install)
                self._sessions[event.run_id] = started
                started.put("start")
        session = self._sessions.get(event.run_id)
        if t in ("run_finished", "run_failed"):
            self._run_dirs.pop(event.run_id, None)
        if session is None:
            return
        if t == "train_progress" and event.gen is not None:
            session.put("live", (int(event.gen), dict(data)))
        elif event.seq:
            session.put("sync", event.seq)
        if t in ("run_finished", "run_failed"):
            del self._sessions[event.run_id]
            session.put("finish", _status(event))
            session.thread.join(FINISH_WAIT_S)  # the tracked run is complete when sia exits
            if session.thread.is_alive():
                say(f"tracker {self.name} is still busy after {FINISH_WAIT_S:.0f} s; giving up")


def _status(event: Event) -> str:
    if event.type == "run_failed":
        error = str(event.data.get("error", ""))
        return "killed" if error.startswith("KeyboardInterrupt") else "failed"
    return "stopped" if event.data.get("status") == "stopped" else "finished"
