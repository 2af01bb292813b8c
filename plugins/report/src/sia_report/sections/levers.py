"""The Lever timeline: one card per generation with its lever, who decided it and why, and for a
weights generation the RL objective, the reward shape behind it and every objective's fit."""

from __future__ import annotations

from html import escape
from typing import Any

from ..data import GenInfo, RunInfo, as_num
from ..markup import failed_calls_text, fmt_float, lever_badge, status_badge


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
            f"<td>{escape(name)}</td><td class='num'>{fmt_float(as_num(f.get('score')), 2)}</td></tr>"
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
    """The reward statistics the RL objective was chosen on (:data:`REWARD_FIELDS`)."""
    if not stats:
        return ""
    cells = []
    for key, label in REWARD_FIELDS:
        if key in stats:
            v = stats[key]
            shown = f"{v:.3f}" if isinstance(v, float) else str(v)
            cells.append(f"<tr><th>{escape(label)}</th><td class='num'>{escape(shown)}</td></tr>")
    return "<table class='reward-shape'>" + "".join(cells) + "</table>"


def lever_timeline(run: RunInfo) -> str:
    """One card per generation: lever, status, who decided and why, objective fits, scores."""
    cards = []
    for g in run.gens:
        inc = " incumbent" if g.gen == run.incumbent else ""
        parts = [
            f'<div class="tl{inc}" data-gen="{g.gen}" data-lever="{escape(g.lever or "")}">',
            f"<h4>gen {g.gen} {lever_badge(g.lever)} {status_badge(g.status)}</h4>",
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
            parts.append(f"<div class='bad'>{failed_calls_text(g)}</div>")
        if g.dev is not None:
            parts.append(
                f"<div>dev {fmt_float(g.dev)}"
                + (f" · test {fmt_float(g.test)}" if g.test is not None else "")
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
