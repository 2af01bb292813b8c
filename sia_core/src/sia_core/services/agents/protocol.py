"""What a model adapter sends and returns, the limits of a step, and a tool's refusal.

An LLM backend supplies a small :class:`ModelAdapter` (send the conversation and the tool
definitions, get back a :class:`Turn`: text, :class:`ToolCall` s and usage); the loop offers the
model :class:`ToolSpec` s. Neutral messages: ``{"role": "user", "content": str}``,
``{"role": "assistant", "content": str, "tool_calls": [{"id", "name", "arguments"}]}`` and
``{"role": "tool", "results": [{"id", "name", "content", "is_error"}]}``; adapters translate them
to their provider's format.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import attrs

from sia_core.contracts.errors import SiaError
from sia_core.contracts.records import _tuple


@attrs.frozen(kw_only=True)
class ToolSpec:
    """A tool the model may call: name, description and a JSON schema of its arguments."""

    name: str
    description: str
    parameters: dict[str, Any]


@attrs.frozen(kw_only=True)
class ToolCall:
    """One tool call of the model. ``arguments`` is ``None`` when they were not a JSON object
    (``raw`` then holds what the model sent)."""

    id: str
    name: str
    arguments: dict[str, Any] | None
    raw: str = ""


@attrs.frozen(kw_only=True)
class Turn:
    """One model reply: text, tool calls, and usage (``input_tokens``, ``output_tokens``,
    ``cost_usd`` and provider extras such as cache token counts)."""

    text: str = ""
    tool_calls: tuple[ToolCall, ...] = attrs.field(default=(), converter=_tuple)
    usage: dict[str, Any] = attrs.field(factory=dict)
    stop_reason: str = ""
    model: str = ""


class ModelAdapter(Protocol):
    """A provider behind the agent loop. ``send`` may raise; the loop records the error."""

    model: str

    def send(
        self,
        system: str,
        messages: list[dict[str, Any]],
        tools: list[ToolSpec],
        max_output_tokens: int,
    ) -> Turn: ...


def _int_setting(settings: Mapping[str, Any], key: str, default: int) -> int:
    try:
        value = int(settings.get(key, default))
    except (TypeError, ValueError):
        raise SiaError(
            f"--backend-opt {key}={settings.get(key)!r}: expected a whole number"
        ) from None
    if value < 1:
        raise SiaError(f"--backend-opt {key}={value}: expected a number of 1 or more")
    return value


@attrs.frozen(kw_only=True)
class AgentLimits:
    """Limits of one Meta/Feedback step (``--backend-opt KEY=VALUE`` sets each)."""

    max_turns: int = 30  # model calls
    max_tokens: int = 1_000_000  # input + output tokens over the step
    max_output_tokens: int = 16_000  # per model call (a whole scaffold fits)
    max_trials: int = 4  # test_scaffold calls
    trial_items: int = 3  # train items per trial, by default
    max_read_chars: int = 40_000  # per read_file call
    max_no_tool_replies: int = 2  # consecutive replies without a tool call before giving up

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> AgentLimits:
        """Limits from backend settings; unknown keys are left to the backend."""
        default = cls()
        values = {
            f.name: _int_setting(settings, f.name, getattr(default, f.name))
            for f in attrs.fields(cls)
        }
        return cls(**values)


class ToolError(Exception):
    """A tool call that cannot be done; the message goes back to the model."""
