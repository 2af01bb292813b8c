"""Runs a scaffold over task items with a pool of sandboxed workers.

A per-item scaffold (a top-level ``def solve``) runs in ``parallel`` workers. Each worker is one
sandboxed ``python -I scaffold_host.py`` process with its own gateway token; the runner sends
it one JSON request per line on stdin and reads the answers from a separate pipe (never stdout,
which goes to the worker's log with stderr). A worker that hangs past ``item_timeout_s`` or
dies is killed with its whole process tree and replaced; the item is recorded as ``timeout`` or
``error`` and the other items go on. A program-style scaffold is run once as
``python target_agent.py --dataset_dir <public_dir> --working_dir <work_dir>``.

Modules: ``spec`` (:class:`RunSpec`, :class:`ProgramResult`, the :class:`Gateway` protocol,
:func:`scaffold_kind`), ``items`` (:func:`run_items`, the ``local`` runner), ``program`` (:func:`run_program`),
``worker`` (one scaffold host process and its protocol), ``environment`` (what a scaffold
process is given), ``watchdog`` (the work-dir limit), ``trial`` (an agent trying a candidate
scaffold on a few train items) and ``execution`` (``agent_execution.json``, redacted). ``scaffold_host.py`` is the harness
each worker runs: a standalone script executed by path that imports nothing from sia_core.
"""

from __future__ import annotations

from sia_core.services.runner.items import LocalRunner, run_items
from sia_core.services.runner.program import run_program
from sia_core.services.runner.spec import (
    Gateway,
    ItemRunner,
    ProgramResult,
    RunnerOptions,
    RunSpec,
    scaffold_kind,
)
from sia_core.services.runner.worker import HOST_PATH

__all__ = [
    "HOST_PATH",
    "Gateway",
    "ItemRunner",
    "LocalRunner",
    "ProgramResult",
    "RunSpec",
    "RunnerOptions",
    "run_items",
    "run_program",
    "scaffold_kind",
]
