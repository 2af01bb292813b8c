"""Prices of models: USD per token, and how a sum of USD is printed.

The provider's ``usage.cost`` when given, else litellm's bundled price table (read as a file,
without importing litellm, and only when a model that is not free asks for a price), else 0.
``SIA_MODEL_PRICES=file.json`` (litellm's format) adds or overrides prices.
"""

from __future__ import annotations

import importlib.util
import json
import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sia_core.contracts.errors import SiaError

PRICES_ENV = "SIA_MODEL_PRICES"


class Pricer:
    """USD per token of a model, from ``SIA_MODEL_PRICES`` and litellm's bundled price table.

    The table is read lazily on the first lookup; :meth:`cost` returns ``None`` for a model
    with no known price.
    """

    def __init__(self, extra_file: str | None = None) -> None:
        self.extra_file = extra_file if extra_file is not None else os.environ.get(PRICES_ENV)
        self._table: dict[str, Any] | None = None
        self._lock = threading.Lock()

    def _load(self) -> dict[str, Any]:
        with self._lock:
            if self._table is None:
                table = dict(litellm_price_table())
                if self.extra_file:
                    try:
                        extra = json.loads(Path(self.extra_file).read_text(encoding="utf-8"))
                    except (OSError, ValueError) as exc:
                        raise SiaError(f"{PRICES_ENV}={self.extra_file}: {exc}") from exc
                    if not isinstance(extra, dict):
                        raise SiaError(f"{PRICES_ENV}={self.extra_file}: expected a JSON object")
                    table.update(extra)
                self._table = table
            return self._table

    def price(self, model: str | None) -> tuple[float, float] | None:
        """``(USD per input token, USD per output token)``, or ``None`` when unknown."""
        if not model:
            return None
        table = self._load()
        names = [model]
        if "/" in model:
            names.append(model.split("/", 1)[1])
        for name in names:
            entry = table.get(name)
            if isinstance(entry, dict):
                p_in = float_or_zero(entry.get("input_cost_per_token"))
                p_out = float_or_zero(entry.get("output_cost_per_token"))
                if p_in or p_out:
                    return p_in, p_out
        return None

    def cost(self, model: str | None, input_tokens: int, output_tokens: int) -> float | None:
        """USD of one call's tokens, or ``None`` when the model has no known price."""
        p = self.price(model)
        if p is None:
            return None
        return input_tokens * p[0] + output_tokens * p[1]

    __call__ = cost


def litellm_price_table() -> Mapping[str, Any]:
    """litellm's offline price table (``litellm.model_cost``), or ``{}`` without litellm.

    The JSON file litellm bundles is read directly (what ``LITELLM_LOCAL_MODEL_COST_MAP=True``
    makes litellm load), so no network and no import of litellm itself.
    """
    try:
        spec = importlib.util.find_spec("litellm")
    except (ImportError, ValueError):
        return {}
    if spec is None:
        return {}
    for folder in spec.submodule_search_locations or ():
        path = Path(folder) / "model_prices_and_context_window_backup.json"
        if path.is_file():
            data = json.loads(path.read_text(encoding="utf-8"))
            data.pop("sample_spec", None)
            return data
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm  # the file moved: ask litellm itself (offline, by the variable above)

    return dict(litellm.model_cost)


def float_or_zero(value: Any) -> float:
    """``value`` as a float; 0.0 when it is missing or not a number."""
    try:
        return float(value or 0.0)
    except (TypeError, ValueError):
        return 0.0


def fmt_usd(x: float | None) -> str:
    if x is None:
        return "-"
    if x == 0:
        return "$0"
    return f"${x:.4f}" if x < 100 else f"${x:,.2f}"
