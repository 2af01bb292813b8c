"""A rough estimate of what the rest of a run costs, shown before it starts and in ``run.json``."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from sia_core.contracts.config import RunConfig
from sia_core.machinery.ledger import Ledger
from sia_core.machinery.pricing import Pricer


def estimate(
    task: Any,
    config: RunConfig,
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
