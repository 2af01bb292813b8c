"""The Generations section: per generation its warnings, gate reason, ``improvement.md`` and
scaffold diff (coloured by line)."""

from __future__ import annotations

from html import escape

from ..data import RunInfo
from ..markup import failed_calls_text, lever_badge, status_badge


def _diff_html(diff: str) -> str:
    """A unified diff with added, removed and hunk lines marked for the CSS."""
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
    """Per generation: warnings, gate reason, improvement.md (or notes) and the diff."""
    out = []
    for g in run.gens:
        parts = [
            f'<div class="gen" id="gen-{g.gen}" data-gen="{g.gen}" data-status="{escape(g.status)}">',
            f"<h3>Generation {g.gen} {lever_badge(g.lever)} {status_badge(g.status)}</h3>",
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
                f"<p class='warn'>{failed_calls_text(g)} (the dev score is what the scaffold made of "
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
