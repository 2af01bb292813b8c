"""The observer that rewrites ``report.html`` as a run goes (``sia report`` is in :mod:`.cli`).

Imports only sia_core and the standard library; the report modules are imported after a
generation, never when the plugins load.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from sia_core import hookimpl
from sia_core.contracts.records import Event

log = logging.getLogger("sia.report")

#: events after which the observer rewrites the report
REFRESH_ON = ("gen_finished", "run_stopped", "run_finished", "run_failed")
#: set to 0 to switch the observer off (``sia report`` still works)
ENV_SWITCH = "SIA_REPORT"

_run_dirs: dict[str, str] = {}


@hookimpl
def sia_on_event(event: Event) -> None:
    """Rewrite the run's report after each generation and at the end (never fails the run)."""
    if os.environ.get(ENV_SWITCH, "1") in ("0", "false", "no"):
        return
    if event.type in ("run_opened", "run_started", "run_resumed") and event.data.get("run_dir"):
        _run_dirs[event.run_id] = str(event.data["run_dir"])
        return
    if event.type not in REFRESH_ON:
        return
    run_dir = _run_dirs.get(event.run_id)
    if not run_dir or not Path(run_dir).is_dir():
        return
    final = event.type in ("run_finished", "run_failed")
    try:
        from .report import write_report

        write_report(run_dir, pngs=final)
    except Exception as exc:  # a report problem must never touch the run
        log.warning("sia: report: could not write %s/report.html: %r", run_dir, exc)
