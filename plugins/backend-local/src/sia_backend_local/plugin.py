"""Entry point of sia-backend-local: registers the ``local`` backend (imports nothing heavy)."""

from __future__ import annotations

from collections.abc import Iterator

from sia_core import hookimpl
from sia_core.contracts.records import BackendSpec


@hookimpl
def sia_backends() -> Iterator[BackendSpec]:
    yield BackendSpec(
        name="local",
        factory="sia_backend_local.backend:LocalBackend",
        description=(
            "offline: SmolLM2-135M-Instruct on llama.cpp (loopback); reference scaffold as "
            "gen 1, rule-based lever policy + parameter search as Feedback-Agent"
        ),
        auto_priority=10,
    )
