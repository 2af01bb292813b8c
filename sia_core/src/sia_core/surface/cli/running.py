"""What ``sia --task ...`` and ``sia resume`` do: choose the backend, sandbox and task, start
or resume a run, and drive the loop with progress lines and the summary table at the end."""

from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Any

import attrs
import click

from sia_core import hookimpl
from sia_core.contracts.config import CAP_FIELDS, RunConfig
from sia_core.contracts.errors import SiaError
from sia_core.contracts.training import DEFAULT_TRAIN_SETTINGS
from sia_core.loop import Loop
from sia_core.machinery.fs import pid_alive
from sia_core.machinery.plugins import SiaPluginManager, resolve
from sia_core.machinery.pricing import fmt_usd
from sia_core.machinery.runstore import RunStore, list_runs, next_run_id
from sia_core.services.summary import weights_lever_line
from sia_core.services.taskdir import load_task
from sia_core.surface.builtin.progress import make_progress
from sia_core.surface.cli.display import print_summary
from sia_core.surface.cli.options import DEFAULT_RUNS_DIR, given_settings
from sia_core.surface.cli.tables import open_run

# -- choosing backend, sandbox, task ----------------------------------------------------------


def resolve_task_dir(
    pm: SiaPluginManager, task: str | None, task_dir: str | None
) -> tuple[str, Path]:
    """``(name as given, directory)`` from ``--task NAME`` or ``--task_dir DIR``."""
    if task and task_dir:
        raise SiaError("give --task NAME or --task_dir DIR, not both")
    if task_dir:
        path = Path(task_dir).expanduser().resolve()
        if not path.is_dir():
            raise SiaError(f"--task_dir {task_dir}: no such directory")
        return str(task_dir), path
    if not task:
        raise SiaError("which task? give --task NAME (see `sia tasks`) or --task_dir DIR")
    return task, Path(pm.tasks().get(task).path)


def choose_backend(pm: SiaPluginManager, requested: str) -> tuple[str, str]:
    """``(backend name, why)``; ``auto`` picks a backend whose provider key is set."""
    backends = pm.backends()
    if requested != "auto":
        backends.get(requested)
        return requested, "chosen with --backend"
    keyed = [
        b for b in backends if b.key_env_vars and all(os.environ.get(k) for k in b.key_env_vars)
    ]
    if keyed:
        best = max(keyed, key=lambda b: (b.auto_priority, b.name))
        return best.name, f"{', '.join(best.key_env_vars)} is set"
    keyless = [b for b in backends if not b.key_env_vars]
    if not keyless:
        raise SiaError("no usable backend: set a provider key or install sia-backend-local")
    best = max(keyless, key=lambda b: (b.auto_priority, b.name))
    why = "no provider API key is set"
    if best.name == "scripted":
        why += (
            " and no local-model backend is installed, so the deterministic scripted backend "
            "is used (no real LLM; install sia-backend-local for the offline default)"
        )
    return best.name, why


def choose_sandbox(pm: SiaPluginManager, requested: str) -> tuple[str, str]:
    """``(sandbox name, why)``; ``auto`` picks the available sandbox with the highest priority."""

    sandboxes = pm.sandboxes()
    if requested != "auto":
        spec = sandboxes.get(requested)
        ok, reason = resolve(spec.factory)().available()
        if not ok:
            raise SiaError(f"sandbox {requested!r} is not available here: {reason}")
        return requested, "chosen with --sandbox"
    skipped: list[str] = []
    for spec in sorted(sandboxes, key=lambda s: (-s.auto_priority, s.name)):
        ok, reason = resolve(spec.factory)().available()
        if ok:
            why = f"highest-priority available sandbox ({spec.isolation})"
            if skipped:
                why += "; not available: " + "; ".join(skipped)
            return spec.name, why
        skipped.append(f"{spec.name} ({reason})")
    raise SiaError("no sandbox is available: " + "; ".join(skipped))


def check_runner_settings(pm: SiaPluginManager, runner: str, settings: dict[str, Any]) -> None:
    """Refuse an unknown runner, or a ``--runner-opt`` key it does not read, in one line."""
    spec = pm.runners().get(runner)  # an unknown name lists the installed ones
    unknown = sorted(set(settings) - set(spec.settings))
    if unknown:
        known = ", ".join(spec.settings) or "none"
        raise SiaError(
            f"--runner-opt {unknown[0]}: runner {runner!r} has no such setting (known: {known})"
        )


def check_train_settings(pm: SiaPluginManager, settings: dict[str, Any], executor: str) -> None:
    """Refuse an unknown ``--train-opt`` key in one line, with the known ones.

    Known: ``DEFAULT_TRAIN_SETTINGS``, what the executors and the RL objectives declare, and an
    objective's name (a mapping of its settings). When an executor or an objective declares
    nothing, the keys cannot be known and nothing is refused.
    """
    if not settings:
        return
    executors = pm.executors()
    specs = (
        [executors.get(executor)]
        if executor != "auto"
        else [executors.get(n) for n in executors.names()]
    )
    algorithms = [pm.rl_algorithms().get(n) for n in pm.rl_algorithms().names()]
    declared = [s.settings for s in specs] + [a.settings for a in algorithms]
    if not specs or not all(declared):
        return
    known = set(DEFAULT_TRAIN_SETTINGS) | {a.name for a in algorithms}
    for names in declared:
        known |= set(names)
    unknown = sorted(set(settings) - known)
    if unknown:
        near = [m for k in unknown for m in difflib.get_close_matches(k, known, n=1)]
        hint = f" (did you mean {', '.join(near)}?)" if near else ""
        raise SiaError(
            f"unknown --train-opt key(s): {', '.join(unknown)}{hint}; known: {', '.join(sorted(known))}"
        )


# -- running ----------------------------------------------------------------------------------


def start_run(pm: SiaPluginManager, **opts: Any) -> None:
    """``sia --task ...``: create a run (or resume it when the same run id exists)."""

    given = given_settings(opts)
    name, task_dir = resolve_task_dir(pm, given.pop("task", None), given.pop("task_dir", None))
    task = load_task(task_dir)  # a task that cannot be used fails here: one line, no run folder
    runs_dir = Path(opts["runs_dir"])
    backend, backend_why = choose_backend(pm, given["backend"])
    sandbox, sandbox_why = choose_sandbox(pm, given["sandbox"])
    if given["rl_algorithm"] != "auto":
        pm.rl_algorithms().get(given["rl_algorithm"])
    if given["executor"] != "auto":
        pm.executors().get(given["executor"])  # an unknown name lists the installed ones
    check_train_settings(pm, given.get("train_settings") or {}, given["executor"])
    check_runner_settings(pm, given["runner"], given.get("runner_settings") or {})
    config = RunConfig(
        **{**given, "task": name, "task_dir": str(task_dir), "backend": backend, "sandbox": sandbox}
    )
    run_id = opts["run_id"] or _interrupted_twin(runs_dir, config) or next_run_id(runs_dir)
    root = RunStore.path_for(runs_dir, run_id)
    if root.exists() and (root / "run.json").exists():
        old = RunConfig.from_run_json(RunStore.open(runs_dir, run_id).read_json("run.json"))
        if old.identity() != config.identity():
            diff = [k for k in config.identity() if config.identity()[k] != old.identity().get(k)]
            raise SiaError(
                f"run {run_id} exists with different settings ({', '.join(diff)}); "
                f"continue it with `sia resume {run_id}` or choose a new --run_id"
            )
        # what this command does not give anew (generations, caps) stays as stored
        keep = {f: getattr(old, f) for f in ("max_gen", *CAP_FIELDS) if f not in given}
        config = attrs.evolve(config, **keep)
        click.echo(f"sia: run {run_id} exists with the same settings: resuming it", err=True)
    store = RunStore.open(runs_dir, run_id, create=True)
    _header(pm, config, store, backend_why, sandbox_why)
    _drive(pm, config, store, task)


def _interrupted_twin(runs_dir: Path, config: RunConfig) -> str | None:
    """The newest run in ``runs_dir``, if it was interrupted (Ctrl-C, or killed) with the same
    settings: re-running the same command continues it."""
    runs = [r for r in list_runs(runs_dir) if r.isdigit()]  # numbered by sia, not named
    if not runs or not RunStore.path_for(runs_dir, runs[-1]).joinpath("run.json").is_file():
        return None
    info = RunStore.open(runs_dir, runs[-1]).read_json("run.json")
    killed = info.get("status") == "running" and not pid_alive(info.get("pid"))
    stopped = info.get("status") == "failed" and str(info.get("error")).startswith("Keyboard")
    if not (killed or stopped) or RunConfig.from_run_json(info).identity() != config.identity():
        return None
    click.echo(
        f"sia: run {runs[-1]} was interrupted; continuing it (--run_id for a new run)", err=True
    )
    return runs[-1]


def resume_run(
    pm: SiaPluginManager,
    runs_dir: Path,
    run_id: str,
    *,
    max_gen: int | None,
    caps: dict[str, Any] | None = None,
) -> None:
    store = open_run(runs_dir, run_id)
    if not store.exists("run.json"):
        raise SiaError(f"run {run_id} has no run.json; it never started and cannot be resumed")
    config = RunConfig.from_run_json(store.read_json("run.json"))
    if max_gen is not None:
        config = attrs.evolve(config, max_gen=max_gen)
    given = {k: v for k, v in (caps or {}).items() if v is not None}
    if given:
        config = attrs.evolve(config, **given)
    _header(pm, config, store, "from run.json", "from run.json")
    _drive(pm, config, store)


def _header(
    pm: SiaPluginManager, config: Any, store: RunStore, backend_why: str, sandbox_why: str
) -> None:
    click.echo(f"sia: run {store.run_id} in {store.root}", err=True)
    click.echo(f"sia: task {config.task} ({config.task_dir}), max_gen {config.max_gen}", err=True)
    click.echo(f"sia: backend {config.backend}: {backend_why}", err=True)
    click.echo(f"sia: sandbox {config.sandbox}: {sandbox_why}", err=True)
    if config.runner != "local":
        opts = "".join(f", {k}={v}" for k, v in sorted(config.runner_settings.items()))
        runner = pm.runners().get(config.runner).description
        click.echo(f"sia: runner {config.runner}: {runner}{opts}", err=True)
    loaded = list(  # one entry per distribution (a package may register several plugins)
        dict.fromkeys(
            f"{i.distribution or i.name}-{i.version}"
            for i in pm.plugin_infos()
            if not i.error and not i.builtin
        )
    )
    click.echo(f"sia: plugins: {', '.join(loaded) or '(none besides sia-core)'}", err=True)


def _drive(pm: SiaPluginManager, config: Any, store: RunStore, task: Any = None) -> None:

    observer = make_progress()
    pm.register_object(observer, "sia-progress")
    pm.register_object(_CostLines(), "sia-cost-lines")
    try:
        rows = Loop(config, store, pm, task=task).run()
    except KeyboardInterrupt:
        where = (
            ""
            if store.root.parent == Path(DEFAULT_RUNS_DIR).resolve()
            else (f" --runs-dir {store.root.parent}")
        )
        click.echo(
            f"sia: interrupted; every finished step is kept. Continue with: "
            f"sia resume {store.run_id}{where}  (or run the same command again)",
            err=True,
        )
        raise click.exceptions.Exit(130) from None
    finally:
        if hasattr(observer, "close"):
            observer.close()
        pm.unregister_object("sia-progress")
        pm.unregister_object("sia-cost-lines")
    print_summary(store.run_id, rows)
    click.echo(weights_lever_line(store))


class _CostLines:
    """Prints the cost estimate before a run starts (only when a model has a price)."""

    @hookimpl
    def sia_on_event(self, event: Any) -> None:
        if event.type == "cost_estimate":
            d = event.data
            click.echo(f"sia: cost estimate ~{fmt_usd(d.get('usd'))}: {d.get('basis')}", err=True)
