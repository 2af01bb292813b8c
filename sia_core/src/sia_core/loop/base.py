"""What every step of the loop shares: the run's config, folder, plugins, backend, sandbox and
gateway; emitting events; the run state; which task model (and adapter) a generation runs on."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from sia_core.contracts.backend import Backend
from sia_core.contracts.config import RunConfig
from sia_core.contracts.events import event_data
from sia_core.contracts.records import Event, ItemResult, to_dict
from sia_core.contracts.sandbox import Sandbox
from sia_core.machinery.ledger import Ledger
from sia_core.machinery.plugins import SiaPluginManager
from sia_core.machinery.pricing import Pricer
from sia_core.machinery.runstate import RunState
from sia_core.machinery.runstore import RunStore
from sia_core.services import canary
from sia_core.services.gateway import Gateway
from sia_core.services.runner import ItemRunner
from sia_core.services.taskdir import Task, load_task


class LoopBase:
    """The state the loop's steps share (see :class:`~sia_core.loop.driver.Loop`)."""

    def __init__(
        self,
        config: RunConfig,
        store: RunStore,
        pm: SiaPluginManager,
        *,
        on_item: Callable[[ItemResult], None] | None = None,
        task: Task | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.pm = pm
        self.on_item = on_item
        self.task: Task = task or load_task(config.task_dir)
        self.backend: Backend | None = None
        self.sandbox: Sandbox | None = None
        self.runner: ItemRunner | None = None
        self._canary_set: canary.CanarySet | None = None
        self.gateway: Gateway | None = None
        self.ledger: Ledger | None = None
        self.pricer: Pricer | None = None  # None: the models are free
        self.estimate: dict[str, Any] | None = None
        self._resume_seq = 0
        self._state = RunState()

    def emit(self, type: str, gen: int | None = None, **data: Any) -> Event:
        event = self.store.append(type, gen=gen, **event_data(type, data, logged=True))
        self.pm.notify(event)
        return event

    def _progress(self, type: str, gen: int | None, **data: Any) -> None:
        """An event for observers only (not written to events.jsonl)."""
        data = to_dict(event_data(type, data, logged=False))
        self.pm.notify(Event(type=type, run_id=self.store.run_id, gen=gen, data=data))

    @property
    def state(self) -> RunState:
        """The run as its events say (kept up to date as events are appended)."""
        for event in self.store.events[self._state.count :]:
            self._state.add(event)
        return self._state

    def gateway_model_name(self) -> str:
        assert self.backend is not None
        return self.backend.task_model().name

    def adapter_for(self, gen: int | None) -> str | None:
        """The adapter (relative to the run folder) generation ``gen``'s task model serves."""
        if gen is None:
            return None
        gdir = self.store.gen_dir(gen)
        result_path = gdir / "train_result.json"
        if self.state.done(gen, "train") and result_path.exists():
            result = self.store.read_json(result_path)
            if result["status"] == "ok" and result.get("adapter"):
                return str(Path(result["adapter"]).resolve().relative_to(self.store.root.resolve()))
        decision_path = gdir / "decision.json"
        if not decision_path.exists():
            return None
        return self.adapter_for(self.store.read_json(decision_path).get("parent_gen"))

    def _use_task_model_of(self, gen: int) -> None:
        """Point the gateway at the task model generation ``gen`` runs on (base + adapter)."""
        assert self.backend is not None and self.gateway is not None
        base = self.backend.task_model()
        adapter = self.adapter_for(gen)
        current = self.gateway.task_model.adapter
        if adapter is None:
            if current is not None:
                self.gateway.set_task_model(base)
            return
        path = str(self.store.root / adapter)
        if current != path:
            self.gateway.set_task_model(base.with_adapter(path))
