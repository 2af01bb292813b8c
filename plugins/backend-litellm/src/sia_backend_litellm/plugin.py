"""Entry point of sia-backend-litellm: registers the ``litellm`` backend (imports nothing heavy)."""

from __future__ import annotations

from collections.abc import Iterator

from sia_core import hookimpl
from sia_core.contracts.records import BackendSpec


@hookimpl
def sia_backends() -> Iterator[BackendSpec]:
    yield BackendSpec(
        name="litellm",
        factory="sia_backend_litellm.backend:LiteLLMBackend",
        description=(
            "any litellm model (provider or local OpenAI-compatible server) as Meta/Feedback "
            "agent (--meta_model) and task model (--task_model)"
        ),
        auto_priority=-10,  # key-less: never preferred over the offline default by `auto`
    )
