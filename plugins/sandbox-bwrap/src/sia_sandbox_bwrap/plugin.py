"""Registers the ``bwrap`` sandbox; imports only sia_core and the standard library."""

from __future__ import annotations

from collections.abc import Iterator

from sia_core import hookimpl
from sia_core.contracts.records import SandboxSpec

from . import ISOLATION


@hookimpl
def sia_sandboxes() -> Iterator[SandboxSpec]:
    yield SandboxSpec(
        name="bwrap",
        factory="sia_sandbox_bwrap.sandbox:make_bwrap_sandbox",
        description="bubblewrap: namespaces, allow-listed file system, gateway-only network",
        isolation=ISOLATION,
        auto_priority=10,
    )
