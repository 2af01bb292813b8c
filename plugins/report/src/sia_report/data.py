"""Read a run folder into plain data for the report, defensively.

The run may be finished, still going, or killed: every artifact is optional, a file that cannot
be read is recorded as a problem (the report says so) and never raises. Nothing here writes to
the run folder, and ``events.jsonl`` is read without the run store (which would repair a cut
line in place while the run may still be appending to it).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import attrs

from sia_core.contracts.records import Event
from sia_core.machinery.fs import pid_alive
from sia_core.machinery.runstate import RunState

STEPS = ("propose", "train", "run", "score", "gate", "test")


@attrs.frozen(kw_only=True)
class TrainInfo:
    """A weights generation's training job: its log lines and outcome."""

    status: str  # "ok" | "failed" | "running" | "missing"
    algorithm: str | None = None
    executor: str | None = None
    error: str = ""
    log_path: str | None = None
    steps: tuple[dict[str, Any], ...] = ()  # train_log.jsonl lines
    metrics: dict[str, Any] = attrs.field(factory=dict)
    settings: dict[str, Any] = attrs.field(factory=dict)


@attrs.frozen(kw_only=True)
class GenInfo:
    """One generation as the report shows it."""

    gen: int
    status: str  # done | running | incomplete | stopped
    parent: int | None = None
    lever: str | None = None
    source: str | None = None
    rationale: str = ""
    proposed_lever: str | None = None
    rl_algorithm: str | None = None
    algorithm_fits: tuple[dict[str, Any], ...] = ()
    reward_stats: dict[str, Any] | None = None
    notes: tuple[str, ...] = ()
    dev: float | None = None
    dev_items: int | None = None
    test: float | None = None
    test_items: int | None = None
    accepted: bool | None = None
    incumbent_after: int | None = None  # the incumbent once this generation was gated
    gate_reason: str = ""
    step_seconds: dict[str, float] = attrs.field(factory=dict)
    started: float | None = None
    finished: float | None = None
    llm_calls: int | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cost_usd: float | None = None
    n_errors: int | None = None
    n_timeouts: int | None = None
    ledger: dict[str, Any] = attrs.field(factory=dict)  # per-generation cost ledger, if any
    calls: int | None = None  # task-model calls of the dev run (agent_execution.json)
    failed_calls: int = 0
    first_call_error: str = ""
    train: TrainInfo | None = None
    diff: str | None = None
    improvement: str | None = None
    missing: tuple[str, ...] = ()  # artifacts a finished step should have left and did not

    @property
    def seconds(self) -> float:
        return round(sum(self.step_seconds.values()), 3)


@attrs.frozen(kw_only=True)
class RunInfo:
    """A whole run as the report shows it."""

    run_id: str
    run_dir: str
    status: str  # running | finished | stopped | failed | interrupted | unknown
    task: str | None = None
    config: dict[str, Any] = attrs.field(factory=dict)
    stop_reason: str = ""
    created: float | None = None
    updated: float | None = None
    last_event: float | None = None
    backend: str | None = None
    task_model: str | None = None
    sandbox: str | None = None
    incumbent: int | None = None
    gens: tuple[GenInfo, ...] = ()
    cost: dict[str, Any] = attrs.field(factory=dict)  # run-level ledger totals, if any
    caps: dict[str, Any] = attrs.field(factory=dict)
    stopped_by_cap: dict[str, Any] = attrs.field(factory=dict)
    estimate: dict[str, Any] = attrs.field(factory=dict)
    problems: tuple[str, ...] = ()


class _Reader:
    """Reads artifacts of one run folder, collecting problems instead of raising."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.problems: list[str] = []

    def json(self, rel: str | Path) -> Any:
        path = self.root / rel
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            self.problems.append(f"{path.relative_to(self.root)} is unreadable ({exc})")
            return None

    def text(self, rel: str | Path) -> str | None:
        path = self.root / rel
        try:
            return path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return None
        except OSError as exc:
            self.problems.append(f"{path.relative_to(self.root)} is unreadable ({exc})")
            return None

    def jsonl(self, path: Path) -> list[dict[str, Any]]:
        """Lines of a JSON-lines file; a line cut short (a live or killed writer) is skipped."""
        try:
            raw = path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return []
        rows = []
        for line in raw.splitlines():
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if isinstance(row, dict):
                rows.append(row)
        return rows


def as_num(x: Any) -> float | None:
    return float(x) if isinstance(x, int | float) and not isinstance(x, bool) else None


def as_int(x: Any) -> int | None:
    return int(x) if isinstance(x, int | float) and not isinstance(x, bool) else None


def _dict(x: Any) -> dict[str, Any]:
    return x if isinstance(x, dict) else {}


def _gen_ledger(cost: dict[str, Any], gen: int) -> dict[str, Any]:
    """The run ledger's entry for ``gen`` (keyed by generation, or a list with a gen field)."""
    for key in ("per_gen", "per_generation", "generations", "gens"):
        block = cost.get(key)
        if isinstance(block, dict):
            entry = block.get(str(gen), block.get(gen))  # type: ignore[call-overload]
            if isinstance(entry, dict):
                return entry
        if isinstance(block, list):
            for entry in block:
                if isinstance(entry, dict) and entry.get("gen") == gen:
                    return {k: v for k, v in entry.items() if k != "gen"}
    return {}


def _run_cost(run_json: dict[str, Any]) -> dict[str, Any]:
    for key in ("cost", "ledger", "costs", "usage"):
        value = run_json.get(key)
        if isinstance(value, dict):
            return value
    return {}


def _train_info(r: _Reader, gdir: Path, gen: int, finished: dict[str, Any] | None) -> TrainInfo:
    rel = gdir.relative_to(r.root)
    job = _dict(r.json(rel / "train_job.json"))
    result = r.json(rel / "train_result.json")
    log_path: Path | None = None
    if isinstance(result, dict) and str(result.get("log") or "").endswith(".jsonl"):
        log_path = Path(str(result["log"]))
        if not log_path.is_absolute():
            log_path = r.root / log_path
    for candidate in (
        Path(str(result.get("adapter"))) / "train_log.jsonl"
        if isinstance(result, dict) and result.get("adapter")
        else None,
        gdir / "adapter" / "train_log.jsonl",
    ):
        if (log_path is None or not log_path.exists()) and candidate and candidate.exists():
            log_path = candidate
    steps = tuple(r.jsonl(log_path)) if log_path is not None else ()
    if isinstance(result, dict):
        status = str(result.get("status") or "?")
        error = str(result.get("error") or "")
        metrics = _dict(result.get("metrics"))
    else:
        status, error, metrics = ("running" if finished is None else "missing"), "", {}
    return TrainInfo(
        status=status,
        algorithm=(finished or {}).get("algorithm") or job.get("algorithm"),
        executor=(finished or {}).get("executor"),
        error=error,
        log_path=str(log_path) if log_path is not None else None,
        steps=steps,
        metrics=metrics or {},
        settings=_dict(job.get("settings")),
    )


def read_run(run_dir: str | Path) -> RunInfo:
    """Everything the report shows about the run in ``run_dir`` (any state, never raises on
    a missing or unreadable artifact)."""
    root = Path(run_dir)
    r = _Reader(root)
    run_json = _dict(r.json("run.json"))
    config = _dict(run_json.get("config"))
    events = r.jsonl(root / "events.jsonl")

    status = str(run_json.get("status") or "unknown")
    if status == "running" and not pid_alive(run_json.get("pid")):
        status = "interrupted"
    stop_reason = str(run_json.get("stop_reason") or run_json.get("error") or "")

    started = next((e for e in events if e.get("type") in ("run_started", "run_resumed")), None)
    start_data = _dict(started.get("data")) if started else {}
    step_seconds: dict[int, dict[str, float]] = {}
    gen_start: dict[int, float] = {}
    gen_end: dict[int, float] = {}
    # the incumbent as the gate events say (run.json's, from before any gate, otherwise)
    state = RunState.from_events(
        Event(type=str(e.get("type")), run_id="", gen=as_int(e.get("gen")), data=e["data"])
        for e in events
        if isinstance(e.get("data"), dict)
    )
    incumbent = state.incumbent if state.gates else run_json.get("incumbent")
    for e in events:
        gen, data = e.get("gen"), e.get("data") or {}
        if not isinstance(data, dict):
            continue
        if e.get("type") == "gen_started" and isinstance(gen, int):
            gen_start.setdefault(gen, as_num(e.get("ts")) or 0.0)
        if e.get("type") == "step_finished" and isinstance(gen, int):
            step = str(data.get("step"))
            secs = as_num(data.get("seconds")) or 0.0
            step_seconds.setdefault(gen, {})[step] = step_seconds.get(gen, {}).get(step, 0) + secs
            gen_end[gen] = as_num(e.get("ts")) or 0.0

    cost = _run_cost(run_json)
    gen_dirs = []
    for p in root.glob("gen_*"):
        if p.is_dir() and p.name[4:].isdigit():
            gen_dirs.append((int(p.name[4:]), p))
    known = {g for g, _ in gen_dirs} | set(gen_start)
    gens = []
    for gen in sorted(known):
        gdir = root / f"gen_{gen}"
        rel = Path(f"gen_{gen}")
        decision = _dict(r.json(rel / "decision.json"))
        metrics = _dict(r.json(rel / "metrics.json"))
        test = _dict(r.json(rel / "sealed" / "metrics_test.json"))
        gate = state.steps.get((gen, "gate"))
        lever = decision.get("lever")
        if gate is not None:
            gstatus = "done"
        elif lever == "stop":
            gstatus = "stopped"
        elif status == "running":
            gstatus = "running"
        else:
            gstatus = "incomplete"
        missing = [
            name
            for step, name in (
                ("propose", "decision.json"),
                ("score", "metrics.json"),
                ("test", "sealed/metrics_test.json"),
            )
            if (gen, step) in state.steps and not (gdir / name).exists()
        ]
        train = None
        if lever in ("weights", "both") or (gdir / "train_job.json").exists():
            train = _train_info(r, gdir, gen, state.steps.get((gen, "train")))
        execution = _dict(r.json(rel / "agent_execution.json")) if metrics else {}
        calls = [c for c in execution.get("calls") or () if isinstance(c, dict)]
        failed = [c for c in calls if c.get("status") not in (None, "ok")]
        dev = _dict(metrics.get("dev"))
        stats = decision.get("reward_stats")
        gens.append(
            GenInfo(
                gen=gen,
                status=gstatus,
                parent=as_int(decision.get("parent_gen")),
                lever=lever,
                source=decision.get("source"),
                rationale=str(decision.get("rationale") or ""),
                proposed_lever=decision.get("proposed_lever"),
                rl_algorithm=decision.get("rl_algorithm"),
                algorithm_fits=tuple(
                    f for f in decision.get("algorithm_fits") or () if isinstance(f, dict)
                ),
                reward_stats=stats if isinstance(stats, dict) else None,
                notes=tuple(str(n) for n in decision.get("notes") or ()),
                dev=as_num(dev.get("score")),
                dev_items=as_int(dev.get("n_items")),
                test=as_num(test.get("score")),
                test_items=as_int(test.get("n_items")),
                accepted=gate.get("accepted") if gate else None,
                incumbent_after=as_int(gate.get("incumbent")) if gate else None,
                gate_reason=str(gate.get("reason") or "") if gate else "",
                step_seconds=step_seconds.get(gen, {}),
                started=gen_start.get(gen),
                finished=gen_end.get(gen),
                llm_calls=as_int(metrics.get("llm_calls")),
                prompt_tokens=as_int(metrics.get("prompt_tokens")),
                completion_tokens=as_int(metrics.get("completion_tokens")),
                cost_usd=as_num(metrics.get("cost_usd")),
                n_errors=as_int(metrics.get("n_errors")),
                n_timeouts=as_int(metrics.get("n_timeouts")),
                ledger=_dict(r.json(rel / "cost.json")) or _gen_ledger(cost, gen),
                calls=len(calls) if execution else None,
                failed_calls=len(failed),
                first_call_error=str(failed[0].get("error") or failed[0].get("status"))[:500]
                if failed
                else "",
                train=train,
                diff=r.text(rel / "diff.patch"),
                improvement=r.text(rel / "improvement.md"),
                missing=tuple(missing),
            )
        )
    return RunInfo(
        run_id=str(run_json.get("run_id") or root.name.removeprefix("run_")),
        run_dir=str(root),
        status=status,
        task=config.get("task") or start_data.get("task"),
        config=config,
        stop_reason=stop_reason,
        created=as_num(run_json.get("created")),
        updated=as_num(run_json.get("updated")),
        last_event=max((t for e in events if (t := as_num(e.get("ts"))) is not None), default=None),
        backend=start_data.get("backend") or config.get("backend"),
        task_model=start_data.get("task_model"),
        sandbox=start_data.get("sandbox") or config.get("sandbox"),
        incumbent=as_int(incumbent),
        gens=tuple(gens),
        cost=cost,
        caps=_dict(run_json.get("caps")),
        stopped_by_cap=_dict(run_json.get("stopped_by_cap")),
        estimate=_dict(run_json.get("estimate")),
        problems=tuple(r.problems),
    )
