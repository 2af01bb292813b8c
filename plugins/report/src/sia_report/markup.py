"""The small pieces every section of ``report.html`` is built from: value formatters (a missing
value shows as "–"), lever and status badges, table cells and tables.

The formatters return plain text; the badges escape the run text they are given; :func:`table`
and :func:`td` take cells that are already HTML.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from html import escape
from typing import Any

from .data import GenInfo
from .svg import DEFAULT_COLOR, LEVER_COLORS


def fmt_float(x: float | None, digits: int = 4) -> str:
    """A score or other float with ``digits`` decimals."""
    return "–" if x is None else f"{x:.{digits}f}"


def fmt_int(x: int | None) -> str:
    """A count with thousands separators."""
    return "–" if x is None else f"{x:,}"


def fmt_utc(ts: float | None) -> str:
    """A Unix timestamp as a UTC date and time."""
    return "–" if ts is None else time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ts))


def fmt_duration(s: float | None) -> str:
    """Seconds as "12.3 s", "4 min 5 s" or "1 h 2 min"."""
    if s is None:
        return "–"
    if s < 60:
        return f"{s:.1f} s"
    m, sec = divmod(round(s), 60)
    return f"{m} min {sec} s" if m < 60 else f"{m // 60} h {m % 60} min"


def fmt_usd(x: Any) -> str:
    """A dollar amount with four decimals (anything but a number shows as "–")."""
    return f"${x:.4f}" if isinstance(x, int | float) else "–"


def lever_badge(lever: str | None) -> str:
    """The lever's name on its colour (the colours of the charts)."""
    name = lever or "?"
    color = LEVER_COLORS.get(name, DEFAULT_COLOR)
    return f'<span class="lever" style="background:{color}">{escape(name)}</span>'


def status_badge(status: str) -> str:
    """A run's or a generation's status; the CSS colours it by its class."""
    return f'<span class="status {escape(status)}">{escape(status)}</span>'


def failed_calls_text(g: GenInfo) -> str:
    """The "N of M task-model calls failed" line, escaped."""
    return escape(f"{g.failed_calls} of {g.calls} task-model calls failed")


def table(head: Iterable[str], rows: Iterable[Iterable[str]], css: str = "") -> str:
    """A table; cells are already-escaped HTML."""
    h = "".join(f"<th>{c}</th>" for c in head)
    body = "".join("<tr>" + "".join(row) + "</tr>" for row in rows)
    cls = f' class="{css}"' if css else ""
    return f"<table{cls}><thead><tr>{h}</tr></thead><tbody>{body}</tbody></table>"


def td(x: str, num: bool = False) -> str:
    """A cell of already-escaped HTML; ``num`` right-aligns it with tabular figures."""
    return f'<td class="num">{x}</td>' if num else f"<td>{x}</td>"
