"""sia-report: a self-contained HTML report of a run (``sia report RUN``), PNG figures, and an
observer that keeps ``report.html`` up to date while the run goes."""

from __future__ import annotations

from .data import read_run
from .report import write_report

__all__ = ["read_run", "write_report"]
