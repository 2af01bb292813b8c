"""Hook specifications: the contract between sia and its plugins.

A plugin is a module (found through the ``sia`` entry-point group) with functions named after
these hooks and marked with :data:`sia_core.hookimpl`. Registry hooks yield frozen records from
:mod:`sia_core.contracts.records`; sia collects them from every plugin, sorts them by name and refuses two
records with the same name. Call hooks with keyword arguments only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

from sia_core import PROJECT
from sia_core.contracts.events import catalogue_doc
from sia_core.contracts.records import (
    AlgorithmSpec,
    BackendSpec,
    Event,
    ExecutorSpec,
    RunnerSpec,
    SandboxSpec,
    TaskSpec,
)

if TYPE_CHECKING:
    from collections.abc import Iterable

    import click

hookspec = pluggy.HookspecMarker(PROJECT)

# -------------------------------------------------------------------------------------------
# Registries: collect-all; duplicate names are an error naming both plugins
# -------------------------------------------------------------------------------------------


@hookspec
def sia_backends() -> Iterable[BackendSpec]:
    """Yield LLM backends selectable with ``--backend NAME``.

    A backend fills the Meta-Agent and Feedback-Agent roles and/or serves the task model the
    scaffold calls through the gateway. ``BackendSpec.factory`` is an import string, resolved only
    when the backend is used, so listing plugins never imports an SDK.

    **Example:**

    .. code-block:: python

        @hookimpl
        def sia_backends():
            yield BackendSpec(name="claude", factory="sia_backend_claude.backend:ClaudeBackend",
                              key_env_vars=("ANTHROPIC_API_KEY",))
    """


@hookspec
def sia_sandboxes() -> Iterable[SandboxSpec]:
    """Yield sandboxes selectable with ``--sandbox NAME``, where scaffold code runs.

    With ``--sandbox auto`` the available sandbox with the highest ``auto_priority`` is used,
    and the run header says which one and why.

    **Example:**

    .. code-block:: python

        @hookimpl
        def sia_sandboxes():
            yield SandboxSpec(name="bwrap", factory="sia_sandbox_bwrap:BwrapSandbox",
                              isolation="namespaces; public data read-only; no network",
                              auto_priority=10)
    """


@hookspec
def sia_rl_algorithms() -> Iterable[AlgorithmSpec]:
    """Yield RL objectives for weight updates, selectable with ``--rl-algorithm NAME``.

    ``AlgorithmSpec.fit`` names a function scoring how well the objective suits a
    :class:`~sia_core.contracts.records.RewardStats`; ``--rl-algorithm auto`` takes the best fit and writes
    every candidate's fit into ``decision.json``. ``AlgorithmSpec.trainer`` is imported in a fresh
    worker process (local or remote), never in the orchestrator.
    """


@hookspec
def sia_executors() -> Iterable[ExecutorSpec]:
    """Yield places where training jobs run (``local`` subprocess worker, ``modal``, ...)."""


@hookspec
def sia_runners() -> Iterable[RunnerSpec]:
    """Yield places where a per-item scaffold's items run, selectable with ``--runner NAME``.

    The core's ``local`` runner is a pool of sandboxed workers on this machine; a runner may
    spread items over other hosts (``ray``), each item still in the run's sandbox there.
    """


@hookspec
def sia_tasks() -> Iterable[TaskSpec]:
    """Yield tasks selectable with ``sia --task NAME``.

    ``TaskSpec.path`` is the task directory, usually inside the plugin's own package
    (``str(importlib.resources.files(__package__) / "task")``).
    """


# -------------------------------------------------------------------------------------------
# Observation and CLI
# -------------------------------------------------------------------------------------------


@hookspec
def sia_on_event(event: Event) -> None:
    """Observe a run: progress display, report, trackers.

    Called once per event, each implementation on its own; an exception in one observer is
    logged with the plugin's name and never stops the run or the other observers. Observers must
    not change the run.

    The event types and their payloads come from the catalogue in
    :mod:`sia_core.contracts.events` (listed below when the docstring is read at run time, e.g.
    with ``help()``):

    {catalogue}
    :param event: the :class:`~sia_core.contracts.records.Event` (type, run id, sequence number, ``gen``,
        ``data``, timestamp).
    """


@hookspec
def sia_register_commands(cli: click.Group) -> None:
    """Add ``sia <command>`` subcommands. Import heavy modules inside the command body.

    Called the first time ``sia`` meets a command name it does not know, so these commands are
    not listed by ``sia --help``; prefer a ``sia.commands`` entry point naming a click command,
    which ``sia --help`` lists without importing the plugin (docs/plugins.md).

    :param cli: the top-level click group; call ``cli.add_command(...)``.
    """


# the event list of sia_on_event's docstring, from the catalogue (one source)
sia_on_event.__doc__ = (sia_on_event.__doc__ or "").replace("    {catalogue}\n", catalogue_doc())
