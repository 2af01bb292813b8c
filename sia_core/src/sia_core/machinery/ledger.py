"""The cost ledger: every LLM call and every training job of a run, with tokens, USD and seconds.

``ledger.jsonl`` in the run folder holds one JSON line per gateway call, per Meta/Feedback step
and per training job (fields in docs/runs.md). A step's lines are appended when the step has
finished, before its ``step_finished`` event; :meth:`Ledger.open` rebuilds the file on resume:
a line cut short is dropped, and so are lines of steps that never finished (they are redone),
and each key counts once. Prices are :mod:`sia_core.machinery.pricing`'s; the run caps and the
cost estimate are :mod:`sia_core.machinery.caps`.
"""

from __future__ import annotations

import errno
import json
import os
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from sia_core.contracts.errors import SiaError
from sia_core.machinery.pricing import Pricer, float_or_zero
from sia_core.machinery.runstore import (
    CANARY_EXECUTION,
    SEALED,
    DiskFullError,
    RunStore,
    atomic_write_text,
)

LEDGER = "ledger.jsonl"
COST_JSON = "cost.json"
#: steps that spend money or device time; caps are checked before each
SPENDING_STEPS = ("propose", "train", "run", "test")


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
        out["cost_usd"] += float_or_zero(e.get("cost_usd"))
        if e.get("kind") == "llm":
            out["llm_calls"] += int(e.get("calls") or 0)
            out["input_tokens"] += int(e.get("input_tokens") or 0)
            out["output_tokens"] += int(e.get("output_tokens") or 0)
        elif e.get("kind") == "train":
            out["train_device_seconds"] += float_or_zero(e.get("device_seconds"))
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
        recorded = float_or_zero(
            (data.get("cost") or {}).get("cost_usd")
        )  # a rebuild: as priced then
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
                "device_seconds": round(
                    float_or_zero(device_seconds) if device_seconds else seconds, 3
                ),
                "device": metrics.get("device"),
                "executor": data.get("executor"),
                "rollout_tokens": int(float_or_zero(metrics.get("tokens"))),
                "cost_usd": float_or_zero(metrics.get("cost_usd")),
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
                        "cost_usd": float_or_zero(call.get("cost_usd")),
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
            seconds = float_or_zero(e.data.get("seconds"))
            out += step_entries(
                store, e.gen, str(step), e.data, seconds, pricer=pricer, meta_model=meta_model
            )
    return out


def call_cost_source(call: Mapping[str, Any], pricer: Pricer | None) -> str:
    """Where a gateway call's cost came from (the gateway priced it; this names the source)."""
    cost = float_or_zero(call.get("cost_usd"))
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
    input_tokens = int(float_or_zero(usage.get("input_tokens", usage.get("prompt_tokens"))))
    output_tokens = int(float_or_zero(usage.get("output_tokens", usage.get("completion_tokens"))))
    calls = int(float_or_zero(usage.get("calls")))
    if not (input_tokens or output_tokens or calls or float_or_zero(usage.get("cost_usd"))):
        return None
    name = usage.get("model") or model
    cost, source = float_or_zero(usage.get("cost_usd")), "provider"
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
            seconds[e.gen] = seconds.get(e.gen, 0.0) + float_or_zero(e.data.get("seconds"))
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
