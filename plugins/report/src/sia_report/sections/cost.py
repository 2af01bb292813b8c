"""The Cost and time section: time per step, LLM calls, tokens, USD and training seconds per
generation, the run's totals, its caps and the estimate made before it."""

from __future__ import annotations

import json
from html import escape
from typing import Any

from ..data import STEPS, RunInfo, as_int, as_num
from ..markup import fmt_duration, fmt_int, fmt_usd, table, td


def _by_role(ledger: dict[str, Any]) -> str:
    roles = ledger.get("by_role")
    if not isinstance(roles, dict):
        return ""
    parts = []
    for role, t in roles.items():
        if isinstance(t, dict):
            parts.append(
                f"{role}: {t.get('llm_calls', 0)} calls, {t.get('tokens', 0)} tok, "
                f"{fmt_usd(t.get('cost_usd'))}"
            )
    return escape("; ".join(parts))


def cost_table(run: RunInfo) -> str:
    """Time per step, LLM calls, tokens, USD and training seconds per generation.

    With the run's cost ledger (``gen_N/cost.json``, ``run.json`` ``cost``) every LLM call of
    the generation is counted (task model on dev and test, Meta/Feedback); without it, the dev
    run's ``metrics.json`` figures are shown and the caption says so.
    """
    steps = [s for s in STEPS if any(s in g.step_seconds for g in run.gens)]
    ledger = any(g.ledger for g in run.gens)
    rows = []
    for g in run.gens:
        row = [td(f'<a href="#gen-{g.gen}">{g.gen}</a>')]
        row += [
            td(fmt_duration(g.step_seconds.get(s)) if s in g.step_seconds else "", True)
            for s in steps
        ]
        row.append(td(fmt_duration(g.seconds), True))
        if ledger:
            led = g.ledger
            row += [
                td(fmt_int(as_int(led.get("llm_calls"))), True),
                td(fmt_int(as_int(led.get("input_tokens"))), True),
                td(fmt_int(as_int(led.get("output_tokens"))), True),
                td(fmt_usd(led.get("cost_usd")), True),
                td(fmt_duration(as_num(led.get("train_device_seconds"))) if led else "–", True),
                td(_by_role(led)),
            ]
        else:
            train_s = g.train.metrics.get("seconds") if g.train else None
            row += [
                td(fmt_int(g.llm_calls), True),
                td(fmt_int(g.prompt_tokens), True),
                td(fmt_int(g.completion_tokens), True),
                td(fmt_usd(g.cost_usd), True),
                td(fmt_duration(float(train_s)) if isinstance(train_s, int | float) else "–", True),
            ]
        rows.append(row)
    head = [
        "gen",
        *[f"{s}" for s in steps],
        "wall (steps)",
        "LLM calls",
        "input tokens",
        "output tokens",
        "USD",
        "training device-s",
    ]
    if ledger:
        head.append("by role")
    caption = (
        "From the run's cost ledger: every LLM call (task model on dev and sealed test, "
        "Meta/Feedback) and every training job."
        if ledger
        else "No cost ledger in this run: LLM figures are the dev run's (metrics.json); "
        "training time is the job's own."
    )
    out = f"<p class='small'>{escape(caption)} Step times from events.jsonl.</p>"
    out += table(head, rows, css="cost")
    if run.cost:
        c = run.cost
        totals = [
            f"run total: {fmt_int(as_int(c.get('llm_calls')))} LLM calls",
            f"{fmt_int(as_int(c.get('tokens')))} tokens",
            fmt_usd(c.get("cost_usd")),
            f"training {fmt_duration(as_num(c.get('train_device_seconds')))}",
            f"wall {fmt_duration(as_num(c.get('wall_seconds')))}",
        ]
    else:
        totals = [
            f"total: steps {fmt_duration(sum(g.seconds for g in run.gens))}",
            f"{fmt_int(sum(g.llm_calls or 0 for g in run.gens))} model calls (dev)",
            fmt_usd(sum(g.cost_usd or 0 for g in run.gens)),
        ]
    out += f"<p class='totals'>{escape(' · '.join(totals))}</p>"
    extra = []
    caps = {k: v for k, v in run.caps.items() if v is not None}
    if caps:
        extra.append("caps: " + ", ".join(f"{k} {v}" for k, v in caps.items()))
    if run.estimate:
        extra.append(
            f"estimate before the run: {fmt_usd(run.estimate.get('usd'))} "
            f"({run.estimate.get('basis', '')})"
        )
    if extra:
        out += f"<p class='small'>{escape(' · '.join(extra))}</p>"
    if run.stopped_by_cap:
        out += f"<p class='warn'>stopped by a cap: {escape(json.dumps(run.stopped_by_cap))}</p>"
    return out
