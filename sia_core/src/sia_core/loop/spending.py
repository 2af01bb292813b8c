"""What a run spends: the cost ledger, the run caps checked before each spending step, the
estimate."""

from __future__ import annotations

from typing import Any

from sia_core.loop.base import LoopBase
from sia_core.machinery.caps import cap_reached
from sia_core.machinery.ledger import Ledger, rebuild_entries, step_entries, totals, write_gen_cost
from sia_core.services.estimate import estimate


class CapReached(Exception):
    """A run cap was reached before a spending step: the run stops cleanly there."""

    def __init__(self, gen: int, step: str, cap: dict[str, Any]) -> None:
        super().__init__(cap["cap"])
        self.gen, self.step, self.cap = gen, step, cap


class Spending(LoopBase):
    """The ledger and the caps of a run."""

    def _still_capped(self) -> bool:
        """Whether this resume stopped at a cap again before finishing any step."""
        before, now = self.store.events[: self._resume_seq], self.store.events[self._resume_seq :]
        last = [e for e in before if e.type in ("run_stopped", "step_finished")][-1:]
        capped = bool(last) and last[0].type == "run_stopped" and bool(last[0].data.get("cap"))
        return capped and not any(e.type == "step_finished" for e in now)

    def _open_ledger(self) -> None:
        """Rebuild the ledger from finished steps (a resumed run counts nothing twice)."""
        cfg = self.config
        pricer = self.pricer
        self.ledger = Ledger.open(
            self.store,
            lambda: rebuild_entries(self.store, pricer=pricer, meta_model=cfg.meta_model),
        )
        self._resume_seq = len(self.store.events)
        for gen, gdir in self.store.gen_dirs():
            if (gdir / "decision.json").exists():
                write_gen_cost(self.store, self.ledger, gen)

    def _account(self, gen: int, step: str, data: dict[str, Any], seconds: float) -> dict[str, Any]:
        """Append a finished step's ledger lines; the step's totals."""
        assert self.ledger is not None
        meta_model = self.config.meta_model or getattr(self.backend, "meta_model", None)
        entries = step_entries(
            self.store, gen, step, data, seconds, pricer=self.pricer, meta_model=meta_model
        )
        self.ledger.add(entries)
        write_gen_cost(self.store, self.ledger, gen)
        return totals(entries)

    def _check_caps(self, gen: int, step: str) -> None:
        if self.ledger is None:
            return
        cap = cap_reached(self.config, self.ledger.totals())
        if cap is not None:
            raise CapReached(gen, step, cap)

    def _estimate(self) -> None:
        """A rough cost estimate for observers and run.json, when a model has a price."""
        assert self.ledger is not None
        meta_model = self.config.meta_model or getattr(self.backend, "meta_model", None)
        self.estimate = estimate(
            self.task,
            self.config,
            self.ledger,
            pricer=self.pricer,
            task_model=self.gateway_model_name(),
            meta_model=meta_model,
            finished_gens=[n.gen for n in self.state.nodes()],
        )
        if self.estimate is not None:
            self._progress("cost_estimate", None, **self.estimate)
