"""How the CLI prints: JSON, scores, USD and durations, and the per-generation table."""

from __future__ import annotations

import json
from typing import Any

import click

from sia_core.machinery.pricing import fmt_usd


def echo_json(data: Any) -> None:
    """Print ``data`` as indented JSON."""
    click.echo(json.dumps(data, indent=2, ensure_ascii=False, default=str))


def fmt_score(x: float | None) -> str:
    """A score with four decimals, ``-`` when there is none."""
    return "-" if x is None else f"{x:.4f}"


def fmt_cost(x: float | None) -> str:
    """USD without the dollar sign, ``-`` when unknown."""
    return "-" if x is None else fmt_usd(x).removeprefix("$")


def fmt_seconds(s: float | None) -> str:
    """Seconds, minutes or hours, whichever reads best."""
    if s is None:
        return "-"
    if s < 120:
        return f"{s:.0f}s"
    if s < 7200:
        return f"{s / 60:.1f}m"
    return f"{s / 3600:.1f}h"


def print_summary(run_id: str, rows: list[Any]) -> None:
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
            fmt_score(r.dev),
            fmt_score(r.test),
            "*" if r.incumbent else "",
            r.status,
            f"{r.seconds:.1f}",
            str(getattr(r, "tokens", 0)),
        ]
        cells += [fmt_cost(r.cost_usd)] * has_cost + [f"{r.train_seconds:.1f}"] * has_train
        table.add_row(*cells)
    console = Console(stderr=False)
    if not console.is_terminal:
        console = Console(stderr=False, width=max(console.width, 132))
    console.print(table)
