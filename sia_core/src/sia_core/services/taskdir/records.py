"""The task folder's plain records: :class:`Problem` (one thing wrong), :class:`TaskConfig`
(a task's settings, defaults filled in), :class:`DevFromTrain` and ``_Row`` (one split row)."""

from __future__ import annotations

from typing import Any

import attrs

from sia_core.services.canary import CanarySpec
from sia_core.services.taskdir.layout import DEFAULT_PASS_STATUSES, FLOAT_TOLERANCE
from sia_core.services.untrusted import DEFAULT_OUTPUTS


@attrs.frozen(kw_only=True)
class Problem:
    """One thing wrong with a task directory; ``file`` is relative to it (``"."`` = the dir)."""

    file: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}: {self.message}"


@attrs.frozen(kw_only=True)
class DevFromTrain:
    """How a dev split is carved from train when the task ships no dev file."""

    fraction: float = 0.1
    seed: int = 0
    stratify: bool = True


@attrs.frozen(kw_only=True)
class TaskConfig:
    """A task's settings: ``task.toml`` where there is one, defaults otherwise.

    Paths in ``splits``, ``labels`` and ``evaluate`` are relative to the task directory and are
    the ones actually used (defaults filled in). ``dev_from_train`` is set only when dev is
    carved from train.
    """

    name: str
    description: str = ""
    metric: str = "accuracy"
    direction: str = "maximize"
    answer_type: str = "text"
    scorer: str = "exact"  # "exact" | "numeric" | "path.py:function" | the evaluate.py path
    kind: str = "per_item"  # "per_item" | "program"
    item_timeout_s: float = 120.0
    parallel: int = 2
    eval_timeout_s: float = 600.0
    tolerance: float = FLOAT_TOLERANCE  # for the "numeric" scorer
    allow_shared_inputs: bool = False
    splits: dict[str, str] = attrs.field(factory=dict)
    labels: dict[str, str] = attrs.field(factory=dict)
    id_field: str = "id"
    input_fields: tuple[str, ...] = ("input",)
    label_field: str = "label"
    dev_from_train: DevFromTrain | None = None
    evaluate: str = ""  # program kind: the evaluate.py path
    program_dev_fraction: float = 0.5
    program_seed: int = 0
    pass_statuses: tuple[str, ...] = DEFAULT_PASS_STATUSES
    #: the output contract: which files of the program's work dir evaluate.py is shown
    outputs: tuple[str, ...] = DEFAULT_OUTPUTS
    max_output_mb: float = 64.0  # per output file; 4x that in all
    #: canary items (``[canary]``): per-run random labels that flag reward hacking
    canary: CanarySpec | None = None
    from_toml: bool = False


@attrs.frozen(kw_only=True)
class _Row:
    id: str
    input: Any
    label: Any = None
