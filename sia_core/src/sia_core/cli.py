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
from typing import Any

import click

from . import __version__
from .errors import SiaError
from .plugins import SiaPluginManager, get_plugin_manager

DEFAULT_RUNS_DIR = "runs"


def _run_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """The options of a run, shared by ``sia`` itself and ``sia run``."""
    opts = [
        click.option("--task", "task", help="Task name (see `sia tasks`)."),
        click.option(
            "--task_dir",
            "--task-dir",
            "task_dir",
            type=click.Path(),
            help="A task directory (SIA layout or task.toml).",
        ),
        click.option(
            "--max_gen",
            "--max-gen",
            "max_gen",
            type=click.IntRange(1),
            default=None,
            help="Generations to run (default 3).",
        ),
        click.option(
            "--run_id",
            "--run-id",
            "run_id",
            default=None,
            help="Run id; re-running with an existing id resumes it. Default: next free.",
        ),
        click.option(
            "--backend",
            default="auto",
            show_default=True,
            help="LLM backend (see `sia plugins`); auto picks a configured provider.",
        ),
        click.option(
            "--backend-opt",
            "backend_opts",
            multiple=True,
            metavar="KEY=VALUE",
            help="Backend setting, e.g. script=PATH for the scripted backend.",
        ),
        click.option(
            "--meta_model",
            "--meta-model",
            "meta_model",
            default=None,
            help="Model of the Meta/Feedback roles.",
        ),
        click.option(
            "--task_model",
            "--task-model",
            "task_model",
            default=None,
            help="Model the scaffold calls.",
        ),
        click.option(
            "--lever",
            type=click.Choice(["auto", "harness", "weights"]),
            default="auto",
            show_default=True,
            help="Force a lever instead of the Feedback-Agent's choice.",
        ),
        click.option(
            "--rl-algorithm",
            "--rl_algorithm",
            "rl_algorithm",
            default="auto",
            show_default=True,
            help="RL objective for weight updates, or auto.",
        ),
        click.option(
            "--sandbox",
            default="auto",
            show_default=True,
            help="Where scaffold code runs (see `sia plugins`).",
        ),
        click.option("--seed", type=int, default=0, show_default=True),
        click.option(
            "--runs-dir",
            "--runs_dir",
            "runs_dir",
            default=DEFAULT_RUNS_DIR,
            show_default=True,
            type=click.Path(file_okay=False),
        ),
        click.option(
            "--gate-margin",
            "gate_margin",
            type=float,
            default=0.0,
            show_default=True,
            help="Dev-score margin a generation needs to replace the incumbent.",
        ),
        click.option(
            "--parallel",
            type=click.IntRange(1),
            default=None,
            help="Items solved in parallel (default: the task's).",
        ),
        click.option(
            "--item-timeout",
            "item_timeout_s",
            type=click.FloatRange(0, min_open=True),
            default=None,
            help="Seconds per item (default: the task's).",
        ),
        click.option(
            "--max-calls-per-gen",
            "max_calls_per_gen",
            type=click.IntRange(1),
            default=None,
            help="Cap on task-model calls per generation.",
        ),
        click.option(
            "--max-tokens-per-gen",
            "max_tokens_per_gen",
            type=click.IntRange(1),
            default=None,
            help="Cap on task-model tokens per generation.",
        ),
        click.option(
            "--executor",
            default="auto",
            show_default=True,
            help="Where weight training runs (see `sia plugins`).",
        ),
        click.option(
            "--train-opt",
            "train_opts",
            multiple=True,
            metavar="KEY=VALUE",
            help="Training setting, e.g. steps=20, group_size=8, learning_rate=4e-5.",
        ),
        click.option(
            "--test-eval",
            "test_eval",
            type=click.Choice(["final", "every", "none"]),
            default="final",
            show_default=True,
            help="When to score the sealed test split: after the run (first and best "
            "generation), every generation, or never. Report only; no decision reads it.",
        ),
        *_cap_options(),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


def _cap_options() -> list[Any]:
    """Run caps (docs/runs.md): checked before each spending step; a resume may raise them."""
    return [
        click.option(
            "--max-usd",
            "max_usd",
            type=click.FloatRange(0, min_open=True),
            default=None,
            help="Stop once the run has cost this many US dollars (LLM calls, priced).",
        ),
        click.option(
            "--max-tokens",
            "--max-run-tokens",
            "max_run_tokens",
            type=click.IntRange(1),
            default=None,
            help="Stop once the run's LLM calls used this many tokens.",
        ),
        click.option(
            "--max-train-seconds",
            "max_train_seconds",
            type=click.FloatRange(0, min_open=True),
            default=None,
            help="Stop once training jobs used this many device-seconds.",
        ),
    ]


class SiaGroup(click.Group):
    """Lists commands in the order they were added."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.commands)


def make_cli(pm_factory: Callable[[], SiaPluginManager] = get_plugin_manager) -> click.Group:
    """Build the CLI around a plugin manager factory (tests pass their own)."""

    @click.group(
        cls=SiaGroup,
        invoke_without_command=True,
        context_settings={"help_option_names": ["-h", "--help"]},
    )
    @click.version_option(__version__, "--version", prog_name="sia")
    @click.option("--debug", is_flag=True, help="Show tracebacks.")
    @_run_options
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
    @_run_options
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
    @_apply(_cap_options())
    def resume_cmd(run_id: str, runs_dir: str, max_gen: int | None, **caps: Any) -> None:
        """Continue a killed or stopped-by-cap run from its last finished step (a cap given
        here replaces the stored one)."""
        from .runs import resume_run

        resume_run(pm_factory(), Path(runs_dir), run_id, max_gen=max_gen, caps=caps)

    @cli.command("plugins")
    @click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
    def plugins_cmd(as_json: bool) -> None:
        """List installed plugins, what they provide, and those that failed to load."""
        from .runs import plugins_table

        plugins_table(pm_factory(), as_json)

    @cli.command("tasks")
    @click.option("--json", "as_json", is_flag=True)
    def tasks_cmd(as_json: bool) -> None:
        """List the tasks installed plugins provide."""
        from .runs import tasks_table

        tasks_table(pm_factory(), as_json)

    @cli.command("runs")
    @click.option(
        "--runs-dir", "--runs_dir", "runs_dir", default=DEFAULT_RUNS_DIR, show_default=True
    )
    @click.option("--json", "as_json", is_flag=True)
    def runs_cmd(runs_dir: str, as_json: bool) -> None:
        """List runs with their status and best dev score."""
        from .runs import runs_table

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
        from .runs import show_run

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
        from .runs import compare_runs

        compare_runs(Path(runs_dir), run_a, run_b, as_json)

    @cli.command("validate-task")
    @click.argument("task")
    def validate_cmd(task: str) -> None:
        """Check a task directory (or installed task NAME); print every problem."""
        from .runs import validate_task_cmd

        validate_task_cmd(pm_factory(), task)

    from .newtask import new_task_command

    cli.add_command(new_task_command())
    try:
        pm_factory().hook.sia_register_commands(cli=cli)
    except Exception as exc:  # a plugin's command must not take the CLI down
        click.echo(f"sia: warning: a plugin failed to register commands: {exc}", err=True)
    return cli


def _apply(opts: list[Any]) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Apply click options in the order listed."""

    def deco(f: Callable[..., Any]) -> Callable[..., Any]:
        for opt in reversed(opts):
            f = opt(f)
        return f

    return deco


def _start_run(pm: SiaPluginManager, **opts: Any) -> None:
    from .runs import start_run

    start_run(pm, **opts)


def main(argv: list[str] | None = None) -> int:
    """Entry point: one line per error, exit 2 for usage errors, 1 for failures."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args or os.environ.get("SIA_DEBUG") == "1"
    try:
        cli = make_cli()
        cli.main(args=args, prog_name="sia", standalone_mode=False)
        return 0
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


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
