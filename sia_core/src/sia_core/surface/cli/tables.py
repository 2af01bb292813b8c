"""What ``sia plugins``, ``tasks``, ``runs``, ``show``, ``compare`` and ``validate-task``
print: tables of plugins, tasks and runs, one run or generation in detail, two runs side by
side."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import click

from sia_core.contracts.errors import SiaError
from sia_core.contracts.records import to_dict
from sia_core.machinery.fs import pid_alive
from sia_core.machinery.ledger import read_entries, step_seconds, totals
from sia_core.machinery.plugins import Registry, SiaPluginManager
from sia_core.machinery.pricing import fmt_usd
from sia_core.machinery.runstore import CANARY_RESULT, SEALED, RunStore, list_runs
from sia_core.services.summary import GenRow, summarize, weights_lever_line
from sia_core.services.taskdir import validate_task
from sia_core.surface.cli.display import (
    echo_json,
    fmt_cost,
    fmt_score,
    fmt_seconds,
    print_summary,
)

# -- listing ----------------------------------------------------------------------------------


def plugins_table(pm: SiaPluginManager, as_json: bool) -> None:
    provides: dict[str, dict[str, list[str]]] = {}
    kinds: dict[str, Callable[[], Registry[Any]]] = {
        "backends": pm.backends,
        "sandboxes": pm.sandboxes,
        "runners": pm.runners,
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
        echo_json({"plugins": rows, "conflicts": conflicts})
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
        echo_json({"tasks": rows})
        return
    for r in rows:
        click.echo(f"{r['name']:24} {r['description']}  [{r['plugin']}]")


def open_run(runs_dir: Path, run_id: str) -> RunStore:
    """Open an existing run; an unknown id is one line listing the runs there are."""
    if not RunStore.path_for(Path(runs_dir).resolve(), run_id).is_dir():
        known = list_runs(Path(runs_dir))
        there = f"runs there: {', '.join(known)}" if known else "there are no runs there"
        raise SiaError(f"no run {run_id!r} in {runs_dir} ({there})")
    return RunStore.open(runs_dir, run_id)


def run_overview(runs_dir: Path, run_id: str) -> dict[str, Any]:
    """A run's status and per-generation rows, as ``sia runs`` / ``sia show`` print them."""

    store = open_run(runs_dir, run_id)
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
        "weights_lever": weights_lever_line(store),
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


def runs_table(runs_dir: Path, as_json: bool) -> None:
    rows = []
    for run_id in list_runs(runs_dir):
        try:
            rows.append(run_overview(runs_dir, run_id))
        except SiaError as exc:
            rows.append({"run_id": run_id, "status": "unreadable", "stop_reason": str(exc)})
    if as_json:
        echo_json({"runs": [{k: v for k, v in r.items() if k != "gens"} for r in rows]})
        return
    if not rows:
        click.echo(f"no runs in {runs_dir}")
        return
    for r in rows:
        best = (
            f"best dev {fmt_score(r.get('best_dev'))} (gen {r.get('best_gen')})"
            if r.get("best_gen")
            else "no score yet"
        )
        cost = (
            f"  cost {fmt_usd(r.get('cost_usd'))} tokens {r.get('tokens', 0)} "
            f"train {fmt_seconds(r.get('train_seconds'))} time {fmt_seconds(r.get('wall_seconds'))}"
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
            echo_json(ov)
            return
        click.echo(
            f"run {run_id}: task {ov['task']}, {ov['status']}"
            + (f" ({ov['stop_reason']})" if ov["stop_reason"] else "")
        )
        click.echo(
            f"cost {fmt_usd(ov['cost_usd'])}, {ov['tokens']} tokens in {ov['llm_calls']} LLM "
            f"calls, training {ov['train_seconds']:.1f} device-s, wall time "
            f"{fmt_seconds(ov['wall_seconds'])}"
        )
        print_summary(run_id, [GenRow(**g) for g in ov["gens"]])
        click.echo(ov["weights_lever"])
        return
    store = open_run(runs_dir, run_id)
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
        echo_json(detail)
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
        extra = m["dev"].get("extra") or {}
        if extra.get("rule"):  # the task's own figure divides differently: both are shown
            click.echo(f"  task's own figure {extra.get('task_figure')}: {extra['rule']}")
        if (extra.get("program") or {}).get("status", "ok") != "ok":
            click.echo(
                f"  program: {extra['program']['status']}, exit status {extra['program']['exit_status']}"
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
        echo_json(data)
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
                fmt_score(g["dev"]) + mark,
                fmt_cost(g["cost_usd"]),
                str(g["tokens"]),
                fmt_seconds(g["seconds"]),
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
        return f"{fmt_score(s['best_dev'])} (gen {s['best_gen']})" if s["best_gen"] else "-"

    delta = ""
    if a["best_dev"] is not None and b["best_dev"] is not None:
        delta = f", {b['best_dev'] - a['best_dev']:+.4f}"
    same_task = "" if a["task"] == b["task"] else f" (different tasks: {a['task']}, {b['task']})"
    return (
        f"run {b['run_id']} vs run {a['run_id']}{same_task}: best dev {best(b)} vs {best(a)}"
        f"{delta}; cost {fmt_usd(b['cost_usd'])} vs {fmt_usd(a['cost_usd'])}; "
        f"time {fmt_seconds(b['wall_seconds'])} vs {fmt_seconds(a['wall_seconds'])}; "
        f"{len(b['levers'])} vs {len(a['levers'])} generations"
    )
