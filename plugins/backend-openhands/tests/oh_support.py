"""Helpers for the openhands backend's tests (run in .venv312: openhands-sdk needs 3.12).

The agent's LLM is reached over real HTTP on loopback: the local llama.cpp server (SmolLM2) or
sia's OpenAI stub scripted with replies in OpenHands' own prompt-mocked tool-call format
(``<function=NAME><parameter=KEY>VALUE</parameter></function>``), which OpenHands parses exactly
as it parses a model that has no native tool calling. Nothing in the SDK is patched.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any

from sia_core.testing.fixtures import tiny_task_source
from sia_core.testing.openai_stub import message_text

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

REFERENCE = (tiny_task_source() / "reference/reference_target_agent.py").read_text()
TASK_MD = (tiny_task_source() / "data/public/task.md").read_text()
IMPROVED = REFERENCE.replace(
    '"instruction": "Answer with the number only."',
    '"instruction": "Add the two numbers. Reply with the sum as digits only."',
)
assert IMPROVED != REFERENCE


def fn_call(name: str, **params: Any) -> str:
    """A reply calling ``name`` in OpenHands' prompt-mocked tool-call format."""
    body = "".join(f"<parameter={k}>\n{v}\n</parameter>\n" for k, v in params.items())
    return f"I will call {name}.\n<function={name}>\n{body}</function>"


def all_text(body: dict[str, Any]) -> str:
    """Every message text of a chat request."""
    return "\n".join(message_text(m) for m in body.get("messages") or [] if isinstance(m, dict))


class Script:
    """Scripted replies, one per request in order (the last repeats). An entry is a string or
    a function of the request body."""

    def __init__(self, *replies: str | Callable[[dict[str, Any]], str]) -> None:
        self.replies = list(replies)
        self.bodies: list[dict[str, Any]] = []
        self.lock = threading.Lock()

    def __call__(self, body: dict[str, Any]) -> str:
        with self.lock:
            self.bodies.append(body)
            reply = self.replies[min(len(self.bodies), len(self.replies)) - 1]
        return reply(body) if callable(reply) else reply


def adaptive(body: dict[str, Any]) -> str:
    """Write the improved scaffold once, then decide (works for both roles); a task-model call
    (no agent system prompt) gets "42"."""
    if "of sia, a framework" not in all_text(body):
        return "42"
    if "saved target_agent.py" not in all_text(body):
        return fn_call("write_scaffold", code=IMPROVED)
    args = {
        "rationale": "the instruction now names the operation and the format",
        "improvement_md": "# Clearer instruction\n\nSays to add and to reply with digits only.",
    }
    if "Feedback-Agent" in all_text(body):
        args["lever"] = "harness"
    return fn_call("decide", **args)
