"""sia-core's own plugin: the scripted backend, the process sandbox, the local runner and the
tiny demo task.

Registered before entry points, exactly like any other plugin module.
"""

from __future__ import annotations

from collections.abc import Iterator
from importlib import resources

from sia_core import hookimpl
from sia_core.contracts.records import BackendSpec, RunnerSpec, SandboxSpec, TaskSpec


@hookimpl
def sia_backends() -> Iterator[BackendSpec]:
    yield BackendSpec(
        name="scripted",
        factory="sia_core.surface.builtin.scripted:ScriptedBackend",
        description="deterministic: replays canned scaffolds and decisions from a script (tests)",
        auto_priority=-100,
    )


@hookimpl
def sia_sandboxes() -> Iterator[SandboxSpec]:
    yield SandboxSpec(
        name="process",
        factory="sia_core.services.process_sandbox:make_process_sandbox",
        description="own session, rlimits, wall-clock kill of the whole tree",
        isolation="own session + rlimits + wall-clock kill; NO file-system or network isolation",
        auto_priority=0,
    )


@hookimpl
def sia_runners() -> Iterator[RunnerSpec]:
    yield RunnerSpec(
        name="local",
        factory="sia_core.services.runner.items:LocalRunner",
        description="a pool of --parallel sandboxed workers on this machine",
    )


@hookimpl
def sia_tasks() -> Iterator[TaskSpec]:
    yield TaskSpec(
        name="tiny-add",
        path=str(resources.files("sia_core.testing") / "tiny_task"),
        description="tiny two-number addition task for tests and demos",
    )
