"""The Lineage section: the archive as an SVG tree, one node per generation."""

from __future__ import annotations

from html import escape

from ..data import RunInfo
from ..markup import fmt_float
from ..svg import DEFAULT_COLOR, LEVER_COLORS


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
            f"dev {fmt_float(g.dev)} — {g.status}"
        )
        out.append(
            f'<g class="node" data-gen="{g.gen}" data-parent="{g.parent if g.parent is not None else ""}">'
            f"<title>{escape(tip)}</title>{ring}"
            f'<circle cx="{x}" cy="{y}" r="{r}" fill="{color}"{dash}/>'
            f'<text x="{x}" y="{y + 4}" text-anchor="middle">{g.gen}</text></g>'
            f'<text class="nlabel" x="{x}" y="{y + r + 12}" text-anchor="middle">'
            f"{escape(fmt_float(g.dev, 3))}</text>"
        )
    out.append("</svg>")
    return "".join(out)
