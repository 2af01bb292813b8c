"""Task directories: loading, validation and scoring.

A task directory holds the task description, public inputs, private labels, a reference scaffold
and a scorer (see ``ARCHITECTURE.md``, "Task directory")::

    my-task/
      task.toml                          # optional for SIA-style folders
      data/public/task.md                # what, answer format, metric
      data/public/train.jsonl            # {"id","input","label"}: train labels are public
      data/public/dev.jsonl, test.jsonl  # {"id","input"}: inputs only
      data/private/dev_labels.jsonl, test_labels.jsonl   # {"id","label"}: only the scorer reads them
      reference/reference_target_agent.py
      reference/SAMPLE_TASK_DESCRIPTIONS.md
      scorer.py                          # optional custom per-item scorer, outside data/public

Two scoring styles are supported: ``per_item`` (sia-native: a built-in or custom per-item scorer
over declared splits) and ``program`` (SIA's convention: ``python evaluate.py --gen-dir GEN_DIR``
writes ``GEN_DIR/results.json``). A folder without ``task.toml`` is read as a SIA folder
(``program`` kind). :func:`validate_task` lists every problem; :func:`load_task` raises
:class:`~sia_core.contracts.errors.TaskError` listing them all.

Labels never leave :class:`Task` through :meth:`Task.items`; only :meth:`Task.score`,
:meth:`Task.score_answer` and :meth:`Task.private_labels` (for scorers and tests) read them.

The modules, lowest first: ``layout`` (paths and vocabularies), ``records`` (Problem,
TaskConfig, rows), ``answers`` (normalisation, built-in scorers), ``splitting`` (dev carved from
train, program ids hashed to dev/test), ``leak_scan``, ``params`` (a scaffold's declared
parameters); the task: ``task_core``, ``item_scoring``, ``redaction``, ``program_scoring``,
``fingerprint``, ``task``; the loader: ``loader_state``, ``config_reader``, ``documents``,
``scorer_loading``, ``split_reader``, ``loader``. This package re-exports the public names.
"""

from __future__ import annotations

from sia_core.services.taskdir.answers import normalize
from sia_core.services.taskdir.fingerprint import fingerprint_changes, tampered
from sia_core.services.taskdir.layout import (
    ANSWER_TYPES,
    BUILTIN_SCORERS,
    DIRECTIONS,
    EVAL_SPLITS,
    KINDS,
    SPLITS,
)
from sia_core.services.taskdir.leak_scan import scan_public_for_labels
from sia_core.services.taskdir.loader import load_task, validate_task
from sia_core.services.taskdir.records import DevFromTrain, Problem, TaskConfig
from sia_core.services.taskdir.splitting import carve_dev, program_split_of
from sia_core.services.taskdir.task import Task

__all__ = [
    "ANSWER_TYPES",
    "BUILTIN_SCORERS",
    "DIRECTIONS",
    "EVAL_SPLITS",
    "KINDS",
    "SPLITS",
    "DevFromTrain",
    "Problem",
    "Task",
    "TaskConfig",
    "carve_dev",
    "fingerprint_changes",
    "load_task",
    "normalize",
    "program_split_of",
    "scan_public_for_labels",
    "tampered",
    "validate_task",
]
