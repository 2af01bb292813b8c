"""The cost ledger: every LLM call and every training job of a run, with tokens, USD and seconds.

``ledger.jsonl`` in the run folder holds one JSON line per gateway call, per Meta/Feedback step
and per training job (fields in docs/runs.md). A step's lines are appended when the step has
finished, before its ``step_finished`` event; :meth:`Ledger.open` rebuilds the file on resume:
a line cut short is dropped, and so are lines of steps that never finished (they are redone),
and each key counts once.

Prices: the provider's ``usage.cost`` when given, else litellm's bundled price table (read as a
file, without importing litellm, and only when a model that is not free asks for a price), else 0.
``SIA_MODEL_PRICES=file.json`` (litellm's format) adds or overrides prices.
"""

from __future__ import annotations

import errno
import importlib.util
import json
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from .canary import CANARY_EXECUTION
from .errors import SiaError
from .runstore import SEALED, DiskFullError, RunStore, atomic_write_text

LEDGER = "ledger.jsonl"
COST_JSON = "cost.json"
#: steps that spend money or device time; caps are checked before each
SPENDING_STEPS = ("propose", "train", "run", "test")
#: backends whose models cost nothing and never look a price up
FREE_BACKENDS = ("scripted", "local")
PRICES_ENV = "SIA_MODEL_PRICES"
#: run caps: name (as in run.json) -> (RunConfig field, CLI flag, the total it counts)
CAPS = {
    "max_usd": ("max_usd", "--max-usd", "cost_usd"),
    "max_tokens": ("max_run_tokens", "--max-tokens", "tokens"),
    "max_train_seconds": ("max_train_seconds", "--max-train-seconds", "train_device_seconds"),
}


# --------------------------------------------------------------------------------------------
# prices
# --------------------------------------------------------------------------------------------


class Pricer:
    """USD per token of a model, from ``SIA_MODEL_PRICES`` and litellm's bundled price table.

    The table is read lazily on the first lookup; :meth:`cost` returns ``None`` for a model
    with no known price.
    """

    def __init__(self, extra_file: str | None = None) -> None:
        self.extra_file = extra_file if extra_file is not None else os.environ.get(PRICES_ENV)
        self._table: dict[str, Any] | None = None
        self._lock = threading.Lock()

    def _load(self) -> dict[str, Any]:
        with self._lock:
            if self._table is None:
                table = dict(litellm_price_table())
                if self.extra_file:
                    try:
                        extra = json.loads(Path(self.extra_file).read_text(encoding="utf-8"))
                    except (OSError, ValueError) as exc:
                        raise SiaError(f"{PRICES_ENV}={self.extra_file}: {exc}") from exc
                    if not isinstance(extra, dict):
                        raise SiaError(f"{PRICES_ENV}={self.extra_file}: expected a JSON object")
                    table.update(extra)
                self._table = table
            return self._table

    def price(self, model: str | None) -> tuple[float, float] | None:
        """``(USD per input token, USD per output token)``, or ``None`` when unknown."""
        if not model:
            return None
        table = self._load()
        names = [model]
        if "/" in model:
            names.append(model.split("/", 1)[1])
        for name in names:
            entry = table.get(name)
            if isinstance(entry, dict):
                p_in = _num(entry.get("input_cost_per_token"))
                p_out = _num(entry.get("output_cost_per_token"))
                if p_in or p_out:
                    return p_in, p_out
        return None

    def cost(self, model: str | None, input_tokens: int, output_tokens: int) -> float | None:
        """USD of one call's tokens, or ``None`` when the model has no known price."""
        p = self.price(model)
        if p is None:
            return None
        return input_tokens * p[0] + output_tokens * p[1]

    __call__ = cost


def litellm_price_table() -> Mapping[str, Any]:
    """litellm's offline price table (``litellm.model_cost``), or ``{}`` without litellm.

    The JSON file litellm bundles is read directly (what ``LITELLM_LOCAL_MODEL_COST_MAP=True``
    makes litellm load), so no network and no import of litellm itself.
    """
    try:
        spec = importlib.util.find_spec("litellm")
    except (ImportError, ValueError):
        return {}
    if spec is None:
        return {}
    for folder in spec.submodule_search_locations or ():
        path = Path(folder) / "model_prices_and_context_window_backup.json"
        if path.is_file():
            data = json.loads(path.read_text(encoding="utf-8"))
            data.pop("sample_spec", None)
            return data
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm  # the file moved: ask litellm itself (offline, by the variable above)

    return dict(litellm.model_cost)


def _num(value: Any) -> float:
    try:
        return float(value or 0.0)
    except (TypeError, ValueError):
        return 0.0


# --------------------------------------------------------------------------------------------
# the ledger file
# --------------------------------------------------------------------------------------------


class Ledger:
    """``ledger.jsonl`` of one run: append a finished step's lines; totals by step, gen, run."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._entries: dict[str, dict[str, Any]] = {}

    @classmethod
    def open(
        cls, store: RunStore, rebuild: Callable[[], list[dict[str, Any]]] | None = None
    ) -> Ledger:
        """Load the run's ledger, keeping only lines of finished steps (once per key).

        The file is rewritten (atomically) when a line was dropped, so a resumed run never
        counts a redone step twice. A missing or corrupt file is made anew with ``rebuild``
        (the finished steps' lines from their artifacts, see :func:`rebuild_entries`).
        """
        ledger = cls(store.root / LEDGER)
        if not ledger.path.exists():
            if rebuild is not None and store.finished_steps():
                ledger._rewrite(rebuild())
            return ledger
        finished = store.finished_steps()
        raw = ledger.path.read_bytes()
        lines = raw.split(b"\n")
        dirty = bool(raw) and not raw.endswith(b"\n")
        for i, line in enumerate(lines):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
                key = str(entry["key"])
            except (ValueError, KeyError, TypeError) as exc:
                if all(not rest.strip() for rest in lines[i + 1 :]):
                    dirty = True  # the last line was cut short by a crash
                    break
                if rebuild is not None:
                    ledger._entries = {}
                    ledger._rewrite(rebuild())
                    return ledger
                raise SiaError(f"{ledger.path} line {i + 1} is corrupt ({exc})") from exc
            if (entry.get("gen"), entry.get("step")) not in finished or key in ledger._entries:
                dirty = True
            if (entry.get("gen"), entry.get("step")) in finished:
                ledger._entries[key] = entry
        if dirty:
            atomic_write_text(ledger.path, "".join(_line(e) for e in ledger._entries.values()))
        return ledger

    def entries(self) -> list[dict[str, Any]]:
        return list(self._entries.values())

    def _rewrite(self, entries: Iterable[dict[str, Any]]) -> None:
        for e in entries:
            self._entries[e["key"]] = e
        atomic_write_text(self.path, "".join(_line(e) for e in self._entries.values()))

    def add(self, entries: Iterable[dict[str, Any]]) -> None:
        """Append lines durably (a key already present is replaced, never counted twice)."""
        new = list(entries)
        if not new:
            return
        if any(e["key"] in self._entries for e in new):
            self._rewrite(new)
            return
        for e in new:
            self._entries[e["key"]] = e
        try:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write("".join(_line(e) for e in new))
                f.flush()
                os.fsync(f.fileno())
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise DiskFullError(self.path, exc) from exc
            raise

    def totals(self, gen: int | None = None, step: str | None = None) -> dict[str, Any]:
        """Totals of the run, or of one generation / step (see :func:`totals`)."""
        return totals(
            e
            for e in self._entries.values()
            if (gen is None or e.get("gen") == gen) and (step is None or e.get("step") == step)
        )

    def gens(self) -> list[int]:
        return sorted({int(e["gen"]) for e in self._entries.values() if e.get("gen") is not None})


def _line(entry: dict[str, Any]) -> str:
    return json.dumps(entry, ensure_ascii=False, sort_keys=True) + "\n"


def read_entries(root: Path, store: RunStore | None = None) -> list[dict[str, Any]]:
    """The ledger lines of a run folder as they are on disk (read-only; a bad line is skipped).

    Without a ledger file (a run from before the ledger), the lines are made from ``store``'s
    finished steps, in memory (prices as recorded by the gateway).
    """
    path = root / LEDGER
    if not path.exists():
        return rebuild_entries(store, pricer=None, meta_model=None) if store else []
    out: dict[str, dict[str, Any]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            entry = json.loads(line)
            out[str(entry["key"])] = entry
        except (ValueError, KeyError, TypeError):
            continue
    return list(out.values())


def totals(entries: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """``llm_calls``, ``input_tokens``, ``output_tokens``, ``tokens``, ``cost_usd``,
    ``train_device_seconds`` summed over ledger lines."""
    out: dict[str, Any] = {
        "llm_calls": 0,
        "input_tokens": 0,
        "output_tokens": 0,
        "tokens": 0,
        "cost_usd": 0.0,
        "train_device_seconds": 0.0,
    }
    for e in entries:
        out["cost_usd"] += _num(e.get("cost_usd"))
        if e.get("kind") == "llm":
            out["llm_calls"] += int(e.get("calls") or 0)
            out["input_tokens"] += int(e.get("input_tokens") or 0)
            out["output_tokens"] += int(e.get("output_tokens") or 0)
        elif e.get("kind") == "train":
            out["train_device_seconds"] += _num(e.get("device_seconds"))
    out["tokens"] = out["input_tokens"] + out["output_tokens"]
    out["cost_usd"] = round(out["cost_usd"], 10)
    out["train_device_seconds"] = round(out["train_device_seconds"], 3)
    return out


# --------------------------------------------------------------------------------------------
# what a finished step adds
# --------------------------------------------------------------------------------------------


def step_entries(
    store: RunStore,
    gen: int,
    step: str,
    data: Mapping[str, Any],
    seconds: float,
    *,
    pricer: Pricer | None,
    meta_model: str | None = None,
) -> list[dict[str, Any]]:
    """The ledger lines of a finished step, from its artifacts and its event ``data``."""
    now = round(time.time(), 3)
    base = {"gen": gen, "step": step, "ts": now}
    gdir = store.gen_dir(gen)
    if step == "propose":
        usage = data.get("agent_usage") or {}
        entry = agent_entry(usage, pricer=pricer, model=meta_model)
        if entry is None:
            return []
        recorded = _num((data.get("cost") or {}).get("cost_usd"))  # a rebuild: as priced then
        if recorded and not entry["cost_usd"]:
            entry.update(cost_usd=recorded, cost_source="price_table")
        role = "meta" if gen == 1 else "feedback"
        return [{**base, **entry, "key": f"{gen}/propose/{role}", "role": role}]
    if step == "train":
        path = gdir / "train_result.json"
        result = store.read_json(path) if path.exists() else {}
        metrics = result.get("metrics") or {}
        device_seconds = metrics.get("device_seconds", metrics.get("seconds"))
        return [
            {
                **base,
                "key": f"{gen}/train",
                "kind": "train",
                "status": result.get("status", "unknown"),
                "device_seconds": round(_num(device_seconds) if device_seconds else seconds, 3),
                "device": metrics.get("device"),
                "executor": data.get("executor"),
                "rollout_tokens": int(_num(metrics.get("tokens"))),
                "cost_usd": _num(metrics.get("cost_usd")),
            }
        ]
    if step in ("run", "test"):
        files = (
            [
                gdir / "agent_execution.json",
                gdir / SEALED / "agent_execution_test.json",
                gdir / CANARY_EXECUTION,
            ]
            if step == "run"
            else [gdir / SEALED / "agent_execution_test.json"]
        )
        out = []
        seen: set[int] = set()
        for path in files:
            if not path.exists():
                continue
            split = (
                "test" if SEALED in path.parts else "canary" if "private" in path.parts else "dev"
            )
            for call in store.read_json(path).get("calls") or ():
                if call.get("status") in ("over_budget", "refused") or call["call_id"] in seen:
                    continue  # refused by the gateway: never reached the model
                seen.add(call["call_id"])
                out.append(
                    {
                        **base,
                        "key": f"{gen}/{step}/call/{call['call_id']}",
                        "kind": "llm",
                        "role": "task_model",
                        "model": call.get("model"),
                        "call_id": call["call_id"],
                        "item_id": call.get("item_id"),
                        "split": split,
                        "status": call.get("status"),
                        "calls": 1,
                        "input_tokens": int(call.get("prompt_tokens") or 0),
                        "output_tokens": int(call.get("completion_tokens") or 0),
                        "cost_usd": _num(call.get("cost_usd")),
                        "cost_source": call_cost_source(call, pricer),
                    }
                )
        return out
    return []


def rebuild_entries(
    store: RunStore, *, pricer: Pricer | None, meta_model: str | None
) -> list[dict[str, Any]]:
    """Every finished spending step's ledger lines, made anew from events and artifacts."""
    out: list[dict[str, Any]] = []
    for e in store.events:
        step = e.data.get("step")
        if e.type == "step_finished" and e.gen is not None and step in SPENDING_STEPS:
            seconds = _num(e.data.get("seconds"))
            out += step_entries(
                store, e.gen, str(step), e.data, seconds, pricer=pricer, meta_model=meta_model
            )
    return out


def call_cost_source(call: Mapping[str, Any], pricer: Pricer | None) -> str:
    """Where a gateway call's cost came from (the gateway priced it; this names the source)."""
    cost = _num(call.get("cost_usd"))
    table = (
        pricer.cost(
            call.get("model"),
            int(call.get("prompt_tokens") or 0),
            int(call.get("completion_tokens") or 0),
        )
        if pricer is not None
        else None
    )
    if cost and (table is None or abs(cost - table) > 1e-12):
        return "provider"
    if table is not None:
        return "price_table"
    return "free" if pricer is None else "unpriced"


def agent_entry(
    usage: Mapping[str, Any], *, pricer: Pricer | None, model: str | None
) -> dict[str, Any] | None:
    """A Meta/Feedback step's ledger fields from ``AgentOutcome.usage``, or ``None`` if empty."""
    if not usage:
        return None
    input_tokens = int(_num(usage.get("input_tokens", usage.get("prompt_tokens"))))
    output_tokens = int(_num(usage.get("output_tokens", usage.get("completion_tokens"))))
    calls = int(_num(usage.get("calls")))
    if not (input_tokens or output_tokens or calls or _num(usage.get("cost_usd"))):
        return None
    name = usage.get("model") or model
    cost, source = _num(usage.get("cost_usd")), "provider"
    if not cost:
        priced = pricer.cost(name, input_tokens, output_tokens) if pricer else None
        cost, source = (priced, "price_table") if priced is not None else (0.0, "unpriced")
        if pricer is None:
            source = "free"
    return {
        "kind": "llm",
        "model": name,
        "calls": calls or 1,
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "cost_usd": cost,
        "cost_source": source,
    }


# --------------------------------------------------------------------------------------------
# per-generation and per-run views
# --------------------------------------------------------------------------------------------


def step_seconds(store: RunStore) -> dict[int, float]:
    """Wall-clock seconds of each generation's finished steps, from ``events.jsonl``."""
    seconds: dict[int, float] = {}
    for e in store.events:
        if e.type == "step_finished" and e.gen is not None:
            seconds[e.gen] = seconds.get(e.gen, 0.0) + _num(e.data.get("seconds"))
    return seconds


def gen_cost(ledger: Ledger, gen: int, wall_seconds: float) -> dict[str, Any]:
    """What ``gen_{n}/cost.json`` holds."""
    entries = [e for e in ledger.entries() if e.get("gen") == gen]
    by_role: dict[str, list[dict[str, Any]]] = {}
    by_step: dict[str, list[dict[str, Any]]] = {}
    for e in entries:
        if e.get("kind") == "llm":
            by_role.setdefault(str(e.get("role")), []).append(e)
        by_step.setdefault(str(e.get("step")), []).append(e)
    return {
        "gen": gen,
        **totals(entries),
        "wall_seconds": round(wall_seconds, 3),
        "by_role": {k: totals(v) for k, v in sorted(by_role.items())},
        "by_step": {k: totals(v) for k, v in by_step.items()},
    }


def run_cost(ledger: Ledger, seconds: Mapping[int, float]) -> dict[str, Any]:
    """What ``run.json``'s ``cost`` holds: the run's totals and each generation's."""
    gens = sorted(set(ledger.gens()) | set(seconds))
    return {
        **ledger.totals(),
        "wall_seconds": round(sum(seconds.values()), 3),
        "generations": {
            str(g): {**ledger.totals(gen=g), "wall_seconds": round(seconds.get(g, 0.0), 3)}
            for g in gens
        },
    }


def write_gen_cost(store: RunStore, ledger: Ledger, gen: int) -> None:
    """Rewrite ``gen_{n}/cost.json`` from the ledger."""
    wall = step_seconds(store).get(gen, 0.0)
    store.write_json(store.gen_dir(gen) / COST_JSON, gen_cost(ledger, gen, wall))


# --------------------------------------------------------------------------------------------
# caps and the estimate
# --------------------------------------------------------------------------------------------


def cap_reached(config: Any, used: Mapping[str, Any]) -> dict[str, Any] | None:
    """The first cap of ``config`` that ``used`` (run totals) has reached, or ``None``."""
    for name, (field, flag, counted) in CAPS.items():
        limit = getattr(config, field, None)
        if limit is not None and _num(used.get(counted)) >= limit:
            return {"cap": name, "flag": flag, "limit": limit, "used": used.get(counted)}
    return None


def caps_of(config: Any) -> dict[str, Any]:
    """``run.json``'s ``caps`` (``max_tokens`` is ``RunConfig.max_run_tokens``)."""
    return {name: getattr(config, field, None) for name, (field, _, _) in CAPS.items()}


def describe_cap(cap: Mapping[str, Any], run_id: str, *, still: bool = False) -> str:
    """One line: which cap, its figure, what was used, and how to go on."""
    flag, limit, used = cap["flag"], cap["limit"], _num(cap["used"])
    if cap["cap"] == "max_usd":
        name, figure = "cost cap", f"{flag} {limit:g} (spent ${used:.4f})"
    elif cap["cap"] == "max_tokens":
        name, figure = "token budget", f"{flag} {limit} (used {int(used)} tokens)"
    else:
        name, figure = "training-time cap", f"{flag} {limit:g} (trained {used:.1f} device-s)"
    return (
        f"{name} {'still ' if still else ''}reached: {figure}; continue with a higher cap: "
        f"`sia resume {run_id} {flag} N`"
    )


def estimate(
    task: Any,
    config: Any,
    ledger: Ledger,
    *,
    pricer: Pricer | None,
    task_model: str | None,
    meta_model: str | None,
    finished_gens: Iterable[int] = (),
) -> dict[str, Any] | None:
    """A rough cost estimate of the rest of the run, or ``None`` when no model has a price.

    After finished (gated) generations: what was spent, plus their mean cost times the
    generations left. Before any: one
    task-model call per item (the item's input, ~4 characters a token, plus 50 tokens each way)
    and one Meta/Feedback exchange of the task and scaffold's size per generation.
    """
    if pricer is None:
        return None
    p_task = pricer.price(task_model)
    p_meta = pricer.price(meta_model) if meta_model else None
    done = sorted(set(finished_gens))
    spent = ledger.totals()["cost_usd"]
    done_usd = sum(ledger.totals(gen=g)["cost_usd"] for g in done)
    if done and done_usd > 0:
        per_gen = done_usd / len(done)
        left = max(0, config.max_gen - len(done))
        return {
            "usd": round(max(spent, done_usd + per_gen * left), 6),
            "basis": f"${spent:.4f} spent; ${per_gen:.4f} per generation measured over "
            f"{len(done)} finished generation(s), {left} left",
        }
    if p_task is None and p_meta is None:
        return None
    usd, parts = 0.0, []
    if p_task is not None:
        dev, test = task.items("dev"), task.items("test")
        per_gen_items = dev + (test if config.test_eval == "every" else [])
        final_items = test * min(2, config.max_gen) if config.test_eval == "final" else []
        items = per_gen_items * config.max_gen + final_items
        tokens_in = sum(_tokens(i.input) + 50 for i in items)
        tokens_out = 50 * len(items)
        usd += tokens_in * p_task[0] + tokens_out * p_task[1]
        per_item = tokens_in // max(1, len(items))
        parts.append(
            f"task model {task_model}: {len(items)} item runs x 1 call (~{per_item}+50 tokens)"
        )
    if p_meta is not None:
        scaffold = task.reference_scaffold.read_text(encoding="utf-8")
        tokens_in = (len(task.task_md) + 2 * len(scaffold)) // 4 + 2000
        tokens_out = len(scaffold) // 4 + 500
        usd += config.max_gen * (tokens_in * p_meta[0] + tokens_out * p_meta[1])
        parts.append(f"{meta_model}: ~{tokens_in}+{tokens_out} tokens per generation")
    return {"usd": round(usd, 6), "basis": "; ".join(parts) + " (a rough guide)"}


def _tokens(value: Any) -> int:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    return (len(text) + 3) // 4


def fmt_usd(x: float | None) -> str:
    if x is None:
        return "-"
    if x == 0:
        return "$0"
    return f"${x:.4f}" if x < 100 else f"${x:,.2f}"
