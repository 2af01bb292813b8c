"""What a rollout leaves for training: its calls' token ids and sampling log-probabilities.

A :class:`CallRecord` is one model call as the policy generated it; a :class:`RolloutSample` is
one run of the scaffold (its calls and its reward); :class:`StepRollouts` holds a step's groups.
A call is matched to the gateway's record of it by :func:`call_key`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from .objective import Group, Rollout


@dataclass
class CallRecord:
    """One model call as the policy saw it: token ids and the sampling log-probabilities."""

    key: str  # messages + completion text: how the call is matched to the gateway's record
    prompt_ids: list[int]
    completion_ids: list[int]
    old_logp: list[float]  # log π_old of each completion token (sampling temperature applied)
    text: str
    finish_reason: str


@dataclass
class RolloutSample:
    """One rollout: the scaffold's run on one copy of a train item, its calls and its reward."""

    rollout: Rollout
    source_id: str  # the train item's id
    status: str
    answer: Any = None
    error: str = ""
    calls: list[CallRecord] = field(default_factory=list)
    unmatched_calls: int = 0  # gateway calls with no token record (failed generations)

    @property
    def n_tokens(self) -> int:
        return sum(len(c.completion_ids) for c in self.calls)


@dataclass
class StepRollouts:
    """The groups of one step, in order, and what went wrong."""

    groups: list[Group]
    samples: list[list[RolloutSample]]  # same nesting as ``groups``
    seconds: float
    errors: list[str]

    def flat(self) -> list[RolloutSample]:
        return [s for group in self.samples for s in group]


def call_key(messages: Any, completion: str | None) -> str:
    """The join key of a call: canonical JSON of its messages and its completion text."""
    return json.dumps(messages, sort_keys=True, ensure_ascii=False) + "\x00" + (completion or "")
