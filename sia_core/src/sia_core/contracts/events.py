"""The event catalogue: every event type a run emits, with its payload as a record.

An :class:`~sia_core.contracts.records.Event`'s ``data`` is the payload record of its type, as
JSON. The loop builds each event through :func:`event_data`, so an event it emits is always one
of these shapes; ``sia_on_event``'s docstring is made from this catalogue. ``LOGGED`` payloads
are written to ``events.jsonl`` (the run's record, read back on resume); the others go to
observers only.
"""

from __future__ import annotations

from typing import Any, ClassVar

import attrs


@attrs.frozen(kw_only=True)
class Payload:
    """Base of the payload records. ``TYPE`` names the event; ``LOGGED``: written to
    ``events.jsonl``; ``OPEN``: the payload may carry more keys than its fields (figures that
    differ from step to step)."""

    TYPE: ClassVar[str] = ""
    LOGGED: ClassVar[bool] = True
    OPEN: ClassVar[bool] = False


@attrs.frozen(kw_only=True)
class RunStarted(Payload):
    """A new run starts: its task, backend, task model (and whether it can be trained),
    sandbox and generations."""

    TYPE = "run_started"
    task: str
    backend: str
    task_model: str
    trainable: bool
    sandbox: str
    max_gen: int


@attrs.frozen(kw_only=True)
class RunResumed(RunStarted):
    """A run starts again after a kill, a cap or ``sia resume`` (same fields as
    ``run_started``)."""

    TYPE = "run_resumed"


@attrs.frozen(kw_only=True)
class GenStarted(Payload):
    """A generation begins (the event's ``gen``)."""

    TYPE = "gen_started"


@attrs.frozen(kw_only=True)
class StepFinished(Payload):
    """A step of a generation ended: ``propose``, ``train``, ``run``, ``score``, ``gate`` or
    ``test``, with its wall seconds and figures (the gate's: ``node``, ``accepted``,
    ``incumbent``, ``reason``, e.g. "voided: suspected reward hacking: ...", and ``rule``: the
    noise bar's figures; a spending step's:
    ``cost``)."""

    TYPE = "step_finished"
    OPEN = True
    step: str
    seconds: float


@attrs.frozen(kw_only=True)
class Warning(Payload):
    """Something the user should know that does not stop the run (a generation was voided:
    ``message`` says why)."""

    TYPE = "warning"
    message: str


@attrs.frozen(kw_only=True)
class GenFinished(Payload):
    """The generation is gated; ``incumbent`` is the incumbent generation now."""

    TYPE = "gen_finished"
    incumbent: int | None


@attrs.frozen(kw_only=True)
class RunStopped(Payload):
    """The run stops early: the Feedback-Agent chose ``stop`` (``reason``), or a run cap was
    reached before ``step`` (``cap``: which, its limit and what was used)."""

    TYPE = "run_stopped"
    reason: str
    step: str | None = None
    cap: dict[str, Any] | None = None


@attrs.frozen(kw_only=True)
class RunFinished(Payload):
    """The run ended: ``status`` (finished, stopped, ...) and the incumbent."""

    TYPE = "run_finished"
    status: str
    incumbent: int | None


@attrs.frozen(kw_only=True)
class RunFailed(Payload):
    """The run ended on an error (``error``: its type and message)."""

    TYPE = "run_failed"
    error: str


@attrs.frozen(kw_only=True)
class RunOpened(Payload):
    """Before ``run_started``/``run_resumed``: the run folder (``run_dir``)."""

    TYPE = "run_opened"
    LOGGED = False
    run_dir: str


@attrs.frozen(kw_only=True)
class CostEstimate(Payload):
    """What the run is expected to cost (``usd``, ``basis``), where the models have prices."""

    TYPE = "cost_estimate"
    LOGGED = False
    OPEN = True


@attrs.frozen(kw_only=True)
class StepStarted(Payload):
    """A step begins (``step``)."""

    TYPE = "step_started"
    LOGGED = False
    step: str


@attrs.frozen(kw_only=True)
class ItemFinished(Payload):
    """One item of the run step is done: its id, split and status, ``done`` of ``total``."""

    TYPE = "item_finished"
    LOGGED = False
    item_id: str
    split: str
    status: str
    done: int
    total: int


@attrs.frozen(kw_only=True)
class TrainProgress(Payload):
    """A training job's progress line (``event``: ``loaded``, ``step``, ``done``, with its
    figures)."""

    TYPE = "train_progress"
    LOGGED = False
    OPEN = True


#: every event type, in the order a run emits them
CATALOGUE: dict[str, type[Payload]] = {
    p.TYPE: p
    for p in (
        RunOpened,
        CostEstimate,
        RunStarted,
        RunResumed,
        GenStarted,
        StepStarted,
        ItemFinished,
        TrainProgress,
        StepFinished,
        Warning,
        GenFinished,
        RunStopped,
        RunFinished,
        RunFailed,
    )
}


def event_data(type: str, data: dict[str, Any], *, logged: bool) -> dict[str, Any]:
    """``data`` checked against the payload record of ``type``: an unknown type, one logged
    where it should not be (or the other way), a missing field or (for a closed payload) an
    unknown key raises ``ValueError``."""
    payload = CATALOGUE.get(type)
    if payload is None:
        raise ValueError(f"unknown event type {type!r}; known: {', '.join(CATALOGUE)}")
    if logged != payload.LOGGED:
        where = "events.jsonl" if payload.LOGGED else "observers only"
        raise ValueError(f"event {type!r} goes to {where}")
    names = {f.name for f in attrs.fields(payload)}
    extra = set(data) - names
    if extra and not payload.OPEN:
        raise ValueError(f"event {type!r} has no field(s) {', '.join(sorted(extra))}")
    try:
        payload(**{k: v for k, v in data.items() if k in names})
    except TypeError as exc:
        raise ValueError(f"event {type!r}: {exc}") from None
    return data


def catalogue_doc() -> str:
    """The catalogue as reStructuredText bullets (for ``sia_on_event``'s docstring)."""

    def bullets(logged: bool) -> str:
        out = []
        for name, payload in CATALOGUE.items():
            if logged != payload.LOGGED:
                continue
            fields = ", ".join(f"``{f.name}``" for f in attrs.fields(payload))
            doc = " ".join((payload.__doc__ or "").split())
            out.append(f"    - ``{name}`` ({fields or 'no fields'}): {doc}")
        return "\n".join(out)

    return (
        "    Written to ``events.jsonl`` (the run's record, read back on resume):\n\n"
        f"{bullets(True)}\n\n    Observers only (never in ``events.jsonl``):\n\n{bullets(False)}\n\n"
    )
