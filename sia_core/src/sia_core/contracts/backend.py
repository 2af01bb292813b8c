"""The interface backends fill: the Meta and Feedback roles, and the task model.

A backend plugin yields a :class:`~sia_core.contracts.records.BackendSpec` whose ``factory`` returns an
object with the methods of :class:`Backend`. The core calls ``meta`` once (generation 1),
``feedback`` after every scored generation, and ``task_model`` to learn where the model gateway
should send the scaffold's LLM calls.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import attrs

from sia_core.contracts.errors import SiaError
from sia_core.contracts.records import Decision, _tuple


@attrs.frozen(kw_only=True)
class BackendOptions:
    """What the run asks of a backend (from the CLI)."""

    meta_model: str | None = None
    task_model: str | None = None
    seed: int = 0
    run_dir: str | None = None
    settings: dict[str, Any] = attrs.field(factory=dict)  # backend-specific, e.g. a script path

    def known_settings(self, backend: str, known: Iterable[str]) -> dict[str, Any]:
        """A copy of ``settings``; a key not in ``known`` is one line listing the known ones."""
        known = sorted(known)
        unknown = sorted(set(self.settings) - set(known))
        if unknown:
            raise SiaError(
                f"unknown --backend-opt for the {backend} backend: {', '.join(unknown)}; "
                f"known: {', '.join(known)}"
            )
        return dict(self.settings)

    def flag(self, key: str, default: bool) -> bool:
        """The on/off setting ``key`` (``1``/``0``, ``true``/``false``, ``yes``/``no``,
        ``on``/``off``; ``default`` when unset); any other value is one line."""
        value = self.settings.get(key, default)
        text = str(value).strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off"):
            return False
        raise SiaError(f"--backend-opt {key}={value!r}: use 1 or 0 (true/false, yes/no, on/off)")


#: ``try_scaffold(code, n_items)`` runs a candidate scaffold on the first ``n_items`` PUBLIC train
#: items in the run's sandbox, through the gateway, and returns ``{"score", "n_items", "items":
#: [{"id", "input", "answer", "label", "score", "status", "error"}], "usage"}`` (train labels
#: are public). The loop supplies it; agents use it to check a scaffold before committing to it.
TryScaffold = Callable[[str, int], dict[str, Any]]


@attrs.frozen(kw_only=True)
class MetaRequest:
    """Inputs of the Meta-Agent (generation 1)."""

    gen: int
    gen_dir: Path
    task_name: str
    task_md: str
    reference_scaffold: str
    sample_task_descriptions: str = ""
    public_dir: Path | None = None  # the task's data/public (agent-readable)
    try_scaffold: TryScaffold | None = attrs.field(default=None, eq=False, repr=False)


@attrs.frozen(kw_only=True)
class FeedbackRequest:
    """Inputs of the Feedback-Agent. Dev metrics only: no test score ever reaches a decision.

    ``weights_blockers`` says why the weights lever cannot be pulled (empty when it can).
    ``parent_gen_dir`` holds the parent's ``target_agent.py``, ``agent_execution.json`` (its full
    trajectories) and ``metrics_dev.json``. ``next_gen`` is the generation being made.
    """

    next_gen: int
    next_gen_dir: Path
    parent_gen: int
    parent_gen_dir: Path
    parent_scaffold: str
    dev_metrics: dict[str, Any]
    context_md: str
    task_md: str
    task_name: str
    history: tuple[dict[str, Any], ...] = attrs.field(default=(), converter=_tuple)  # dev only
    trainable_task_model: bool = False
    weights_blockers: tuple[str, ...] = attrs.field(default=(), converter=_tuple)  # empty: possible
    lever_override: str | None = None
    seed: int = 0
    direction: str = "maximize"  # of the task's metric
    run_dir: Path | None = None  # the run folder (default: the parent generation's parent)
    public_dir: Path | None = None  # the task's data/public (agent-readable)
    try_scaffold: TryScaffold | None = attrs.field(default=None, eq=False, repr=False)


@attrs.frozen(kw_only=True)
class AgentOutcome:
    """What a Meta/Feedback step produced.

    ``scaffold`` is the full text of the next ``target_agent.py`` (``None`` keeps the parent's).
    ``transcript`` is every turn, tool call and result of the agent, saved in the generation folder.
    """

    decision: Decision
    improvement_md: str
    scaffold: str | None = None
    transcript: tuple[dict[str, Any], ...] = attrs.field(default=(), converter=_tuple)
    usage: dict[str, Any] = attrs.field(factory=dict)  # tokens / cost of the role's own calls


class TaskModel:
    """Base of every task model: where the gateway sends the scaffold's LLM calls.

    Subclass it, implement :meth:`chat`, and declare what the model can do by setting these
    attributes (on the class, or per instance in ``__init__``), as ``llm``'s models declare
    theirs. The core reads them and nothing else: no probing, no plugin names.

    ``chat`` takes an OpenAI ``chat.completions`` request body and returns an OpenAI response
    body (``choices[0].message.content``, ``usage``). It may raise; the gateway records the error.
    """

    #: the model's name, as recorded with each call and priced (``SIA_MODEL_PRICES``)
    name: str = "task-model"
    #: its weights can be updated with LoRA: the weights lever is offered. A trainable model
    #: sets ``base_model`` and implements :meth:`with_adapter`.
    trainable: bool = False
    #: it costs nothing (runs locally, or is scripted): the run never looks a price up for it
    free: bool = False
    #: what a weight update trains: a Hugging Face id or a local path ("" when not trainable)
    base_model: str = ""
    #: the LoRA adapter it serves now (None: the base weights)
    adapter: str | None = None

    def chat(self, body: dict[str, Any]) -> dict[str, Any]:
        """Answer one OpenAI ``chat.completions`` request body."""
        raise NotImplementedError

    def start(self) -> None:
        """Bring the model up before the run's first call (e.g. start its server), so a model
        that cannot start fails the run at once. The default does nothing."""

    def with_adapter(self, adapter: str | None) -> TaskModel:
        """The same model serving base + ``adapter`` (None: the base weights); trainable
        models implement it."""
        raise NotImplementedError(f"task model {self.name!r} is not trainable")


@runtime_checkable
class Backend(Protocol):
    """A backend object, as returned by a ``BackendSpec.factory``."""

    name: str

    def meta(self, request: MetaRequest) -> AgentOutcome:
        """Write generation 1's scaffold from the task and its reference scaffold."""
        ...

    def feedback(self, request: FeedbackRequest) -> AgentOutcome:
        """Read the parent generation and decide how the next one is made."""
        ...

    def task_model(self) -> TaskModel:
        """The task model the scaffold calls through the gateway."""
        ...

    def close(self) -> None:
        """Release servers, clients and files. Called once, also after a failure."""
        ...
