"""The ``claude`` backend: Meta/Feedback agents and the task model on Anthropic's Messages API.

- Roles: :func:`sia_core.services.agents.meta_step` /
  :func:`~sia_core.services.agents.feedback_step` over a
  :class:`~sia_backend_claude.adapter.ClaudeAdapter` (tool use, streamed replies, prompt caching
  on tools, system prompt and the conversation so far, usage and cost per call).
- Task model: :class:`~sia_backend_claude.task_model.ClaudeTaskModel` turns the scaffold's OpenAI
  chat requests into Messages API calls and the replies back (text, tool calls, usage with
  ``cost``).
- Retries: the SDK retries 408/409/429/5xx/529 answers with exponential backoff (honouring
  ``retry-after``), ``max_retries`` times; an ``error`` event in the middle of a stream (e.g.
  ``overloaded_error``) or a tool input that is not valid JSON is retried here, ``stream_retries``
  times with the same backoff.

Environment: ``ANTHROPIC_API_KEY`` (or ``ANTHROPIC_AUTH_TOKEN``), ``ANTHROPIC_BASE_URL`` (e.g. a
proxy). Settings (``--backend-opt KEY=VALUE``): ``stream`` (1), ``max_retries`` (4),
``stream_retries`` (3), ``backoff_s`` (1.0), ``timeout_s`` (600), ``cache`` (1), ``base_url``,
``price_input`` / ``price_output`` (USD per million tokens, for a model not in the price table),
``task_max_tokens`` (1024, when a scaffold's call sets none), ``sampling`` (1: forward
``temperature``/``top_p``), and the agent limits of :class:`sia_core.services.agents.AgentLimits` (``max_turns``, ``max_tokens``, ...).
"""

from __future__ import annotations

import os
from typing import Any

import attrs

from sia_core.contracts.backend import AgentOutcome, BackendOptions, FeedbackRequest, MetaRequest
from sia_core.contracts.errors import SiaError
from sia_core.services.agents import AgentLimits, feedback_step, meta_step

from .adapter import ClaudeAdapter
from .models import resolve_model
from .task_model import ClaudeTaskModel

SETTINGS = frozenset(
    {
        "stream",
        "max_retries",
        "stream_retries",
        "backoff_s",
        "timeout_s",
        "cache",
        "base_url",
        "price_input",
        "price_output",
        "task_max_tokens",
        "sampling",
    }
    | {f.name for f in attrs.fields(AgentLimits)}
)


def _num(settings: dict[str, Any], key: str, default: float) -> float:
    try:
        return float(settings.get(key, default))
    except (TypeError, ValueError):
        raise SiaError(f"--backend-opt {key}={settings[key]!r}: expected a number") from None


def make_client(settings: dict[str, Any]) -> Any:
    """An ``anthropic.Anthropic`` client from the environment and the backend settings."""
    if not (os.environ.get("ANTHROPIC_API_KEY") or os.environ.get("ANTHROPIC_AUTH_TOKEN")):
        raise SiaError(
            "the claude backend needs an API key: set ANTHROPIC_API_KEY "
            "(or choose --backend local for the offline default)"
        )
    import anthropic

    kwargs: dict[str, Any] = {
        "max_retries": int(_num(settings, "max_retries", 4)),
        "timeout": _num(settings, "timeout_s", 600.0),
    }
    if settings.get("base_url"):
        kwargs["base_url"] = str(settings["base_url"])
    return anthropic.Anthropic(**kwargs)


def _price(settings: dict[str, Any]) -> tuple[float, float] | None:
    if "price_input" in settings or "price_output" in settings:
        return (_num(settings, "price_input", 0.0), _num(settings, "price_output", 0.0))
    return None


class ClaudeBackend:
    """Claude for the Meta/Feedback roles (``--meta_model``, default ``haiku``) and as task
    model (``--task_model``, default ``haiku``)."""

    name = "claude"

    def __init__(self, options: BackendOptions | None = None) -> None:
        self.options = options or BackendOptions()
        settings = self.options.known_settings("claude", SETTINGS)
        self.settings = settings
        self.limits = AgentLimits.from_settings(settings)
        self.meta_model = resolve_model(self.options.meta_model)
        self.task_model_id = resolve_model(self.options.task_model)
        self.client: Any = make_client(settings)
        self.adapter = ClaudeAdapter(
            self.client,
            self.meta_model,
            stream=self.options.flag("stream", True),
            cache=self.options.flag("cache", True),
            stream_retries=int(_num(settings, "stream_retries", 3)),
            backoff_s=_num(settings, "backoff_s", 1.0),
            price=_price(settings),
        )
        self._task_model: ClaudeTaskModel | None = None

    def meta(self, request: MetaRequest) -> AgentOutcome:
        return meta_step(self.adapter, request, self.limits)

    def feedback(self, request: FeedbackRequest) -> AgentOutcome:
        return feedback_step(self.adapter, request, self.limits)

    def task_model(self) -> ClaudeTaskModel:
        if self._task_model is None:
            self._task_model = ClaudeTaskModel(
                self.client,
                self.task_model_id,
                max_tokens=int(_num(self.settings, "task_max_tokens", 1024)),
                price=_price(self.settings),
                sampling=self.options.flag("sampling", True),
            )
        return self._task_model

    def close(self) -> None:
        client, self.client = self.client, None
        if client is not None:
            client.close()
