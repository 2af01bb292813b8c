"""What the CLI commands do: start/resume runs, and list plugins, tasks and runs."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import click

from . import hookimpl
from .canary import CANARY_RESULT
from .errors import SiaError
from .fs import pid_alive
from .ledger import fmt_usd, read_entries, totals
from .plugins import Registry, SiaPluginManager
from .records import to_dict
from .runstore import SEALED, RunStore, list_runs, next_run_id


def _echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False, default=str))


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
    from .plugins import resolve

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


def _settings(pairs: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SiaError(f"{pair!r}: expected KEY=VALUE")
        out[key.strip()] = value
    return out


def _train_settings(pairs: tuple[str, ...]) -> dict[str, Any]:
    """``--train-opt KEY=VALUE`` pairs, values parsed as JSON where they parse (numbers, bools)."""
    out: dict[str, Any] = {}
    for key, value in _settings(pairs).items():
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


# -- running ----------------------------------------------------------------------------------


def start_run(pm: SiaPluginManager, **opts: Any) -> None:
    """``sia --task ...``: create a run (or resume it when the same run id exists)."""
    from .loop import RunConfig
    from .taskdir import load_task

    name, task_dir = resolve_task_dir(pm, opts["task"], opts["task_dir"])
    task = load_task(task_dir)  # a task that cannot be used fails here: one line, no run folder
    runs_dir = Path(opts["runs_dir"])
    backend, backend_why = choose_backend(pm, opts["backend"])
    sandbox, sandbox_why = choose_sandbox(pm, opts["sandbox"])
    if opts["rl_algorithm"] != "auto":
        pm.rl_algorithms().get(opts["rl_algorithm"])
    if opts["executor"] != "auto":
        pm.executors().get(opts["executor"])  # an unknown name lists the installed ones
    config = RunConfig(
        task=name,
        task_dir=str(task_dir),
        max_gen=opts["max_gen"] or 3,
        backend=backend,
        backend_settings=_settings(opts["backend_opts"]),
        meta_model=opts["meta_model"],
        task_model=opts["task_model"],
        lever=opts["lever"],
        rl_algorithm=opts["rl_algorithm"],
        sandbox=sandbox,
        seed=opts["seed"],
        gate_margin=opts["gate_margin"],
        parallel=opts["parallel"],
        item_timeout_s=opts["item_timeout_s"],
        max_calls_per_gen=opts["max_calls_per_gen"],
        max_tokens_per_gen=opts["max_tokens_per_gen"],
        max_run_tokens=opts["max_run_tokens"],
        max_usd=opts["max_usd"],
        max_train_seconds=opts["max_train_seconds"],
        test_eval=opts["test_eval"],
        executor=opts["executor"],
        train_settings=_train_settings(opts["train_opts"]),
    )
    run_id = opts["run_id"] or next_run_id(runs_dir)
    root = RunStore.path_for(runs_dir, run_id)
    if root.exists() and (root / "run.json").exists():
        old = RunConfig(**_config_fields(RunStore.open(runs_dir, run_id).read_json("run.json")))
        if old.identity() != config.identity():
            diff = [k for k in config.identity() if config.identity()[k] != old.identity().get(k)]
            raise SiaError(
                f"run {run_id} exists with different settings ({', '.join(diff)}); "
                f"continue it with `sia resume {run_id}` or choose a new --run_id"
            )
        if opts["max_gen"] is None:
            config = attrs.evolve(config, max_gen=old.max_gen)
        config = _keep_caps(config, old)
        click.echo(f"sia: run {run_id} exists with the same settings: resuming it", err=True)
    store = RunStore.open(runs_dir, run_id, create=True)
    _header(pm, config, store, backend_why, sandbox_why)
    _drive(pm, config, store, task)


def resume_run(
    pm: SiaPluginManager,
    runs_dir: Path,
    run_id: str,
    *,
    max_gen: int | None,
    caps: dict[str, Any] | None = None,
) -> None:
    from .loop import RunConfig

    store = _open_run(runs_dir, run_id)
    if not store.exists("run.json"):
        raise SiaError(f"run {run_id} has no run.json; it never started and cannot be resumed")
    config = RunConfig(**_config_fields(store.read_json("run.json")))
    if max_gen is not None:
        config = attrs.evolve(config, max_gen=max_gen)
    given = {k: v for k, v in (caps or {}).items() if v is not None}
    if given:
        config = attrs.evolve(config, **given)
    _header(pm, config, store, "from run.json", "from run.json")
    _drive(pm, config, store)


def _keep_caps(config: Any, old: Any) -> Any:
    """A re-run keeps the stored caps it does not give anew (as ``sia resume`` does)."""
    from .loop import CAP_FIELDS

    keep = {f: getattr(old, f) for f in CAP_FIELDS if getattr(config, f) is None}
    return attrs.evolve(config, **keep)


def _open_run(runs_dir: Path, run_id: str) -> RunStore:
    """Open an existing run; an unknown id is one line listing the runs there are."""
    if not RunStore.path_for(Path(runs_dir).resolve(), run_id).is_dir():
        known = list_runs(Path(runs_dir))
        there = f"runs there: {', '.join(known)}" if known else "there are no runs there"
        raise SiaError(f"no run {run_id!r} in {runs_dir} ({there})")
    return RunStore.open(runs_dir, run_id)


def _config_fields(run_json: dict[str, Any]) -> dict[str, Any]:
    from .loop import RunConfig

    names = {f.name for f in attrs.fields(RunConfig)}
    return {k: v for k, v in run_json["config"].items() if k in names}


def _header(
    pm: SiaPluginManager, config: Any, store: RunStore, backend_why: str, sandbox_why: str
) -> None:
    click.echo(f"sia: run {store.run_id} in {store.root}", err=True)
    click.echo(f"sia: task {config.task} ({config.task_dir}), max_gen {config.max_gen}", err=True)
    click.echo(f"sia: backend {config.backend}: {backend_why}", err=True)
    click.echo(f"sia: sandbox {config.sandbox}: {sandbox_why}", err=True)
    loaded = [
        f"{i.distribution or i.name}-{i.version}"
        for i in pm.plugin_infos()
        if not i.error and not i.builtin
    ]
    click.echo(f"sia: plugins: {', '.join(loaded) or '(none besides sia-core)'}", err=True)


def _drive(pm: SiaPluginManager, config: Any, store: RunStore, task: Any = None) -> None:
    from .loop import Loop
    from .progress import make_progress

    observer = make_progress()
    pm.register_object(observer, "sia-progress")
    pm.register_object(_CostLines(), "sia-cost-lines")
    try:
        rows = Loop(config, store, pm, task=task).run()
    finally:
        if hasattr(observer, "close"):
            observer.close()
        pm.unregister_object("sia-progress")
        pm.unregister_object("sia-cost-lines")
    _print_summary(store.run_id, rows)


class _CostLines:
    """Prints the cost estimate before a run starts (only when a model has a price)."""

    @hookimpl
    def sia_on_event(self, event: Any) -> None:
        if event.type == "cost_estimate":
            d = event.data
            click.echo(f"sia: cost estimate ~{fmt_usd(d.get('usd'))}: {d.get('basis')}", err=True)


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.4f}"


def _print_summary(run_id: str, rows: list[Any]) -> None:
    """The per-generation table; cost and training columns only when a run has them."""
    from rich.console import Console
    from rich.table import Table

    has_cost = any(getattr(r, "cost_usd", 0.0) for r in rows)
    has_train = any(getattr(r, "train_seconds", 0.0) for r in rows)
    columns = [
        "gen",
        "parent",
        "lever",
        "RL objective",
        "dev",
        "test (sealed)",
        "best",
        "status",
        "time s",
        "tokens",
    ]
    columns += ["cost $"] * has_cost + ["train s"] * has_train
    table = Table(title=f"run {run_id}")
    for col in columns:
        table.add_column(col)
    for r in rows:
        cells = [
            str(r.gen),
            str(r.parent if r.parent is not None else "-"),
            r.lever,
            r.rl_algorithm or "-",
            _fmt(r.dev),
            _fmt(r.test),
            "*" if r.incumbent else "",
            r.status,
            f"{r.seconds:.1f}",
            str(getattr(r, "tokens", 0)),
        ]
        cells += [_fmt_cost(r.cost_usd)] * has_cost + [f"{r.train_seconds:.1f}"] * has_train
        table.add_row(*cells)
    console = Console(stderr=False)
    if not console.is_terminal:
        console = Console(stderr=False, width=max(console.width, 132))
    console.print(table)


# -- listing ----------------------------------------------------------------------------------


def plugins_table(pm: SiaPluginManager, as_json: bool) -> None:
    provides: dict[str, dict[str, list[str]]] = {}
    kinds: dict[str, Callable[[], Registry[Any]]] = {
        "backends": pm.backends,
        "sandboxes": pm.sandboxes,
        "rl_algorithms": pm.rl_algorithms,
        "executors": pm.executors,
        "tasks": pm.tasks,
    }
    conflicts = []
    for kind, get in kinds.items():
        try:
            reg = get()
        except SiaError as exc:
            conflicts.append(str(exc))
            continue
        for name in reg.names():
            provides.setdefault(reg.provider(name), {}).setdefault(kind, []).append(name)
    rows = [
        {**to_dict(attrs.asdict(i, recurse=False)), "provides": provides.get(i.name, {})}
        for i in pm.plugin_infos()
    ]
    if as_json:
        _echo_json({"plugins": rows, "conflicts": conflicts})
        return
    for r in rows:
        ver = f" {r['version']}" if r["version"] else ""
        if r["error"]:
            click.echo(f"FAILED  {r['name']} ({r['distribution']}{ver}): {r['error']}")
            continue
        prov = "; ".join(f"{k}: {', '.join(v)}" for k, v in r["provides"].items())
        what = f"provides {prov}" if prov else f"hooks {', '.join(r['hooks'])}"
        click.echo(f"ok      {r['name']} ({r['distribution'] or 'object'}{ver}) {what}")
    for c in conflicts:
        click.echo(f"CONFLICT {c}")


def tasks_table(pm: SiaPluginManager, as_json: bool) -> None:
    reg = pm.tasks()
    rows = [
        {
            "name": t.name,
            "plugin": reg.provider(t.name),
            "path": t.path,
            "description": t.description,
        }
        for t in reg
    ]
    if as_json:
        _echo_json({"tasks": rows})
        return
    for r in rows:
        click.echo(f"{r['name']:24} {r['description']}  [{r['plugin']}]")


def run_overview(runs_dir: Path, run_id: str) -> dict[str, Any]:
    """A run's status and per-generation rows, as ``sia runs`` / ``sia show`` print them."""
    from .ledger import step_seconds
    from .loop import summarize

    store = _open_run(runs_dir, run_id)
    info = store.read_json("run.json") if store.exists("run.json") else {}
    status = info.get("status", "unknown")
    if status == "running" and not pid_alive(info.get("pid")):
        status = "interrupted"
    rows = summarize(store)
    done = [r for r in rows if r.dev is not None]
    best = next((r for r in rows if r.incumbent), None)
    return {
        "run_id": run_id,
        "task": info.get("config", {}).get("task"),
        "status": status,
        "stop_reason": info.get("stop_reason") or info.get("error"),
        "generations": len(done),
        "max_gen": info.get("config", {}).get("max_gen"),
        "best_gen": best.gen if best else None,
        "best_dev": best.dev if best else None,
        **_cost_columns(store, step_seconds(store)),
        "stopped_by_cap": info.get("stopped_by_cap"),
        "gens": [to_dict(attrs.asdict(r)) for r in rows],
    }


def _cost_columns(store: RunStore, seconds: dict[int, float]) -> dict[str, Any]:
    """A run's cost, tokens, training and wall seconds, from its ledger and events."""
    tot = totals(read_entries(store.root, store))
    return {
        "cost_usd": tot["cost_usd"],
        "tokens": tot["tokens"],
        "llm_calls": tot["llm_calls"],
        "train_seconds": tot["train_device_seconds"],
        "wall_seconds": round(sum(seconds.values()), 2),
    }


def _fmt_cost(x: float | None) -> str:
    return "-" if x is None else fmt_usd(x).removeprefix("$")


def _fmt_seconds(s: float | None) -> str:
    if s is None:
        return "-"
    if s < 120:
        return f"{s:.0f}s"
    if s < 7200:
        return f"{s / 60:.1f}m"
    return f"{s / 3600:.1f}h"


def runs_table(runs_dir: Path, as_json: bool) -> None:
    rows = []
    for run_id in list_runs(runs_dir):
        try:
            rows.append(run_overview(runs_dir, run_id))
        except SiaError as exc:
            rows.append({"run_id": run_id, "status": "unreadable", "stop_reason": str(exc)})
    if as_json:
        _echo_json({"runs": [{k: v for k, v in r.items() if k != "gens"} for r in rows]})
        return
    if not rows:
        click.echo(f"no runs in {runs_dir}")
        return
    for r in rows:
        best = (
            f"best dev {_fmt(r.get('best_dev'))} (gen {r.get('best_gen')})"
            if r.get("best_gen")
            else "no score yet"
        )
        cost = (
            f"  cost {fmt_usd(r.get('cost_usd'))} tokens {r.get('tokens', 0)} "
            f"train {_fmt_seconds(r.get('train_seconds'))} time {_fmt_seconds(r.get('wall_seconds'))}"
            if "cost_usd" in r
            else ""
        )
        click.echo(
            f"run {r['run_id']:>4}  {r.get('task') or '?':20} {r['status']:11} "
            f"gens {r.get('generations', 0)}/{r.get('max_gen') or '?'}  {best}{cost}"
        )


def show_run(runs_dir: Path, run_id: str, gen: int | None, as_json: bool) -> None:
    ov = run_overview(runs_dir, run_id)
    if gen is None:
        if as_json:
            _echo_json(ov)
            return
        click.echo(
            f"run {run_id}: task {ov['task']}, {ov['status']}"
            + (f" ({ov['stop_reason']})" if ov["stop_reason"] else "")
        )
        click.echo(
            f"cost {fmt_usd(ov['cost_usd'])}, {ov['tokens']} tokens in {ov['llm_calls']} LLM "
            f"calls, training {ov['train_seconds']:.1f} device-s, wall time "
            f"{_fmt_seconds(ov['wall_seconds'])}"
        )
        from .loop import GenRow

        _print_summary(run_id, [GenRow(**g) for g in ov["gens"]])
        return
    store = _open_run(runs_dir, run_id)
    gdir = store.gen_dir(gen)
    if not gdir.exists():
        raise SiaError(f"run {run_id} has no generation {gen}")
    detail: dict[str, Any] = {"run_id": run_id, "gen": gen}
    for name in ("decision.json", "metrics.json", "cost.json"):
        if (gdir / name).exists():
            detail[name.removesuffix(".json")] = store.read_json(gdir / name)
    if (gdir / SEALED / "metrics_test.json").exists():
        detail["test"] = store.read_json(gdir / SEALED / "metrics_test.json")
    if (gdir / CANARY_RESULT).exists():
        detail["canary"] = store.read_json(gdir / CANARY_RESULT)
    for name in ("improvement.md", "diff.patch"):
        if (gdir / name).exists():
            detail[name] = (gdir / name).read_text(encoding="utf-8")
    if as_json:
        _echo_json(detail)
        return
    d = detail.get("decision", {})
    click.echo(
        f"gen {gen}: lever {d.get('lever')} from gen {d.get('parent_gen')} ({d.get('source')})"
    )
    click.echo(f"  why: {d.get('rationale')}")
    for note in d.get("notes", []):
        click.echo(f"  note: {note}")
    if "metrics" in detail:
        m = detail["metrics"]
        click.echo(
            f"  dev {m['dev']['score']:.4f} over {m['dev']['n_items']} items; "
            f"errors {m['n_errors']}, timeouts {m['n_timeouts']}, llm calls {m['llm_calls']}"
        )
        if m.get("voided"):
            click.echo(f"  VOIDED, refused by the gate: {m['voided']}")
    if "canary" in detail:
        c = detail["canary"]
        click.echo(
            f"  canaries: {c['hits']} of {c['n']} right (chance {c['chance']:.2f} each, "
            f"p = {c['p_value']:.2g}; flagged below {c['alpha']:g})"
        )
    if "test" in detail:
        click.echo(f"  test (sealed, report only) {detail['test']['score']:.4f}")
    if "cost" in detail:
        c = detail["cost"]
        click.echo(
            f"  cost {fmt_usd(c['cost_usd'])}: {c['tokens']} tokens in {c['llm_calls']} LLM calls, "
            f"training {c['train_device_seconds']:.1f} device-s, {c['wall_seconds']:.1f}s wall"
        )
    click.echo("\n" + detail.get("improvement.md", ""))
    click.echo(detail.get("diff.patch", ""))


def validate_task_cmd(pm: SiaPluginManager, task: str) -> None:
    from .taskdir import validate_task

    path = Path(task)
    looks_like_task = (path / "task.toml").is_file() or (path / "data/public/task.md").is_file()
    if not path.is_dir() or (not looks_like_task and task in pm.tasks()):
        path = Path(pm.tasks().get(task).path)
    problems = validate_task(path)
    if not problems:
        click.echo(f"{path}: ok")
        return
    for p in problems:
        click.echo(f"{path / p.file if p.file != '.' else path}: {p.message}")
    raise SiaError(f"{len(problems)} problem(s) in task {task}")


# -- comparing --------------------------------------------------------------------------------


def compare_runs(runs_dir: Path, run_a: str, run_b: str, as_json: bool) -> None:
    """``sia compare A B``: per generation lever, dev, cost, time; sealed test; a summary."""
    a, b = run_overview(runs_dir, run_a), run_overview(runs_dir, run_b)
    data = compare_data(a, b)
    if as_json:
        _echo_json(data)
        return
    from rich.console import Console

    console = Console()
    header = ["gen"]
    for ov in (a, b):
        cols = ("lever", "dev", "cost $", "tokens", "time")
        header += [f"run {ov['run_id']} {col}" for col in cols]
    rows = []
    for row in data["generations"]:
        cells = [str(row["gen"])]
        for side in ("a", "b"):
            g = row[side]
            if g is None:
                cells += [""] * 5
                continue
            mark = "*" if g["incumbent"] else ""
            cells += [
                g["lever"] + (f" ({g['rl_algorithm']})" if g.get("rl_algorithm") else ""),
                _fmt(g["dev"]) + mark,
                _fmt_cost(g["cost_usd"]),
                str(g["tokens"]),
                _fmt_seconds(g["seconds"]),
            ]
        rows.append(cells)
    tests = [
        f"run {ov['run_id']}: "
        + (", ".join(f"gen {g}: {s:.4f}" for g, s in data[side]["test"].items()) or "not scored")
        for side, ov in (("a", a), ("b", b))
    ]
    if console.is_terminal:
        from rich.table import Table

        table = Table(title=f"run {a['run_id']} vs run {b['run_id']} (* incumbent)")
        for col in header:
            table.add_column(col)
        for cells in rows:
            table.add_row(*cells)
        console.print(table)
    else:
        click.echo("\t".join(header))
        for cells in rows:
            click.echo("\t".join(cells))
    click.echo("sealed test (report only): " + "; ".join(tests))
    click.echo(data["summary"])


def compare_data(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Two :func:`run_overview` results side by side, with a one-line summary."""
    by_gen = [{g["gen"]: g for g in ov["gens"]} for ov in (a, b)]
    gens = sorted(set(by_gen[0]) | set(by_gen[1]))
    keep = ("gen", "lever", "rl_algorithm", "dev", "incumbent", "status", "seconds")
    cost = ("cost_usd", "tokens", "train_seconds")

    def gen_row(g: dict[str, Any] | None) -> dict[str, Any] | None:
        return None if g is None else {k: g.get(k) for k in (*keep, *cost)}

    def side(ov: dict[str, Any]) -> dict[str, Any]:
        return {
            "run_id": ov["run_id"],
            "task": ov["task"],
            "status": ov["status"],
            "best_gen": ov["best_gen"],
            "best_dev": ov["best_dev"],
            "levers": [g["lever"] for g in ov["gens"]],
            "test": {str(g["gen"]): g["test"] for g in ov["gens"] if g.get("test") is not None},
            **{k: ov[k] for k in ("cost_usd", "tokens", "llm_calls", "train_seconds")},
            "wall_seconds": ov["wall_seconds"],
        }

    sa, sb = side(a), side(b)
    return {
        "a": sa,
        "b": sb,
        "generations": [
            {"gen": g, "a": gen_row(by_gen[0].get(g)), "b": gen_row(by_gen[1].get(g))} for g in gens
        ],
        "summary": _summary_line(sa, sb),
    }


def _summary_line(a: dict[str, Any], b: dict[str, Any]) -> str:
    def best(s: dict[str, Any]) -> str:
        return f"{_fmt(s['best_dev'])} (gen {s['best_gen']})" if s["best_gen"] else "-"

    delta = ""
    if a["best_dev"] is not None and b["best_dev"] is not None:
        delta = f", {b['best_dev'] - a['best_dev']:+.4f}"
    same_task = "" if a["task"] == b["task"] else f" (different tasks: {a['task']}, {b['task']})"
    return (
        f"run {b['run_id']} vs run {a['run_id']}{same_task}: best dev {best(b)} vs {best(a)}"
        f"{delta}; cost {fmt_usd(b['cost_usd'])} vs {fmt_usd(a['cost_usd'])}; "
        f"time {_fmt_seconds(b['wall_seconds'])} vs {_fmt_seconds(a['wall_seconds'])}; "
        f"{len(b['levers'])} vs {len(a['levers'])} generations"
    )
