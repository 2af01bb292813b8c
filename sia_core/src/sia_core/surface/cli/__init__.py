"""The ``sia`` command.

``sia --task NAME`` (or ``sia run ...``) runs the loop; ``sia plugins``, ``tasks``, ``runs``,
``show``, ``resume`` and ``validate-task`` inspect. Errors are one line (``--debug`` for the
traceback). Nothing heavy is imported here: ``sia --help`` stays fast.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from sia_core import __version__
from sia_core.contracts.errors import SiaError
from sia_core.surface.cli.group import SiaGroup, command_entry_points
from sia_core.surface.cli.options import DEFAULT_RUNS_DIR, cap_options, run_options

if TYPE_CHECKING:
    from sia_core.machinery.plugins import SiaPluginManager


def get_plugin_manager() -> SiaPluginManager:
    """The process's plugin manager (imported here, not at the top: ``sia --help`` loads none)."""
    from sia_core.machinery.plugins import get_plugin_manager as get

    return get()


def make_cli(pm_factory: Callable[[], SiaPluginManager] = get_plugin_manager) -> click.Group:
    """Build the CLI around a plugin manager factory (tests pass their own)."""

    @click.group(
        cls=SiaGroup,
        invoke_without_command=True,
        context_settings={"help_option_names": ["-h", "--help"]},
    )
    @click.version_option(__version__, "--version", prog_name="sia")
    @click.option("--debug", is_flag=True, help="Show tracebacks.")
    @run_options
    @click.pass_context
    def cli(ctx: click.Context, debug: bool, **opts: Any) -> None:
        """sia: a self-improving AI loop.

        \b
          sia --task tiny-add --max_gen 3        run the loop on a task
          sia runs / sia show RUN                what happened, what it cost
          sia compare RUN RUN                    two runs side by side
          sia resume RUN                         continue a killed run
        """
        ctx.obj = {"debug": debug, "pm_factory": pm_factory}
        if ctx.invoked_subcommand is None:
            if not opts["task"] and not opts["task_dir"]:
                click.echo(ctx.get_help())
                return
            _start_run(pm_factory(), **opts)

    @cli.command("run")
    @run_options
    def run_cmd(**opts: Any) -> None:
        """Run the self-improvement loop on a task."""
        _start_run(pm_factory(), **opts)

    @cli.command("resume")
    @click.argument("run_id")
    @click.option(
        "--runs-dir", "--runs_dir", "runs_dir", default=DEFAULT_RUNS_DIR, show_default=True
    )
    @click.option(
        "--max_gen",
        "--max-gen",
        "max_gen",
        type=click.IntRange(1),
        default=None,
        help="Raise the number of generations.",
    )
    @cap_options
    def resume_cmd(run_id: str, runs_dir: str, max_gen: int | None, **caps: Any) -> None:
        """Continue a killed or stopped-by-cap run from its last finished step (a cap given
        here replaces the stored one)."""
        from sia_core.surface.cli.running import resume_run

        resume_run(pm_factory(), Path(runs_dir), run_id, max_gen=max_gen, caps=caps)

    @cli.command("plugins")
    @click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
    def plugins_cmd(as_json: bool) -> None:
        """List installed plugins, what they provide, and those that failed to load."""
        from sia_core.surface.cli.tables import plugins_table

        plugins_table(pm_factory(), as_json)

    @cli.command("tasks")
    @click.option("--json", "as_json", is_flag=True)
    def tasks_cmd(as_json: bool) -> None:
        """List the tasks installed plugins provide."""
        from sia_core.surface.cli.tables import tasks_table

        tasks_table(pm_factory(), as_json)

    @cli.command("runs")
    @click.option(
        "--runs-dir", "--runs_dir", "runs_dir", default=DEFAULT_RUNS_DIR, show_default=True
    )
    @click.option("--json", "as_json", is_flag=True)
    def runs_cmd(runs_dir: str, as_json: bool) -> None:
        """List runs with their status and best dev score."""
        from sia_core.surface.cli.tables import runs_table

        runs_table(Path(runs_dir), as_json)

    @cli.command("show")
    @click.argument("run_id")
    @click.argument("gen", required=False, type=int)
    @click.option(
        "--runs-dir", "--runs_dir", "runs_dir", default=DEFAULT_RUNS_DIR, show_default=True
    )
    @click.option("--json", "as_json", is_flag=True)
    def show_cmd(run_id: str, gen: int | None, runs_dir: str, as_json: bool) -> None:
        """Show a run per generation (lever, objective, dev, test), or one generation."""
        from sia_core.surface.cli.tables import show_run

        show_run(Path(runs_dir), run_id, gen, as_json)

    @cli.command("compare")
    @click.argument("run_a")
    @click.argument("run_b")
    @click.option(
        "--runs-dir", "--runs_dir", "runs_dir", default=DEFAULT_RUNS_DIR, show_default=True
    )
    @click.option("--json", "as_json", is_flag=True)
    def compare_cmd(run_a: str, run_b: str, runs_dir: str, as_json: bool) -> None:
        """Two runs side by side: per generation lever, dev score, cost, time; sealed test."""
        from sia_core.surface.cli.tables import compare_runs

        compare_runs(Path(runs_dir), run_a, run_b, as_json)

    @cli.command("validate-task")
    @click.argument("task")
    def validate_cmd(task: str) -> None:
        """Check a task directory (or installed task NAME); print every problem."""
        from sia_core.surface.cli.tables import validate_task_cmd

        validate_task_cmd(pm_factory(), task)

    @cli.command("doctor")
    def doctor_cmd() -> None:
        """What this environment can run (sandboxes, executors, model server, extras, keys)."""
        from sia_core.surface.cli.doctor import doctor

        doctor(pm_factory())

    from sia_core.surface.cli.newtask import new_task_command

    cli.add_command(new_task_command())
    # plugin commands: entry points are listed without importing them; the hook runs on demand
    assert isinstance(cli, SiaGroup)
    cli.lazy = command_entry_points()
    cli.register_from_plugins = lambda group: pm_factory().hook.sia_register_commands(cli=group)
    return cli


def _start_run(pm: SiaPluginManager, **opts: Any) -> None:
    from sia_core.surface.cli.running import start_run

    start_run(pm, **opts)


def main(argv: list[str] | None = None) -> int:
    """Entry point: one line per error, exit 2 for usage errors, 1 for failures."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args or os.environ.get("SIA_DEBUG") == "1"
    try:
        cli = make_cli()
        rc = cli.main(args=args, prog_name="sia", standalone_mode=False)
        return rc if isinstance(rc, int) else 0  # an Exit raised in a command gives its code
    except click.exceptions.Exit as exc:
        return int(exc.exit_code or 0)
    except click.Abort:
        click.echo("sia: aborted", err=True)
        return 130
    except click.ClickException as exc:
        if debug:
            traceback.print_exc()
        click.echo(f"sia: error: {exc.format_message()} (see `sia --help`)", err=True)
        return 2
    except SiaError as exc:
        if debug:
            traceback.print_exc()
        click.echo(f"sia: error: {exc}", err=True)
        return 1
    except KeyboardInterrupt:
        click.echo("sia: interrupted; `sia resume RUN` continues the run", err=True)
        return 130
    except Exception as exc:
        if debug:
            traceback.print_exc()
        click.echo(
            f"sia: error: {type(exc).__name__}: {exc} (rerun with --debug for the traceback)",
            err=True,
        )
        return 1


def _json_out(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False, default=str))
