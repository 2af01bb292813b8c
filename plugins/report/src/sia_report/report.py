"""Write a run's report: ``report.html`` (self-contained) and, optionally, PNG figures."""

from __future__ import annotations

import time
from pathlib import Path

import attrs

from sia_core.machinery.runstore import atomic_write_text

from .data import read_run
from .html import render

REPORT_NAME = "report.html"
FIGURES_DIR = "report"  # PNGs, inside the run folder


@attrs.frozen(kw_only=True)
class Written:
    """What :func:`write_report` wrote."""

    html: Path
    pngs: tuple[Path, ...] = ()
    png_error: str = ""


def write_report(run_dir: str | Path, *, pngs: bool = True) -> Written:
    """Read the run in ``run_dir`` (any state) and write ``report.html`` (+ PNGs) into it.

    PNGs need matplotlib; without it the HTML is still written and ``png_error`` says why.
    """
    root = Path(run_dir)
    run = read_run(root)
    written: list[Path] = []
    error = ""
    if pngs:
        try:
            from .figures import score_png, training_png

            fig_dir = root / FIGURES_DIR
            fig_dir.mkdir(exist_ok=True)
            for fn, name in ((score_png, "score.png"), (training_png, "training.png")):
                path = fn(run, fig_dir / name)
                if path is not None:
                    written.append(path)
        except ImportError as exc:
            error = f"no PNG figures: {exc} (pip install matplotlib)"
    rel = [str(p.relative_to(root)) for p in written]
    html = root / REPORT_NAME
    atomic_write_text(html, render(run, generated=time.time(), pngs=rel))
    return Written(html=html, pngs=tuple(written), png_error=error)
