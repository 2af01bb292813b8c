"""The settings of a run, in one place.

Each :class:`RunConfig` field carries its command-line flag, help text and, for a run cap, what
the cap counts (:class:`Flag`). The CLI options, ``run.json``, ``sia resume``'s cap options and
the ledger's cap checks are all made from these fields, so a new setting is one field here.
"""

from __future__ import annotations

from typing import Any

import attrs

from sia_core.contracts.records import to_dict

#: key of a field's :class:`Flag` in ``attrs.field(metadata=...)``
FLAG = "sia.flag"


@attrs.frozen(kw_only=True)
class Flag:
    """How a setting appears on the command line.

    ``names``: the flags (the first is the one messages name). ``cli_default``: what the option
    gives when absent; ``None`` keeps the stored value on a re-run (else the field's default).
    ``choices``: allowed values. ``minimum``/``min_open``: a number's lower bound.
    ``pairs``: a repeatable ``KEY=VALUE`` option gathered into a dict (``json_values``: values
    parsed as JSON where they parse). ``cap``: the name of a run cap (as in ``run.json``'s
    ``caps``) and ``counts`` the run total it is checked against: checked before each spending
    step, and ``sia resume`` may raise it.
    """

    names: tuple[str, ...]
    help: str = ""
    cli_default: Any = None
    choices: tuple[str, ...] = ()
    minimum: float | None = None
    min_open: bool = False
    pairs: bool = False
    json_values: bool = False
    metavar: str | None = None
    cap: str | None = None
    counts: str | None = None


def setting(default: Any = attrs.NOTHING, *, factory: Any = None, **flag: Any) -> Any:
    """An ``attrs`` field with its :class:`Flag` (see the module docstring)."""
    meta = {FLAG: Flag(**flag)}
    if factory is not None:
        return attrs.field(factory=factory, metadata=meta)
    return attrs.field(default=default, metadata=meta)


@attrs.frozen(kw_only=True)
class RunConfig:
    """Everything that defines a run; stored in ``run.json`` and reused by ``sia resume``."""

    task: str = setting(names=("--task",), help="Task name (see `sia tasks`).")
    task_dir: str = setting(
        names=("--task_dir", "--task-dir"), help="A task directory (SIA layout or task.toml)."
    )
    max_gen: int = setting(
        3, names=("--max_gen", "--max-gen"), minimum=1, help="Generations to run (default 3)."
    )
    backend: str = setting(
        "scripted",
        names=("--backend",),
        cli_default="auto",
        help="LLM backend (see `sia plugins`); auto picks a configured provider.",
    )
    backend_settings: dict[str, Any] = setting(  # noqa: RUF009 (an attrs field)
        factory=dict,
        names=("--backend-opt",),
        pairs=True,
        metavar="KEY=VALUE",
        help="Backend setting, e.g. script=PATH for the scripted backend.",
    )
    meta_model: str | None = setting(
        None, names=("--meta_model", "--meta-model"), help="Model of the Meta/Feedback roles."
    )
    task_model: str | None = setting(
        None, names=("--task_model", "--task-model"), help="Model the scaffold calls."
    )
    lever: str = setting(
        "auto",
        names=("--lever",),
        cli_default="auto",
        choices=("auto", "harness", "weights"),
        help="Force a lever instead of the Feedback-Agent's choice.",
    )
    rl_algorithm: str = setting(
        "auto",
        names=("--rl-algorithm", "--rl_algorithm"),
        cli_default="auto",
        help="RL objective for weight updates, or auto.",
    )
    sandbox: str = setting(
        "process",
        names=("--sandbox",),
        cli_default="auto",
        help="Where scaffold code runs (see `sia plugins`).",
    )
    runner: str = setting(
        "local",
        names=("--runner",),
        cli_default="local",
        help="Where items run: local worker pool, or e.g. ray (see `sia plugins`).",
    )
    runner_settings: dict[str, Any] = setting(  # noqa: RUF009 (an attrs field)
        factory=dict,
        names=("--runner-opt",),
        pairs=True,
        json_values=True,
        metavar="KEY=VALUE",
        help="Runner setting, e.g. address=HOST:PORT for ray.",
    )
    seed: int = setting(0, names=("--seed",), cli_default=0, help="Random seed of the run.")
    gate_margin: float | None = setting(
        None,
        names=("--gate-margin",),
        help="Dev-score margin a generation needs to replace the incumbent (default: its paired "
        "per-item gain must beat a noise bar, 1.645 x SE).",
    )
    parallel: int | None = setting(
        None,
        names=("--parallel",),
        minimum=1,
        help="Items solved in parallel (default: the task's).",
    )
    item_timeout_s: float | None = setting(
        None,
        names=("--item-timeout",),
        minimum=0,
        min_open=True,
        help="Seconds per item (default: the task's).",
    )
    max_calls_per_gen: int | None = setting(
        None,
        names=("--max-calls-per-gen",),
        minimum=1,
        help="Cap on task-model calls per generation.",
    )
    max_tokens_per_gen: int | None = setting(
        None,
        names=("--max-tokens-per-gen",),
        minimum=1,
        help="Cap on task-model tokens per generation.",
    )
    max_usd: float | None = setting(
        None,
        names=("--max-usd",),
        minimum=0,
        min_open=True,
        cap="max_usd",
        counts="cost_usd",
        help="Stop once the run has cost this many US dollars (LLM calls, priced).",
    )
    max_run_tokens: int | None = setting(
        None,
        names=("--max-tokens", "--max-run-tokens"),
        minimum=1,
        cap="max_tokens",
        counts="tokens",
        help="Stop once the run's LLM calls used this many tokens.",
    )
    max_train_seconds: float | None = setting(
        None,
        names=("--max-train-seconds",),
        minimum=0,
        min_open=True,
        cap="max_train_seconds",
        counts="train_device_seconds",
        help="Stop once training jobs used this many device-seconds.",
    )
    test_eval: str = setting(
        "final",
        names=("--test-eval",),
        cli_default="final",
        choices=("final", "every", "none"),
        help="When to score the sealed test split: after the run (first and best generation), "
        "every generation, or never. Report only; no decision reads it.",
    )
    executor: str = setting(
        "auto",
        names=("--executor",),
        cli_default="auto",
        help="Where weight training runs (see `sia plugins`).",
    )
    train_settings: dict[str, Any] = setting(  # noqa: RUF009 (an attrs field)
        factory=dict,
        names=("--train-opt",),
        pairs=True,
        json_values=True,
        metavar="KEY=VALUE",
        help="Training setting, e.g. steps=20, group_size=8, learning_rate=4e-5.",
    )

    def identity(self) -> dict[str, Any]:
        """The fields a re-run of the same command must match (``max_gen`` and caps may change)."""
        d = to_dict(self)
        for name in ("max_gen", *CAP_FIELDS):
            d.pop(name)
        return d

    @classmethod
    def from_run_json(cls, run_json: dict[str, Any]) -> RunConfig:
        """The config stored in a ``run.json`` (keys this version does not know are dropped)."""
        names = {f.name for f in attrs.fields(cls)}
        return cls(**{k: v for k, v in run_json["config"].items() if k in names})


def settings() -> list[tuple[attrs.Attribute[Any], Flag]]:
    """Every :class:`RunConfig` field with its :class:`Flag`, in declaration order."""
    return [(f, f.metadata[FLAG]) for f in attrs.fields(RunConfig) if FLAG in f.metadata]


@attrs.frozen
class Cap:
    """A run cap: its name in ``run.json``, the RunConfig field, the flag, the total it counts."""

    name: str
    field: str
    flag: str
    counts: str


#: the run caps, made from the fields whose Flag names a cap
CAPS: tuple[Cap, ...] = tuple(
    Cap(flag.cap, f.name, flag.names[0], flag.counts or "")
    for f, flag in settings()
    if flag.cap is not None
)
#: RunConfig fields that are run caps: a resume may raise them
CAP_FIELDS: tuple[str, ...] = tuple(c.field for c in CAPS)
