"""Frozen value records that cross plugin boundaries.

Everything a plugin yields, receives or writes into a run is one of these classes. They are
``attrs`` frozen, keyword-only, hold tuples instead of lists, and round-trip through JSON with
:func:`to_json` / :func:`from_json` (cattrs does the structuring).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from typing import Any, Literal, TypeVar

import attrs
import cattrs

T = TypeVar("T")

Lever = Literal["harness", "weights", "both", "stop"]
LEVERS: tuple[str, ...] = ("harness", "weights", "both", "stop")
Direction = Literal["maximize", "minimize"]
Split = Literal["train", "dev", "test"]
ItemStatus = Literal["ok", "error", "timeout", "skipped"]


def _tuple(value: Any) -> tuple[Any, ...]:
    return tuple(value) if value is not None else ()


# --------------------------------------------------------------------------------------------
# Registry records: what plugins yield from the sia_* registry hooks
# --------------------------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class BackendSpec:
    """An LLM backend: Meta/Feedback roles and/or a task model.

    ``factory`` is an import string ``"pkg.module:callable"`` resolved lazily; calling it with a
    :class:`~sia_core.contracts.backend.BackendOptions` returns an object following
    :class:`~sia_core.contracts.backend.Backend`.
    """

    name: str
    factory: str
    description: str = ""
    roles: tuple[str, ...] = attrs.field(
        default=("meta", "feedback", "task_model"), converter=_tuple
    )
    key_env_vars: tuple[str, ...] = attrs.field(default=(), converter=_tuple)
    auto_priority: int = 0  # higher wins in ``--backend auto`` when its key is configured


@attrs.frozen(kw_only=True)
class SandboxSpec:
    """Where scaffold code runs. ``factory`` returns a :class:`~sia_core.contracts.sandbox.Sandbox`."""

    name: str
    factory: str
    description: str = ""
    isolation: str = ""  # one line: what it isolates, shown by ``sia plugins`` and the run header
    auto_priority: int = 0  # the highest-priority *available* sandbox is the default


def _names(names: Iterable[str]) -> tuple[str, ...]:
    return tuple(str(n) for n in names)


@attrs.frozen(kw_only=True)
class AlgorithmSpec:
    """An RL objective for weight updates.

    ``fit`` is an import string to ``fit(stats: RewardStats) -> AlgorithmFit``; ``trainer`` an
    import string the training worker calls in a fresh process. ``settings`` names the
    ``--train-opt`` keys the objective reads (a mapping under its ``name`` is accepted too).
    """

    name: str
    fit: str
    trainer: str
    description: str = ""
    settings: tuple[str, ...] = attrs.field(default=(), converter=_names)


@attrs.frozen(kw_only=True)
class ExecutorSpec:
    """Where training jobs run. ``factory`` returns an executor object. ``settings`` names the
    ``--train-opt`` keys its worker reads beyond ``DEFAULT_TRAIN_SETTINGS``; when every
    executor declares them, an unknown ``--train-opt`` key is refused before the run starts."""

    name: str
    factory: str
    description: str = ""
    settings: tuple[str, ...] = attrs.field(default=(), converter=_names)


@attrs.frozen(kw_only=True)
class RunnerSpec:
    """Where a per-item scaffold's items run (``--runner NAME``). ``factory(RunnerOptions)``
    returns an :class:`~sia_core.services.runner.spec.ItemRunner`; ``settings`` names the
    ``--runner-opt`` keys it reads (any other key is refused before the run starts)."""

    name: str
    factory: str
    description: str = ""
    settings: tuple[str, ...] = attrs.field(default=(), converter=_names)


@attrs.frozen(kw_only=True)
class TaskSpec:
    """A task shipped by a package: a name and the task directory inside that package."""

    name: str
    path: str
    description: str = ""


# --------------------------------------------------------------------------------------------
# Task items, scaffold results and model calls
# --------------------------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class Item:
    """One task instance as the scaffold sees it (never carries a private label)."""

    id: str
    input: Any
    split: str = "dev"


@attrs.frozen(kw_only=True)
class TrajectoryStep:
    """One step a scaffold logged while solving an item (``ctx.log``), or one LLM call."""

    kind: str  # "llm_call" | "tool" | "note" | "answer" | ...
    content: Any = None
    t: float = 0.0  # seconds since the item started


@attrs.frozen(kw_only=True)
class ItemResult:
    """What happened to one item in one scaffold run."""

    item_id: str
    split: str
    status: str = "ok"  # ItemStatus
    answer: Any = None
    error: str = ""
    seconds: float = 0.0
    trajectory: tuple[TrajectoryStep, ...] = attrs.field(default=(), converter=_tuple)
    #: limits the item ran into (output cut from the log, work dir over its size), one line each
    limits_hit: tuple[str, ...] = attrs.field(default=(), converter=_tuple)
    node: str = ""  # the host it ran on, for a runner that spreads items over hosts
    #: why it was run again elsewhere (a lost node), one line per re-run
    reruns: tuple[str, ...] = attrs.field(default=(), converter=_tuple)


@attrs.frozen(kw_only=True)
class ModelCall:
    """One call through the model gateway, as recorded in ``agent_execution.json``."""

    call_id: int
    item_id: str | None
    model: str
    request: dict[str, Any]
    completion: str | None
    status: str = "ok"  # "ok" | "error" | "over_budget" | "refused" (forged X-Sia-Item)
    error: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float = 0.0
    cost_usd: float = 0.0
    adapter: str | None = None
    started_at: float = 0.0


@attrs.frozen(kw_only=True)
class ScoreResult:
    """A split's score. ``score`` divides by *all* items of the split."""

    split: str
    score: float
    n_items: int
    n_answered: int
    per_item: dict[str, float] = attrs.field(factory=dict)
    extra: dict[str, Any] = attrs.field(factory=dict)  # e.g. macro-F1, per-domain breakdown


@attrs.frozen(kw_only=True)
class RewardStats:
    """The shape of the reward, from which an RL objective is chosen (paper §7.3)."""

    n_rewards: int = 0
    mean: float = 0.0
    std: float = 0.0
    skew: float = 0.0
    zero_variance_group_share: float = 0.0
    step_reward_density: float = 0.0  # share of trajectory steps that carry a reward
    binary: bool = True
    rollout_cost_s: float = 0.0


@attrs.frozen(kw_only=True)
class AlgorithmFit:
    """How well an RL objective fits a :class:`RewardStats`: higher ``score`` fits better."""

    name: str
    score: float
    reason: str


# --------------------------------------------------------------------------------------------
# Decisions, generations and metrics
# --------------------------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class Decision:
    """How the next generation is made: which lever, from which parent, and why."""

    lever: str  # Lever
    rationale: str
    parent_gen: int | None = None
    source: str = "feedback"  # "meta" | "feedback" | "override" | "core"
    rl_algorithm: str | None = None
    algorithm_fits: tuple[AlgorithmFit, ...] = attrs.field(default=(), converter=_tuple)
    reward_stats: RewardStats | None = None
    proposed_lever: str | None = None  # what the agent asked for, if the core changed it
    notes: tuple[str, ...] = attrs.field(default=(), converter=_tuple)


@attrs.frozen(kw_only=True)
class Metrics:
    """A generation's scores. ``test`` is recorded for the report only; no decision reads it."""

    gen: int
    dev: ScoreResult
    test: ScoreResult | None = None
    n_errors: int = 0
    n_timeouts: int = 0
    seconds: float = 0.0
    llm_calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    #: why this generation's score does not count (e.g. it changed the task's files); the gate
    #: refuses a voided generation
    voided: str = ""


@attrs.frozen(kw_only=True)
class GenerationNode:
    """A node of the archive: one (scaffold, adapter) pair and how it did."""

    gen: int
    parent_gen: int | None
    lever: str
    scaffold_sha256: str
    adapter: str | None = None
    rl_algorithm: str | None = None
    dev_score: float | None = None
    test_score: float | None = None
    status: str = "done"  # "done" | "failed"
    incumbent: bool = False


@attrs.frozen(kw_only=True)
class TrainJob:
    """One weight update, as handed to an executor: primitives and paths only, so it crosses
    process and machine boundaries (a local worker, a Modal container) as JSON."""

    job_id: str
    algorithm: str
    trainer: str  # import string from the AlgorithmSpec, imported by the worker
    task_dir: str
    scaffold: str  # the frozen scaffold the rollouts run
    base_model: str  # the task model's weights (a GGUF file, an HF folder or an HF id)
    out_dir: str
    init_adapter: str | None = None  # the parent generation's adapter, trained further
    seed: int = 0
    settings: dict[str, Any] = attrs.field(factory=dict)
    #: the run's sandbox plugin: the rollouts run the scaffold in it where the worker has it
    sandbox: str = "process"


@attrs.frozen(kw_only=True)
class TrainResult:
    """What a training job produced. A failed job is a failed step, never a dead run."""

    status: str  # "ok" | "failed"
    adapter: str | None = None  # folder of the trained adapter
    log: str | None = None
    metrics: dict[str, Any] = attrs.field(factory=dict)  # reward before/after, steps, seconds
    error: str = ""


@attrs.frozen(kw_only=True)
class Event:
    """One line of ``events.jsonl``, also passed to ``sia_on_event`` observers."""

    type: str
    run_id: str
    seq: int = 0
    gen: int | None = None
    data: dict[str, Any] = attrs.field(factory=dict)
    ts: float = attrs.field(factory=time.time)


# --------------------------------------------------------------------------------------------
# JSON round-trip
# --------------------------------------------------------------------------------------------

converter = cattrs.Converter()


def to_dict(record: Any) -> Any:
    """Unstructure a record (or a list/dict of records) into JSON-ready data."""
    return converter.unstructure(record)


def from_dict(cls: type[T], data: Any) -> T:
    """Structure JSON data into ``cls``."""
    return converter.structure(data, cls)


def to_json(record: Any, **kwargs: Any) -> str:
    return json.dumps(to_dict(record), ensure_ascii=False, **kwargs)


def from_json(cls: type[T], text: str) -> T:
    return from_dict(cls, json.loads(text))
