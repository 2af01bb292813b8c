"""sia-report: a self-contained HTML report of a run (``sia report RUN``), PNG figures, and an
observer that keeps ``report.html`` up to date while the run goes.

``read_run`` and ``write_report`` are imported on first use: the plugin's entry point (``plugin``)
stays light, so ``sia --help`` does not load the report's modules.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__all__ = ["read_run", "write_report"]
_HOMES = {"read_run": ".data", "write_report": ".report"}


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        return getattr(import_module(_HOMES[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
