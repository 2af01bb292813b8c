"""The Scores section: dev and sealed-test score per generation as an SVG chart (with the best
score so far as a step line) and as a table with parent, lever, model calls and the gate."""

from __future__ import annotations

from html import escape

from ..data import RunInfo
from ..markup import fmt_float, lever_badge, status_badge, table, td
from ..svg import DEFAULT_COLOR, LEVER_COLORS, Point, Series, chart


def best_so_far(run: RunInfo) -> list[tuple[int, float]]:
    """(gen, dev of the incumbent after that generation's gate) for every gated generation."""
    dev = {g.gen: g.dev for g in run.gens}
    out = []
    for g in run.gens:
        best = dev.get(g.incumbent_after) if g.incumbent_after is not None else None
        if best is not None:
            out.append((g.gen, best))
    return out


def score_chart(run: RunInfo) -> str:
    """Dev score per generation (coloured by lever), sealed test scores and the best so far."""
    dev_pts, test_pts = [], []
    for g in run.gens:
        inc = " incumbent" if g.gen == run.incumbent else ""
        if g.dev is not None:
            dev_pts.append(
                Point(
                    x=g.gen,
                    y=g.dev,
                    color=LEVER_COLORS.get(g.lever or "", DEFAULT_COLOR),
                    css=f"dev{inc}",
                    title=f"gen {g.gen} ({g.lever}): dev {g.dev:.4f}"
                    + (" — incumbent" if inc else ""),
                    data={"gen": str(g.gen), "dev": f"{g.dev:.6f}", "lever": g.lever or ""},
                )
            )
        if g.test is not None:
            test_pts.append(
                Point(
                    x=g.gen,
                    y=g.test,
                    css="test",
                    title=f"gen {g.gen}: sealed test {g.test:.4f} (report only)",
                    data={"gen": str(g.gen), "test": f"{g.test:.6f}"},
                )
            )
    best = [Point(x=gen, y=v, css="best") for gen, v in best_so_far(run)]
    series = [
        Series(
            name="best so far",
            points=tuple(best),
            color="#d69e2e",
            kind="step",
            marker="none",
            dashed=True,
            css="best",
        ),
        Series(name="dev", points=tuple(dev_pts), color="#2d3748", css="dev"),
        Series(
            name="sealed test",
            points=tuple(test_pts),
            color="#38a169",
            kind="points",
            marker="diamond",
            css="test",
        ),
    ]
    return chart(
        series,
        title="Score per generation",
        x_label="generation",
        y_label="score",
        y_range=(0.0, 1.0) if all(0 <= p.y <= 1 for s in series for p in s.points) else None,
        x_range=(0.6, max_gen + 0.4)
        if isinstance(max_gen := run.config.get("max_gen"), int)
        else None,
        css="chart score-chart",
    )


def scores_table(run: RunInfo) -> str:
    """One row per generation: parent, lever, RL objective, scores, model calls, gate, status."""
    rows = []
    for g in run.gens:
        rows.append(
            [
                td(f'<a href="#gen-{g.gen}">{g.gen}</a>'),
                td("–" if g.parent is None else str(g.parent)),
                td(lever_badge(g.lever)),
                td(escape(g.rl_algorithm or "–")),
                td(fmt_float(g.dev) + (f" ({g.dev_items})" if g.dev_items else ""), True),
                td(fmt_float(g.test) + (f" ({g.test_items})" if g.test_items else ""), True),
                td(
                    "–"
                    if g.calls is None
                    else f"{g.calls}"
                    + (f" <b class='bad'>({g.failed_calls} failed)</b>" if g.failed_calls else ""),
                    True,
                ),
                td(
                    "incumbent"
                    if g.gen == run.incumbent
                    else ("" if g.accepted is None else ("accepted" if g.accepted else "rejected"))
                ),
                td(status_badge(g.status)),
            ]
        )
    return table(
        [
            "gen",
            "parent",
            "lever",
            "RL objective",
            "dev (items)",
            "sealed test (items)",
            "model calls (dev)",
            "gate",
            "status",
        ],
        rows,
        css="scores",
    )
