"""The self-contained ``report.html``: inline CSS and SVG, no script, no external resource.

A Content-Security-Policy meta tag forbids every fetch (``default-src 'none'``), so the page
cannot reach the network even if run text tried to. All run text (decisions, improvement.md,
diffs are LLM-written) goes through :func:`html.escape`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from html import escape
from typing import Any

from .data import STEPS, GenInfo, RunInfo, TrainInfo, as_int, as_num
from .svg import DEFAULT_COLOR, LEVER_COLORS, Point, Series, chart

CSS = """
:root { --fg:#1a202c; --muted:#4a5568; --line:#e2e8f0; --bg:#fff; --soft:#f7fafc; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--fg);
  background: var(--bg); margin: 0 auto; max-width: 1100px; padding: 16px 24px 48px; }
h1 { font-size: 22px; margin: 8px 0 4px; } h2 { font-size: 18px; margin: 28px 0 8px;
  border-bottom: 1px solid var(--line); padding-bottom: 4px; } h3 { font-size: 15px; margin: 16px 0 6px; }
.meta { color: var(--muted); } .meta span { margin-right: 14px; }
table { border-collapse: collapse; margin: 6px 0 12px; font-size: 13px; }
th, td { border: 1px solid var(--line); padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: var(--soft); } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.status { display: inline-block; padding: 1px 8px; border-radius: 10px; font-size: 12px;
  background: #edf2f7; } .status.finished, .status.done { background: #c6f6d5; }
.status.running { background: #bee3f8; } .status.failed, .status.incomplete,
.status.interrupted { background: #fed7d7; } .status.stopped { background: #feebc8; }
.lever { display: inline-block; padding: 1px 8px; border-radius: 4px; color: #fff; font-size: 12px; }
.timeline { display: flex; gap: 8px; flex-wrap: wrap; margin: 8px 0; align-items: flex-start; }
.tl { border: 1px solid var(--line); border-radius: 6px; padding: 8px 10px; width: 232px;
  background: var(--soft); font-size: 12.5px; } .tl h4 { margin: 0 0 4px; font-size: 14px; }
.tl.incumbent { border: 2px solid #d69e2e; } .tl .why { color: var(--muted); }
.tl table { font-size: 11.5px; margin: 4px 0; } .tl td, .tl th { padding: 1px 4px; }
tr.chosen td { font-weight: 600; background: #fefcbf; }
pre { background: var(--soft); border: 1px solid var(--line); padding: 8px; overflow: auto;
  font-size: 12px; white-space: pre-wrap; word-break: break-word; max-height: 520px; }
pre.diff .add { color: #22543d; background: #f0fff4; display: block; }
pre.diff .del { color: #742a2a; background: #fff5f5; display: block; }
pre.diff .hunk { color: #2c5282; display: block; }
details { margin: 4px 0 10px; } summary { cursor: pointer; font-weight: 600; }
svg { max-width: 100%; height: auto; background: #fff; }
svg .grid { stroke: #edf2f7; } svg .axis { stroke: #718096; }
svg .tick, svg .legend { font-size: 11px; fill: #4a5568; } svg .label { font-size: 12px; fill: #2d3748; }
svg .ctitle { font-size: 13px; font-weight: 600; fill: #1a202c; } svg .empty { fill: #a0aec0; }
svg .node text { font-size: 12px; fill: #fff; font-weight: 600; } svg .edge { stroke: #a0aec0;
  stroke-width: 2; fill: none; } svg .nlabel { font-size: 11px; fill: #2d3748; }
.warn { background: #fffaf0; border: 1px solid #fbd38d; padding: 6px 10px; border-radius: 4px; }
.gen { border-top: 1px solid var(--line); margin-top: 10px; }
.small { font-size: 12px; color: var(--muted); } .bad { color: #c53030; }
"""


def _f(x: float | None, digits: int = 4) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def _i(x: int | None) -> str:
    return "–" if x is None else f"{x:,}"


def _t(ts: float | None) -> str:
    return "–" if ts is None else time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ts))


def _dur(s: float | None) -> str:
    if s is None:
        return "–"
    if s < 60:
        return f"{s:.1f} s"
    m, sec = divmod(round(s), 60)
    return f"{m} min {sec} s" if m < 60 else f"{m // 60} h {m % 60} min"


def _lever(lever: str | None) -> str:
    name = lever or "?"
    color = LEVER_COLORS.get(name, DEFAULT_COLOR)
    return f'<span class="lever" style="background:{color}">{escape(name)}</span>'


def _status(status: str) -> str:
    return f'<span class="status {escape(status)}">{escape(status)}</span>'


def _table(head: Iterable[str], rows: Iterable[Iterable[str]], css: str = "") -> str:
    """A table; cells are already-escaped HTML."""
    h = "".join(f"<th>{c}</th>" for c in head)
    body = "".join("<tr>" + "".join(row) + "</tr>" for row in rows)
    cls = f' class="{css}"' if css else ""
    return f"<table{cls}><thead><tr>{h}</tr></thead><tbody>{body}</tbody></table>"


def _td(x: str, num: bool = False) -> str:
    return f'<td class="num">{x}</td>' if num else f"<td>{x}</td>"


# -- sections --------------------------------------------------------------------------------


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


def lineage_svg(run: RunInfo) -> str:
    """The archive as a tree: x = generation, one lane per branch, edges parent -> child."""
    gens = [g for g in run.gens if g.lever is not None]
    if not gens:
        return '<p class="small">no generation yet</p>'
    lane: dict[int, int] = {}
    used_child: set[int] = set()
    n_lanes = 0
    for g in gens:
        if g.parent is not None and g.parent in lane and g.parent not in used_child:
            lane[g.gen] = lane[g.parent]
            used_child.add(g.parent)
        else:
            lane[g.gen] = n_lanes
            n_lanes += 1
    xs = {g.gen: i for i, g in enumerate(gens)}
    step, lh, r = 78, 58, 17
    width = 40 + step * max(len(gens) - 1, 0) + 80
    height = 30 + lh * n_lanes + 10

    def pos(gen: int) -> tuple[float, float]:
        return 40 + step * xs[gen], 30 + lh * lane[gen]

    out = [
        f'<svg class="lineage" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" role="img" aria-label="lineage of the archive">'
    ]
    for g in gens:
        if g.parent is not None and g.parent in xs:
            (x0, y0), (x1, y1) = pos(g.parent), pos(g.gen)
            mid = (x0 + x1) / 2
            out.append(f'<path class="edge" d="M{x0},{y0} C{mid},{y0} {mid},{y1} {x1},{y1}"/>')
    for g in gens:
        x, y = pos(g.gen)
        color = LEVER_COLORS.get(g.lever or "", DEFAULT_COLOR)
        ring = (
            f'<circle cx="{x}" cy="{y}" r="{r + 5}" fill="none" stroke="#d69e2e" stroke-width="3"/>'
            if g.gen == run.incumbent
            else ""
        )
        dash = (
            ' stroke-dasharray="3 3" stroke="#e53e3e" stroke-width="2"'
            if g.status != "done"
            else ""
        )
        tip = (
            f"gen {g.gen} ({g.lever}) from gen {g.parent if g.parent is not None else '–'}: "
            f"dev {_f(g.dev)} — {g.status}"
        )
        out.append(
            f'<g class="node" data-gen="{g.gen}" data-parent="{g.parent if g.parent is not None else ""}">'
            f"<title>{escape(tip)}</title>{ring}"
            f'<circle cx="{x}" cy="{y}" r="{r}" fill="{color}"{dash}/>'
            f'<text x="{x}" y="{y + 4}" text-anchor="middle">{g.gen}</text></g>'
            f'<text class="nlabel" x="{x}" y="{y + r + 12}" text-anchor="middle">'
            f"{escape(_f(g.dev, 3))}</text>"
        )
    out.append("</svg>")
    return "".join(out)


def _fits_table(g: GenInfo) -> str:
    """Every candidate objective's fit; the chosen one's reason shown, the others' folded."""
    if not g.algorithm_fits:
        return ""
    rows, why = [], ""
    for f in sorted(g.algorithm_fits, key=lambda f: -(as_num(f.get("score")) or 0.0)):
        name, reason = str(f.get("name")), str(f.get("reason") or "")
        chosen = name == g.rl_algorithm
        if chosen:
            why = reason
        rows.append(
            f'<tr class="{"chosen" if chosen else ""}" title="{escape(reason)}">'
            f"<td>{escape(name)}</td><td class='num'>{_f(as_num(f.get('score')), 2)}</td></tr>"
        )
    others = "".join(
        f"<li><b>{escape(str(f.get('name')))}</b>: {escape(str(f.get('reason') or ''))}</li>"
        for f in g.algorithm_fits
        if f.get("name") != g.rl_algorithm
    )
    out = (
        "<table class='fits'><thead><tr><th>objective</th><th>fit</th></tr></thead><tbody>"
        + "".join(rows)
        + "</tbody></table>"
    )
    if why:
        out += f"<div class='small'>chosen because: {escape(why)}</div>"
    if others:
        out += f"<details class='small'><summary>the others</summary><ul>{others}</ul></details>"
    return out


REWARD_FIELDS = (
    ("n_rewards", "rewards"),
    ("mean", "mean"),
    ("std", "std"),
    ("skew", "skew"),
    ("zero_variance_group_share", "zero-variance groups"),
    ("step_reward_density", "step reward density"),
    ("binary", "binary"),
    ("rollout_cost_s", "rollout cost (s)"),
)


def _reward_table(stats: dict[str, Any] | None) -> str:
    if not stats:
        return ""
    cells = []
    for key, label in REWARD_FIELDS:
        if key in stats:
            v = stats[key]
            shown = f"{v:.3f}" if isinstance(v, float) else str(v)
            cells.append(f"<tr><th>{escape(label)}</th><td class='num'>{escape(shown)}</td></tr>")
    return "<table class='reward-shape'>" + "".join(cells) + "</table>"


def _failed(g: GenInfo) -> str:
    return escape(f"{g.failed_calls} of {g.calls} task-model calls failed")


def lever_timeline(run: RunInfo) -> str:
    cards = []
    for g in run.gens:
        inc = " incumbent" if g.gen == run.incumbent else ""
        parts = [
            f'<div class="tl{inc}" data-gen="{g.gen}" data-lever="{escape(g.lever or "")}">',
            f"<h4>gen {g.gen} {_lever(g.lever)} {_status(g.status)}</h4>",
            '<div class="small">'
            + (f"from gen {g.parent}" if g.parent is not None else "first generation")
            + " · "
            f"decided by {escape(g.source or '?')}"
            + (
                f" · proposed {escape(g.proposed_lever)}"
                if g.proposed_lever and g.proposed_lever != g.lever
                else ""
            )
            + "</div>",
        ]
        if g.rl_algorithm:
            parts.append(f"<div>RL objective: <b>{escape(g.rl_algorithm)}</b></div>")
        parts.append(f'<div class="why">{escape(g.rationale)}</div>')
        if g.reward_stats:
            parts.append("<div class='small'>reward shape behind the choice:</div>")
            parts.append(_reward_table(g.reward_stats))
        parts.append(_fits_table(g))
        if g.failed_calls:
            parts.append(f"<div class='bad'>{_failed(g)}</div>")
        if g.dev is not None:
            parts.append(
                f"<div>dev {_f(g.dev)}"
                + (f" · test {_f(g.test)}" if g.test is not None else "")
                + (
                    f" · {'accepted' if g.accepted else 'rejected'}"
                    if g.accepted is not None
                    else ""
                )
                + "</div>"
            )
        parts.append("</div>")
        cards.append("".join(parts))
    return '<div class="timeline">' + "".join(cards) + "</div>"


def scores_table(run: RunInfo) -> str:
    rows = []
    for g in run.gens:
        rows.append(
            [
                _td(f'<a href="#gen-{g.gen}">{g.gen}</a>'),
                _td("–" if g.parent is None else str(g.parent)),
                _td(_lever(g.lever)),
                _td(escape(g.rl_algorithm or "–")),
                _td(_f(g.dev) + (f" ({g.dev_items})" if g.dev_items else ""), True),
                _td(_f(g.test) + (f" ({g.test_items})" if g.test_items else ""), True),
                _td(
                    "–"
                    if g.calls is None
                    else f"{g.calls}"
                    + (f" <b class='bad'>({g.failed_calls} failed)</b>" if g.failed_calls else ""),
                    True,
                ),
                _td(
                    "incumbent"
                    if g.gen == run.incumbent
                    else ("" if g.accepted is None else ("accepted" if g.accepted else "rejected"))
                ),
                _td(_status(g.status)),
            ]
        )
    return _table(
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


def _usd(x: Any) -> str:
    return f"${x:.4f}" if isinstance(x, int | float) else "–"


def _by_role(ledger: dict[str, Any]) -> str:
    roles = ledger.get("by_role")
    if not isinstance(roles, dict):
        return ""
    parts = []
    for role, t in roles.items():
        if isinstance(t, dict):
            parts.append(
                f"{role}: {t.get('llm_calls', 0)} calls, {t.get('tokens', 0)} tok, "
                f"{_usd(t.get('cost_usd'))}"
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
        row = [_td(f'<a href="#gen-{g.gen}">{g.gen}</a>')]
        row += [
            _td(_dur(g.step_seconds.get(s)) if s in g.step_seconds else "", True) for s in steps
        ]
        row.append(_td(_dur(g.seconds), True))
        if ledger:
            led = g.ledger
            row += [
                _td(_i(as_int(led.get("llm_calls"))), True),
                _td(_i(as_int(led.get("input_tokens"))), True),
                _td(_i(as_int(led.get("output_tokens"))), True),
                _td(_usd(led.get("cost_usd")), True),
                _td(_dur(as_num(led.get("train_device_seconds"))) if led else "–", True),
                _td(_by_role(led)),
            ]
        else:
            train_s = g.train.metrics.get("seconds") if g.train else None
            row += [
                _td(_i(g.llm_calls), True),
                _td(_i(g.prompt_tokens), True),
                _td(_i(g.completion_tokens), True),
                _td(_usd(g.cost_usd), True),
                _td(_dur(float(train_s)) if isinstance(train_s, int | float) else "–", True),
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
    out += _table(head, rows, css="cost")
    if run.cost:
        c = run.cost
        totals = [
            f"run total: {_i(as_int(c.get('llm_calls')))} LLM calls",
            f"{_i(as_int(c.get('tokens')))} tokens",
            _usd(c.get("cost_usd")),
            f"training {_dur(as_num(c.get('train_device_seconds')))}",
            f"wall {_dur(as_num(c.get('wall_seconds')))}",
        ]
    else:
        totals = [
            f"total: steps {_dur(sum(g.seconds for g in run.gens))}",
            f"{_i(sum(g.llm_calls or 0 for g in run.gens))} model calls (dev)",
            _usd(sum(g.cost_usd or 0 for g in run.gens)),
        ]
    out += f"<p class='totals'>{escape(' · '.join(totals))}</p>"
    extra = []
    caps = {k: v for k, v in run.caps.items() if v is not None}
    if caps:
        extra.append("caps: " + ", ".join(f"{k} {v}" for k, v in caps.items()))
    if run.estimate:
        extra.append(
            f"estimate before the run: {_usd(run.estimate.get('usd'))} "
            f"({run.estimate.get('basis', '')})"
        )
    if extra:
        out += f"<p class='small'>{escape(' · '.join(extra))}</p>"
    if run.stopped_by_cap:
        out += f"<p class='warn'>stopped by a cap: {escape(json.dumps(run.stopped_by_cap))}</p>"
    return out


def train_charts(g: GenInfo, t: TrainInfo) -> str:
    steps = [s for s in t.steps if isinstance(s.get("step"), int | float)]

    def series(key: str, color: str, name: str, band_key: str | None = None) -> Series:
        pts = tuple(
            Point(
                x=float(s["step"]),
                y=float(s[key]),
                title=f"step {s['step']}: {name} {s[key]:.4g}",
                data={"step": str(s["step"])},
            )
            for s in steps
            if isinstance(s.get(key), int | float)
        )
        band: tuple[tuple[float, float, float], ...] = ()
        if band_key:
            band = tuple(
                (
                    float(s["step"]),
                    float(s[key]) - float(s[band_key]),
                    float(s[key]) + float(s[band_key]),
                )
                for s in steps
                if isinstance(s.get(key), int | float) and isinstance(s.get(band_key), int | float)
            )
        return Series(name=name, points=pts, color=color, band=band, css=key)

    total = as_int(t.settings.get("steps"))
    kw: dict[str, Any] = {
        "x_label": "step",
        "width": 480,
        "height": 230,
        "x_range": (0.6, total + 0.4) if total else None,
    }
    return (
        f'<div class="train-charts" data-gen="{g.gen}">'
        + chart(
            [series("reward_mean", "#c05621", "reward mean ± std", "reward_std")],
            title=f"gen {g.gen}: reward per step",
            y_label="reward",
            css="chart train-reward",
            **kw,
        )
        + chart(
            [series("kl", "#6b46c1", "KL")],
            title=f"gen {g.gen}: KL to the base model",
            y_label="KL",
            css="chart train-kl",
            **kw,
        )
        + chart(
            [series("loss", "#2b6cb0", "loss")],
            title=f"gen {g.gen}: loss",
            y_label="loss",
            css="chart train-loss",
            **kw,
        )
        + "</div>"
    )


def training_section(run: RunInfo) -> str:
    out = []
    for g in run.gens:
        t = g.train
        if t is None:
            continue
        head = (
            f"<h3>gen {g.gen}: {escape(t.algorithm or g.rl_algorithm or '?')} "
            f"{_status(t.status)}</h3>"
        )
        facts = []
        if t.executor:
            facts.append(f"executor {t.executor}")
        total = as_int(t.settings.get("steps"))
        facts.append(f"{len(t.steps)}" + (f" of {total}" if total else "") + " step(s) logged")
        for key in (
            "reward_first",
            "reward_last",
            "kl_last",
            "seconds",
            "seconds_per_step",
            "device",
            "peak_rss_mb",
        ):
            v = t.metrics.get(key)
            if v is not None:
                facts.append(f"{key} {v:.4g}" if isinstance(v, float) else f"{key} {v}")
        settings = ", ".join(
            f"{k}={t.settings[k]}"
            for k in (
                "steps",
                "group_size",
                "items_per_step",
                "learning_rate",
                "lora_rank",
                "kl_coef",
            )
            if k in t.settings
        )
        zero = [s.get("zero_variance_groups") for s in t.steps]
        groups = as_int(t.settings.get("items_per_step"))
        if zero and all(isinstance(z, int) for z in zero):
            facts.append(
                "zero-variance reward groups per step: "
                + ", ".join(str(z) for z in zero)
                + (f" (of {groups})" if groups else "")
            )
        body = f"<p class='small'>{escape(' · '.join(facts))}</p>"
        if settings:
            body += f"<p class='small'>settings: {escape(settings)}</p>"
        if t.status == "running":
            body += (
                "<p class='warn'>training in progress: the curves show the steps logged so far</p>"
            )
        if t.error:
            body += f"<details><summary>error</summary><pre>{escape(t.error)}</pre></details>"
        out.append(head + body + train_charts(g, t))
    return "".join(out) or '<p class="small">no weights generation in this run</p>'


def _diff_html(diff: str) -> str:
    lines = []
    for line in diff.splitlines():
        e = escape(line) or " "
        if line.startswith("+") and not line.startswith("+++"):
            lines.append(f'<span class="add">{e}</span>')
        elif line.startswith("-") and not line.startswith("---"):
            lines.append(f'<span class="del">{e}</span>')
        elif line.startswith("@@"):
            lines.append(f'<span class="hunk">{e}</span>')
        else:
            lines.append(e + "\n")
    return '<pre class="diff">' + "".join(lines) + "</pre>"


def generations_section(run: RunInfo) -> str:
    out = []
    for g in run.gens:
        parts = [
            f'<div class="gen" id="gen-{g.gen}" data-gen="{g.gen}" data-status="{escape(g.status)}">',
            f"<h3>Generation {g.gen} {_lever(g.lever)} {_status(g.status)}</h3>",
        ]
        if g.status in ("incomplete", "running"):
            done = (
                ", ".join(
                    s for s in ("propose", "train", "run", "score", "gate") if s in g.step_seconds
                )
                or "none"
            )
            word = "in progress" if g.status == "running" else "half-written (the run stopped here)"
            parts.append(f"<p class='warn'>generation {word}: finished steps: {escape(done)}</p>")
        if g.missing:
            parts.append(f"<p class='warn'>missing artifacts: {escape(', '.join(g.missing))}</p>")
        if g.failed_calls:
            parts.append(
                f"<p class='warn'>{_failed(g)} (the dev score is what the scaffold made of "
                f"that); the first error: {escape(g.first_call_error)}</p>"
            )
        if g.gate_reason:
            parts.append(f"<p class='small'>gate: {escape(g.gate_reason)}</p>")
        if g.notes and g.improvement is None:
            parts.append(
                "<ul class='small'>" + "".join(f"<li>{escape(n)}</li>" for n in g.notes) + "</ul>"
            )
        if g.improvement is not None:
            parts.append(
                "<details open><summary>improvement.md</summary>"
                f'<pre class="improvement">{escape(g.improvement)}</pre></details>'
            )
        if g.diff is not None:
            n_add = sum(
                1 for ln in g.diff.splitlines() if ln.startswith("+") and not ln.startswith("+++")
            )
            n_del = sum(
                1 for ln in g.diff.splitlines() if ln.startswith("-") and not ln.startswith("---")
            )
            label = (
                f"diff.patch (+{n_add} −{n_del})" if g.diff.strip() else "diff.patch (no change)"
            )
            parts.append(
                f"<details><summary>{escape(label)}</summary>{_diff_html(g.diff)}</details>"
            )
        parts.append("</div>")
        out.append("".join(parts))
    return "".join(out)


def render(run: RunInfo, *, generated: float | None = None, pngs: Iterable[str] = ()) -> str:
    """The whole page as one string."""
    generated = time.time() if generated is None else generated
    cfg = run.config
    meta = [
        f"task <b>{escape(str(run.task or '?'))}</b>",
        f"status {_status(run.status)}",
        f"backend {escape(str(run.backend or '?'))}",
        f"task model {escape(str(run.task_model or cfg.get('task_model') or '?'))}",
        f"sandbox {escape(str(run.sandbox or '?'))}",
        f"lever {escape(str(cfg.get('lever', '?')))}",
        f"generations {len([g for g in run.gens if g.status == 'done'])}/"
        f"{escape(str(cfg.get('max_gen', '?')))}",
        f"incumbent gen {run.incumbent if run.incumbent is not None else '–'}",
        f"started {_t(run.created)}",
        f"last event {_t(run.last_event or run.updated)}",
    ]
    warn = ""
    if run.stop_reason:
        warn += f"<p class='warn'>{escape(run.status)}: {escape(run.stop_reason)}</p>"
    if run.status == "interrupted":
        warn += "<p class='warn'>the run's process is gone (killed?); `sia resume` continues it</p>"
    if run.problems:
        warn += "<p class='warn'>unreadable artifacts: " + escape("; ".join(run.problems)) + "</p>"
    png = ""
    if pngs:
        png = "<p class='small'>PNG figures next to this page: " + escape(", ".join(pngs)) + "</p>"
    title = f"sia run {run.run_id} — {run.task or '?'}"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; img-src data:">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="sia-report">
<title>{escape(title)}</title><style>{CSS}</style></head>
<body data-run="{escape(run.run_id)}" data-status="{escape(run.status)}" data-generations="{len(run.gens)}">
<h1>{escape(title)}</h1>
<p class="meta">{"".join(f"<span>{m}</span>" for m in meta)}</p>
<p class="small">{escape(run.run_dir)} · report generated {_t(generated)}. Sealed test scores are
for this report only; no decision of the loop read them.</p>
{warn}
<h2 id="scores">Scores</h2>
{score_chart(run)}
{scores_table(run)}
{png}
<h2 id="levers">Lever timeline</h2>
{lever_timeline(run)}
<h2 id="lineage">Lineage of the archive</h2>
{lineage_svg(run)}
<h2 id="training">Training (weights generations)</h2>
{training_section(run)}
<h2 id="cost">Cost and time per generation</h2>
{cost_table(run)}
<h2 id="generations">Generations: improvement.md and scaffold diffs</h2>
{generations_section(run)}
</body></html>
"""
