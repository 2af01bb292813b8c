"""The run caps (``--max-usd``, ``--max-tokens``, ``--max-train-seconds``) against the ledger's
totals."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sia_core.contracts.config import CAPS, RunConfig
from sia_core.machinery.pricing import float_or_zero


def cap_reached(config: RunConfig, used: Mapping[str, Any]) -> dict[str, Any] | None:
    """The first cap of ``config`` that ``used`` (run totals) has reached, or ``None``."""
    for cap in CAPS:
        limit = getattr(config, cap.field)
        if limit is not None and float_or_zero(used.get(cap.counts)) >= limit:
            return {"cap": cap.name, "flag": cap.flag, "limit": limit, "used": used.get(cap.counts)}
    return None


def caps_of(config: RunConfig) -> dict[str, Any]:
    """``run.json``'s ``caps`` (``max_tokens`` is ``RunConfig.max_run_tokens``)."""
    return {cap.name: getattr(config, cap.field) for cap in CAPS}


def describe_cap(cap: Mapping[str, Any], run_id: str, *, still: bool = False) -> str:
    """One line: which cap, its figure, what was used, and how to go on."""
    flag, limit, used = cap["flag"], cap["limit"], float_or_zero(cap["used"])
    if cap["cap"] == "max_usd":
        name, figure = "cost cap", f"{flag} {limit:g} (spent ${used:.4f})"
    elif cap["cap"] == "max_tokens":
        name, figure = "token budget", f"{flag} {limit} (used {int(used)} tokens)"
    else:
        name, figure = "training-time cap", f"{flag} {limit:g} (trained {used:.1f} device-s)"
    return (
        f"{name} {'still ' if still else ''}reached: {figure}; continue with a higher cap: "
        f"`sia resume {run_id} {flag} N`"
    )
