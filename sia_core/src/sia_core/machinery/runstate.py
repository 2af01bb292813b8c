"""The one reader of a run: :class:`RunState` folds its events
(:func:`sia_core.services.summary.summarize` adds the generation folders' scores and the cost).

The loop (to resume and to gate), ``sia runs/show/compare``, the progress display, the report
and the trackers all read a run through these, so "which generation is the incumbent" or "did
this step finish" has one answer. A run's events are the truth: the incumbent is what the last
``gate`` step said.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import attrs

from sia_core.contracts.records import Event, GenerationNode, from_dict


class RunState:
    """What a run's events say so far. Build it with :meth:`from_events`, or keep one and
    :meth:`add` events as they come (observers do)."""

    def __init__(self) -> None:
        self.count = 0  # events folded in
        self.started = False  # a run_started (or run_resumed) was seen
        self.steps: dict[tuple[int, str], dict[str, Any]] = {}  # finished steps: their data
        self.gens_started: set[int] = set()
        self.gens_finished: set[int] = set()
        self.gates: dict[int, dict[str, Any]] = {}  # gen -> its gate step's data, in gate order
        self.incumbent: int | None = None  # as the last gate left it
        self.last_stop: Event | None = None  # the last run_stopped that was not a cap

    @classmethod
    def from_events(cls, events: Iterable[Event]) -> RunState:
        state = cls()
        for event in events:
            state.add(event)
        return state

    def add(self, event: Event) -> None:
        """Fold one more event in."""
        self.count += 1
        gen, data = event.gen, event.data
        if event.type in ("run_started", "run_resumed"):
            self.started = True
        elif event.type == "gen_started" and gen is not None:
            self.gens_started.add(gen)
        elif event.type == "gen_finished" and gen is not None:
            self.gens_finished.add(gen)
        elif event.type == "step_finished" and gen is not None:
            self.steps[(gen, str(data.get("step")))] = data
            if data.get("step") == "gate":
                self.gates.pop(gen, None)
                self.gates[gen] = data
                self.incumbent = data.get("incumbent")
        elif event.type == "run_stopped" and not data.get("cap"):
            self.last_stop = event

    def done(self, gen: int, step: str) -> bool:
        """Whether ``step`` of generation ``gen`` finished."""
        return (gen, step) in self.steps

    def nodes(self) -> list[GenerationNode]:
        """The archive: one node per gated generation, ``incumbent`` set on the current one."""
        return [
            attrs.evolve(from_dict(GenerationNode, d["node"]), incumbent=gen == self.incumbent)
            for gen, d in self.gates.items()
        ]

    def history(self) -> list[dict[str, Any]]:
        """Dev-only history: what the Feedback-Agent and the objective choice see."""
        nodes = {n.gen: n for n in self.nodes()}
        rows = []
        for n in nodes.values():
            parent = nodes.get(n.parent_gen) if n.parent_gen is not None else None
            rows.append(
                {
                    "gen": n.gen,
                    "parent_gen": n.parent_gen,
                    "lever": n.lever,
                    "rl_algorithm": n.rl_algorithm,
                    "dev_score": n.dev_score,
                    "parent_dev_score": parent.dev_score if parent else None,
                    "incumbent": n.incumbent,
                }
            )
        return rows

    def incumbent_dev(self) -> float | None:
        """The incumbent's dev score, or None before the first gate."""
        if self.incumbent is None or self.incumbent not in self.gates:
            return None
        node = self.gates[self.incumbent].get("node")
        return node.get("dev_score") if isinstance(node, dict) else None
