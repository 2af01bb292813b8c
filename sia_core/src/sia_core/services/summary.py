"""A run's per-generation table (``sia show``, the end-of-run summary): the run state, the
generation folders' scores and the ledger's cost."""

from __future__ import annotations

import attrs

from sia_core.machinery.ledger import read_entries, step_seconds, totals
from sia_core.machinery.runstate import RunState
from sia_core.machinery.runstore import SEALED, RunStore


@attrs.frozen(kw_only=True)
class GenRow:
    """One line of a run's per-generation table (``test`` is shown, never used)."""

    gen: int
    parent: int | None
    lever: str
    rl_algorithm: str | None
    dev: float | None
    test: float | None
    incumbent: bool
    status: str
    seconds: float
    tokens: int = 0
    cost_usd: float = 0.0
    train_seconds: float = 0.0


def summarize(store: RunStore) -> list[GenRow]:
    """The per-generation table of a run (finished, running or killed), from its artifacts."""
    state = RunState.from_events(store.events)
    seconds = step_seconds(store)
    entries = read_entries(store.root, store)
    rows = []
    for gen, gdir in store.gen_dirs():
        if not (gdir / "decision.json").exists():
            continue
        d = store.read_json(gdir / "decision.json")
        dev = test = None
        if (gdir / "metrics.json").exists():
            dev = store.read_json(gdir / "metrics.json")["dev"]["score"]
        if (gdir / SEALED / "metrics_test.json").exists():
            test = store.read_json(gdir / SEALED / "metrics_test.json")["score"]
        gated = gen in state.gates
        status = "done" if gated else ("stopped" if d["lever"] == "stop" else "incomplete")
        if gated and (state.gates[gen].get("node") or {}).get("status") == "failed":
            status = "failed"  # e.g. a weights update that failed or trained nothing
        cost = totals(e for e in entries if e.get("gen") == gen)
        rows.append(
            GenRow(
                gen=gen,
                parent=d.get("parent_gen"),
                lever=d["lever"],
                rl_algorithm=d.get("rl_algorithm"),
                dev=dev,
                test=test,
                incumbent=gen == state.incumbent,
                status=status,
                seconds=round(seconds.get(gen, 0.0), 2),
                tokens=cost["tokens"],
                cost_usd=cost["cost_usd"],
                train_seconds=cost["train_device_seconds"],
            )
        )
    return rows


def weights_lever_line(store: RunStore) -> str:
    """Why the weights lever was or was not pulled in a run, from its decisions (one line)."""
    decisions = [
        (gen, store.read_json(gdir / "decision.json"))
        for gen, gdir in store.gen_dirs()
        if (gdir / "decision.json").exists()
    ]
    pulled = [(g, d) for g, d in decisions if d.get("lever") in ("weights", "both")]
    if pulled:
        gens = ", ".join(str(g) for g, _ in pulled)
        return f"weights lever: pulled in gen {gens}; first because: {pulled[0][1].get('rationale', '?')}"
    config = (
        (store.read_json("run.json") or {}).get("config", {}) if store.exists("run.json") else {}
    )
    if config.get("lever") == "harness":
        return "weights lever: not pulled: --lever harness"
    blockers = [n for _, d in decisions for n in d.get("notes", []) if "weights would be next" in n]
    if blockers:
        return f"weights lever: not pulled: {blockers[-1]}"
    fed = [(g, d) for g, d in decisions if d.get("source") == "feedback"]
    if not fed:
        return "weights lever: not pulled: no Feedback-Agent decision was made"
    g, last = fed[-1]
    return (
        f"weights lever: not pulled: the Feedback-Agent chose {last.get('lever')} in "
        f"{len(fed)} decision(s); gen {g}'s reason: {last.get('rationale', '?')}"
    )
