"""One generation's model calls as the gateway counts them.

:class:`Budget` is a generation's limits; :class:`_CallAccounting` (a base of
:class:`~sia_core.services.gateway.endpoint.Gateway`) keeps the generation's call log and its
call, token and cost totals, checks the budget against them, and starts the next generation.
"""

from __future__ import annotations

import threading
from typing import Any

import attrs

from sia_core.contracts.records import ModelCall

__all__ = ["Budget"]


@attrs.frozen(kw_only=True)
class Budget:
    """Limits on one generation's model calls; ``None`` means unlimited.

    ``max_calls`` counts calls forwarded to the task model (successful or failed);
    ``max_tokens`` counts prompt + completion tokens of the generation's successful calls.
    """

    max_calls: int | None = None
    max_tokens: int | None = None


class _CallAccounting:
    """The call log and counters of the current generation, guarded by the gateway's lock."""

    _lock: threading.Lock
    _gen: int
    _epoch: int
    _budget: Budget
    _default_budget: Budget

    def _reset_counters(self) -> None:
        self._calls: list[ModelCall] = []
        self._next_id = 0
        self._admitted = 0  # forwarded to the task model, including calls still running
        self._prompt_tokens = 0
        self._completion_tokens = 0
        self._cost_usd = 0.0
        self._n_ok = 0
        self._n_errors = 0
        self._n_over_budget = 0
        self._n_refused = 0

    def begin(self, gen: int, budget: Budget | None = None) -> None:
        """Start generation ``gen``: clear the call log and counters; ``budget`` (default: the
        constructor's) applies until the next :meth:`begin`."""
        with self._lock:
            self._gen = gen
            self._epoch += 1
            self._budget = budget if budget is not None else self._default_budget
            self._reset_counters()

    def calls(self) -> list[ModelCall]:
        """The calls finished since :meth:`begin`, ordered by ``call_id`` (1, 2, ...)."""
        with self._lock:
            calls = list(self._calls)
        return sorted(calls, key=lambda c: c.call_id)

    def calls_for(self, item_id: str) -> list[ModelCall]:
        """The calls attributed to ``item_id``, ordered by ``call_id``."""
        return [c for c in self.calls() if c.item_id == item_id]

    def usage(self) -> dict[str, Any]:
        """Totals since :meth:`begin`.

        ``calls`` counts calls that reached the task model (ok or error); ``errors`` counts the
        failed ones, ``over_budget`` the calls refused by the budget and ``refused`` those refused
        for naming an item other than their key's; tokens and cost sum the successful calls.
        """
        with self._lock:
            return {
                "calls": self._n_ok + self._n_errors,
                "prompt_tokens": self._prompt_tokens,
                "completion_tokens": self._completion_tokens,
                "cost_usd": self._cost_usd,
                "errors": self._n_errors,
                "over_budget": self._n_over_budget,
                "refused": self._n_refused,
            }

    def _budget_refusal(self) -> str | None:
        """Why the next call is refused, or ``None``; caller holds the lock."""
        b = self._budget
        if b.max_calls is not None and self._admitted + 1 > b.max_calls:
            return (
                f"generation {self._gen} budget exceeded: max_calls={b.max_calls} "
                f"({self._admitted} calls already made)"
            )
        used = self._prompt_tokens + self._completion_tokens
        if b.max_tokens is not None and used >= b.max_tokens:
            return (
                f"generation {self._gen} budget exceeded: max_tokens={b.max_tokens} "
                f"({used} prompt + completion tokens already used)"
            )
        return None

    def _record(self, epoch: int, call: ModelCall) -> None:
        with self._lock:
            if epoch != self._epoch:
                return
            self._calls.append(call)
            if call.status == "ok":
                self._n_ok += 1
                self._prompt_tokens += call.prompt_tokens
                self._completion_tokens += call.completion_tokens
                self._cost_usd += call.cost_usd
            elif call.status == "over_budget":
                self._n_over_budget += 1
            elif call.status == "refused":
                self._n_refused += 1
            else:
                self._n_errors += 1
