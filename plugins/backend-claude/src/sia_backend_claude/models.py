"""Claude model aliases and prices (USD per million tokens). Standard library only.

Aliases follow the current line-up of Anthropic's models overview (checked November 2026);
a full model id (e.g. ``claude-haiku-5-5``) is passed through unchanged. A model missing from
the price table is billed at ``--backend-opt price_input=...,price_output=...`` or counted as 0
with ``"priced": false`` in the usage.
"""

from __future__ import annotations

from typing import Any

ALIASES: dict[str, str] = {
    "haiku": "claude-haiku-4-5",
    "sonnet": "claude-sonnet-5",
    "opus": "claude-opus-5-5",
}

#: model id -> (input, output) USD per million tokens; cache writes cost 1.25x input (5-minute
#: cache), cache reads 0.1x input
PRICES: dict[str, tuple[float, float]] = {
    "claude-haiku-4-5": (1.0, 5.0),
    "claude-haiku-4-5-20251001": (1.0, 5.0),
    "claude-sonnet-5": (2.0, 10.0),
    "claude-sonnet-5-5": (2.0, 10.0),
    "claude-sonnet-4-6": (3.0, 15.0),
    "claude-sonnet-4-5": (3.0, 15.0),
    "claude-sonnet-4-5-20250929": (3.0, 15.0),
    "claude-opus-5-5": (4.0, 20.0),
    "claude-opus-5": (5.0, 25.0),
    "claude-opus-4-8": (5.0, 25.0),
    "claude-opus-4-7": (5.0, 25.0),
    "claude-opus-4-6": (5.0, 25.0),
    "claude-opus-4-5": (5.0, 25.0),
    "claude-opus-4-5-20251101": (5.0, 25.0),
    "claude-fable-5-1": (10.0, 50.0),
}
CACHE_WRITE = 1.25
CACHE_READ = 0.1


def resolve_model(name: str | None, default: str = "haiku") -> str:
    """A model id for an alias (``haiku``, ``sonnet``, ``opus``) or a full id."""
    name = (name or default).strip()
    return ALIASES.get(name.lower(), name)


def usage_with_cost(
    model: str, usage: dict[str, Any], price: tuple[float, float] | None = None
) -> dict[str, Any]:
    """``usage`` (Anthropic's counts) plus ``cost_usd``; ``priced`` is false when unknown.

    ``input_tokens`` becomes the whole prompt (uncached + cache writes + cache reads)."""
    price = price or PRICES.get(model)
    out = {k: int(v or 0) for k, v in usage.items() if isinstance(v, int | float | None)}
    out.setdefault("input_tokens", 0)
    out.setdefault("output_tokens", 0)
    uncached = out["input_tokens"]
    written = out.get("cache_creation_input_tokens", 0)
    read = out.get("cache_read_input_tokens", 0)
    # input_tokens counts every prompt token (as OpenAI's prompt_tokens do); the API's own count
    # of the uncached ones stays as uncached_input_tokens
    out["uncached_input_tokens"] = uncached
    out["input_tokens"] = uncached + written + read
    if price is None:
        return {**out, "cost_usd": 0.0, "priced": False}
    p_in, p_out = price
    cost = (
        uncached * p_in
        + written * p_in * CACHE_WRITE
        + read * p_in * CACHE_READ
        + out["output_tokens"] * p_out
    ) / 1e6
    return {**out, "cost_usd": round(cost, 8)}
