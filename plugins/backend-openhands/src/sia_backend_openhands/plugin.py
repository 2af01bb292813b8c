"""Entry point of sia-backend-openhands: registers the ``openhands`` backend (imports nothing
heavy: ``openhands`` and ``litellm`` are imported when a role runs)."""

from __future__ import annotations

from collections.abc import Iterator

from sia_core import hookimpl
from sia_core.contracts.records import BackendSpec


@hookimpl
def sia_backends() -> Iterator[BackendSpec]:
    yield BackendSpec(
        name="openhands",
        factory="sia_backend_openhands.backend:OpenHandsBackend",
        description=(
            "Meta/Feedback roles as an OpenHands agent (openhands-sdk; Python >= 3.12); its LLM "
            "is a litellm model string (default: local SmolLM2 on llama.cpp); task model: local"
        ),
    )
