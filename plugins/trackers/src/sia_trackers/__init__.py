"""Experiment trackers (MLflow, Weights & Biases, ...) as ``sia_on_event`` observers.

A tracker writes a :class:`TrackerBackend` (start or continue a tracked run; log params, tags,
metrics and files; finish) and registers ``TrackerObserver(name, factory)`` through its entry
point (``tracker-NAME`` in the ``sia`` group). The observer does the rest, the same way for every
tracker:

- **Opt-in.** It tracks a run only when ``SIA_TRACKERS`` names it (``SIA_TRACKERS=mlflow,wandb``)
  or, with ``SIA_TRACKERS`` unset, when it tracked this run before: a resumed run stays tracked.
  ``SIA_TRACKERS=none`` tracks nothing.
- **What.** Read from the run folder as steps finish: params (the run config), per-generation
  metrics (step = generation), training curves (step = training step, counted across the run),
  artifacts (``target_agent.py``, ``diff.patch``, ``improvement.md``, ``decision.json``), and once
  the run has finished its sealed test scores and totals. Nothing under ``sealed/`` or ``private``
  is ever sent; test scores are sent only after the run's last step.
- **Resume.** ``trackers/<name>.json`` in the run folder keeps the tracked run's id and the last
  event logged: a resumed run continues the same tracked run and first logs what it missed.
- **Failure and speed.** Each tracked run is logged by a worker thread, in event order, so a slow
  tracker never holds the loop up; the end of the run waits for it. A tracker error prints one
  line and ends that tracker for this run; the run goes on (the core isolates observers anyway).
  A tracker whose library is not installed prints one line naming the extra to install.

Modules: :mod:`.base` (protocol, opt-in, reading the run folder), :mod:`.session` (one tracked
run), :mod:`.observer` (the observer), :mod:`.mlflow_tracker` and :mod:`.wandb_tracker` (the
backends, entry points ``tracker-mlflow`` and ``tracker-wandb``; extras ``[mlflow]`` and
``[wandb]`` bring their libraries, imported only when a run is tracked).
"""

from __future__ import annotations

from .base import (
    ENV,
    TrackedRun,
    TrackerBackend,
    installed,
    requested,
    safe_name,
    state_path,
    wanted,
)
from .observer import TrackerObserver

__all__ = [
    "ENV",
    "TrackedRun",
    "TrackerBackend",
    "TrackerObserver",
    "installed",
    "requested",
    "safe_name",
    "state_path",
    "wanted",
]
