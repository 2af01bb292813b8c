"""Entry point of sia-backend-claude: registers the ``claude`` backend (imports nothing heavy)."""

from __future__ import annotations

from collections.abc import Iterator

from sia_core import hookimpl
from sia_core.contracts.records import BackendSpec


@hookimpl
def sia_backends() -> Iterator[BackendSpec]:
    yield BackendSpec(
        name="claude",
        factory="sia_backend_claude.backend:ClaudeBackend",
        description=(
            "Anthropic Claude (anthropic SDK): tool-using Meta/Feedback agents "
            "(--meta_model, default haiku) and Claude as task model (--task_model)"
        ),
        key_env_vars=("ANTHROPIC_API_KEY",),
        auto_priority=50,
    )
