"""``sia report RUN``: the ``sia.commands`` entry point ``report`` (imported only when it runs).

Imports only sia_core, click and the standard library; matplotlib is imported for the PNGs.
"""

from __future__ import annotations

from pathlib import Path

import click

from sia_core.contracts.errors import SiaError


def _run_folder(runs_dir: str, run: str) -> Path:
    """``run`` is a run id (under ``runs_dir``) or a run folder."""
    path = Path(run)
    if path.is_dir() and ((path / "run.json").exists() or (path / "events.jsonl").exists()):
        return path.resolve()
    folder = Path(runs_dir) / f"run_{run}"
    if folder.is_dir():
        return folder.resolve()
    raise SiaError(f"no run {run!r} in {runs_dir} (give a run id from `sia runs` or a run folder)")


@click.command("report")
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
