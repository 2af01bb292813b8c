"""Registers ``sia report`` and the observer that rewrites ``report.html`` as a run goes.

Imports only sia_core, click and the standard library; matplotlib is imported by the command
(for PNGs) and at the end of a run, never at ``sia --help``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import click

from sia_core import hookimpl
from sia_core.contracts.errors import SiaError
from sia_core.contracts.records import Event

log = logging.getLogger("sia.report")

#: events after which the observer rewrites the report
REFRESH_ON = ("gen_finished", "run_stopped", "run_finished", "run_failed")
#: set to 0 to switch the observer off (``sia report`` still works)
ENV_SWITCH = "SIA_REPORT"

_run_dirs: dict[str, str] = {}


def _run_folder(runs_dir: str, run: str) -> Path:
    """``run`` is a run id (under ``runs_dir``) or a run folder."""
    path = Path(run)
    if path.is_dir() and ((path / "run.json").exists() or (path / "events.jsonl").exists()):
        return path.resolve()
    folder = Path(runs_dir) / f"run_{run}"
    if folder.is_dir():
        return folder.resolve()
    raise SiaError(f"no run {run!r} in {runs_dir} (give a run id from `sia runs` or a run folder)")


@hookimpl
def sia_register_commands(cli: click.Group) -> None:
    @cli.command("report")
    @click.argument("run")
    @click.option("--runs-dir", "--runs_dir", "runs_dir", default="runs", show_default=True)
    @click.option("--no-png", "no_png", is_flag=True, help="Write report.html only.")
    def report_cmd(run: str, runs_dir: str, no_png: bool) -> None:
        """Write RUN's report.html (self-contained, opens offline) and PNG figures."""
        from .report import write_report

        written = write_report(_run_folder(runs_dir, run), pngs=not no_png)
        click.echo(str(written.html))
        for p in written.pngs:
            click.echo(str(p))
        if written.png_error:
            click.echo(f"sia: warning: {written.png_error}", err=True)


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
