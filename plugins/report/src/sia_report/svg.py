"""Small inline SVG charts (no library, no script): line, step, point and band series.

Every text that comes from a run is escaped. Points carry ``data-*`` attributes and a
``<title>`` (the browser's tooltip), so the page needs no JavaScript.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape

import attrs

#: one colour per lever (also used by the PNG figures)
LEVER_COLORS = {
    "harness": "#2b6cb0",
    "weights": "#c05621",
    "both": "#6b46c1",
    "stop": "#718096",
}
DEFAULT_COLOR = "#4a5568"


@attrs.frozen(kw_only=True)
class Point:
    x: float
    y: float
    title: str = ""
    color: str | None = None
    css: str = ""  # extra class, e.g. "incumbent"
    data: dict[str, str] = attrs.field(factory=dict)


@attrs.frozen(kw_only=True)
class Series:
    name: str
    points: tuple[Point, ...]
    color: str = DEFAULT_COLOR
    kind: str = "line"  # line | step | points
    marker: str = "circle"  # circle | diamond | none
    dashed: bool = False
    css: str = ""
    band: tuple[tuple[float, float, float], ...] = ()  # (x, low, high), drawn under the line


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    start = math.ceil(lo / step - 1e-9) * step
    out = []
    t = start
    while t <= hi + 1e-9:
        out.append(round(t, 10))
        t += step
    return out


def _fmt(v: float) -> str:
    if v == int(v) and abs(v) < 1e6:
        return str(int(v))
    return f"{v:.3g}"


def chart(
    series: Sequence[Series],
    *,
    title: str,
    x_label: str,
    y_label: str,
    width: int = 640,
    height: int = 280,
    y_range: tuple[float, float] | None = None,
    x_range: tuple[float, float] | None = None,
    integer_x: bool = True,
    css: str = "chart",
) -> str:
    """An SVG chart of ``series``; an empty chart says "no data yet"."""
    pts = [p for s in series for p in s.points]
    band = [b for s in series for b in s.band]
    ml, mr, mt, mb = 56, 150, 28, 44
    pw, ph = width - ml - mr, height - mt - mb
    head = (
        f'<svg class="{escape(css)}" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} '
        f'{height}" width="{width}" height="{height}" role="img" aria-label="{escape(title)}">'
        f'<text class="ctitle" x="{ml}" y="18">{escape(title)}</text>'
    )
    if not pts:
        return (
            head + f'<text class="empty" x="{width / 2}" y="{height / 2}" text-anchor="middle">'
            "no data yet</text></svg>"
        )
    xs = [p.x for p in pts] + [b[0] for b in band]
    ys = [p.y for p in pts] + [v for b in band for v in b[1:]]
    x0, x1 = min(xs), max(xs)
    if x_range is not None:
        x0, x1 = min(x0, x_range[0]), max(x1, x_range[1])
    if x0 == x1:
        x0, x1 = x0 - 1, x1 + 1
    if y_range is not None:
        y0, y1 = y_range
        y0, y1 = min(y0, min(ys)), max(y1, max(ys))
    else:
        y0, y1 = min(ys), max(ys)
        pad = (y1 - y0) * 0.08 or (abs(y0) * 0.1 or 1.0)
        y0, y1 = y0 - pad, y1 + pad

    def sx(x: float) -> float:
        return round(ml + (x - x0) / (x1 - x0) * pw, 2)

    def sy(y: float) -> float:
        return round(mt + ph - (y - y0) / (y1 - y0) * ph, 2)

    out = [head]
    # axes and grid
    for t in _ticks(y0, y1):
        out.append(
            f'<line class="grid" x1="{ml}" x2="{ml + pw}" y1="{sy(t)}" y2="{sy(t)}"/>'
            f'<text class="tick" x="{ml - 6}" y="{sy(t) + 4}" text-anchor="end">{_fmt(t)}</text>'
        )
    xt = (
        [float(v) for v in range(math.ceil(x0), math.floor(x1) + 1)]
        if integer_x and x1 - x0 <= 40
        else _ticks(x0, x1, 8)
    )
    for t in xt:
        out.append(
            f'<text class="tick" x="{sx(t)}" y="{mt + ph + 16}" text-anchor="middle">'
            f"{_fmt(t)}</text>"
        )
    out.append(
        f'<line class="axis" x1="{ml}" x2="{ml}" y1="{mt}" y2="{mt + ph}"/>'
        f'<line class="axis" x1="{ml}" x2="{ml + pw}" y1="{mt + ph}" y2="{mt + ph}"/>'
        f'<text class="label" x="{ml + pw / 2}" y="{height - 6}" text-anchor="middle">'
        f"{escape(x_label)}</text>"
        f'<text class="label" transform="translate(14 {mt + ph / 2}) rotate(-90)" '
        f'text-anchor="middle">{escape(y_label)}</text>'
    )
    # series
    legend = []
    for s in series:
        cls = f"series {escape(s.css)}".strip()
        out.append(f'<g class="{cls}" data-series="{escape(s.name)}">')
        if s.band:
            upper = " ".join(f"{sx(x)},{sy(hi)}" for x, _, hi in s.band)
            lower = " ".join(f"{sx(x)},{sy(lo)}" for x, lo, _ in reversed(s.band))
            out.append(
                f'<polygon class="band" points="{upper} {lower}" fill="{s.color}" '
                'fill-opacity="0.15" stroke="none"/>'
            )
        ordered = sorted(s.points, key=lambda p: p.x)
        if s.kind in ("line", "step") and len(ordered) > 1:
            coords = []
            for i, p in enumerate(ordered):
                if s.kind == "step" and i:
                    coords.append(f"{sx(p.x)},{sy(ordered[i - 1].y)}")
                coords.append(f"{sx(p.x)},{sy(p.y)}")
            dash = ' stroke-dasharray="5 4"' if s.dashed else ""
            out.append(
                f'<polyline points="{" ".join(coords)}" fill="none" stroke="{s.color}" '
                f'stroke-width="2"{dash}/>'
            )
        if s.marker != "none":
            for p in ordered:
                color = p.color or s.color
                data = "".join(f' data-{escape(k)}="{escape(v)}"' for k, v in p.data.items())
                pcls = f"pt {escape(p.css)}".strip()
                tip = f"<title>{escape(p.title)}</title>" if p.title else ""
                cx, cy = sx(p.x), sy(p.y)
                if s.marker == "diamond":
                    shape = (
                        f'<polygon class="{pcls}"{data} points="{cx},{cy - 6} {cx + 6},{cy} '
                        f'{cx},{cy + 6} {cx - 6},{cy}" fill="{color}">{tip}</polygon>'
                    )
                else:
                    shape = (
                        f'<circle class="{pcls}"{data} cx="{cx}" cy="{cy}" r="5" '
                        f'fill="{color}">{tip}</circle>'
                    )
                if "incumbent" in p.css:
                    shape = (
                        f'<circle class="ring" cx="{cx}" cy="{cy}" r="10" fill="none" '
                        f'stroke="#d69e2e" stroke-width="3"/>' + shape
                    )
                out.append(shape)
        out.append("</g>")
        legend.append(s)
    # legend (right of the plot)
    lx = ml + pw + 12
    for i, s in enumerate(legend):
        y = mt + 6 + i * 16
        dash = ' stroke-dasharray="5 4"' if s.dashed else ""
        out.append(
            f'<line x1="{lx}" x2="{lx + 18}" y1="{y}" y2="{y}" stroke="{s.color}" '
            f'stroke-width="2"{dash}/><text class="legend" x="{lx + 24}" y="{y + 4}">'
            f"{escape(s.name)}</text>"
        )
    out.append("</svg>")
    return "".join(out)
