"""The self-contained ``report.html``: inline CSS and SVG, no script, no external resource.

A Content-Security-Policy meta tag forbids every fetch (``default-src 'none'``), so the page
cannot reach the network even if run text tried to. All run text (decisions, improvement.md,
diffs are LLM-written) goes through :func:`html.escape`. The page's style sheet is the package
file ``report.css``, inlined; the sections come from :mod:`sia_report.sections`.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from html import escape
from importlib import resources

from .data import RunInfo
from .markup import fmt_utc, status_badge
from .sections.cost import cost_table
from .sections.generations import generations_section
from .sections.levers import lever_timeline
from .sections.lineage import lineage_svg
from .sections.scores import score_chart, scores_table
from .sections.training import training_section

#: the page's style sheet, inlined in its ``<style>`` element
CSS = resources.files("sia_report").joinpath("report.css").read_text(encoding="utf-8")


def render(
    run: RunInfo,
    *,
    generated: float | None = None,
    pngs: Iterable[str] = (),
    refresh_s: int | None = None,
    index_href: str | None = None,
) -> str:
    """The whole page as one string; ``refresh_s`` makes it reload itself (``sia web``), and
    ``index_href`` adds a link back to the list of runs."""
    generated = time.time() if generated is None else generated
    cfg = run.config
    meta = [
        f"task <b>{escape(str(run.task or '?'))}</b>",
        f"status {status_badge(run.status)}",
        f"backend {escape(str(run.backend or '?'))}",
        f"task model {escape(str(run.task_model or cfg.get('task_model') or '?'))}",
        f"sandbox {escape(str(run.sandbox or '?'))}",
        f"lever {escape(str(cfg.get('lever', '?')))}",
        f"generations {len([g for g in run.gens if g.status == 'done'])}/"
        f"{escape(str(cfg.get('max_gen', '?')))}",
        f"incumbent gen {run.incumbent if run.incumbent is not None else '–'}",
        f"started {fmt_utc(run.created)}",
        f"last event {fmt_utc(run.last_event or run.updated)}",
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
    live = f'<meta http-equiv="refresh" content="{int(refresh_s)}">\n' if refresh_s else ""
    back = (
        f"<p class='small'><a href='{escape(index_href)}'>&larr; every run</a></p>"
        if index_href
        else ""
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
{live}
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; img-src data:">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="sia-report">
<title>{escape(title)}</title><style>
{CSS}</style></head>
<body data-run="{escape(run.run_id)}" data-status="{escape(run.status)}" data-generations="{len(run.gens)}">
{back}<h1>{escape(title)}</h1>
<p class="meta">{"".join(f"<span>{m}</span>" for m in meta)}</p>
<p class="small">{escape(run.run_dir)} · report generated {fmt_utc(generated)}. Sealed test scores are
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
