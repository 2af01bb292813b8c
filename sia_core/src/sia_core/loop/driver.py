"""The loop itself: one generation after another, each step once, from the run's current state
to ``max_gen``, a stop decision or a cap."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

from sia_core import __version__
from sia_core.contracts.backend import BackendOptions, TaskModel
from sia_core.contracts.errors import SiaError
from sia_core.contracts.records import Decision, from_dict, to_dict
from sia_core.loop.evaluate import Evaluation
from sia_core.loop.gate import Gating
from sia_core.loop.propose import Proposing
from sia_core.loop.spending import CapReached, Spending
from sia_core.loop.train import Training
from sia_core.machinery.astguard import guard_ast_parse
from sia_core.machinery.caps import caps_of, describe_cap
from sia_core.machinery.fs import locked
from sia_core.machinery.ledger import SPENDING_STEPS, run_cost, step_seconds, write_gen_cost
from sia_core.machinery.plugins import resolve
from sia_core.machinery.pricing import Pricer
from sia_core.machinery.runstore import FINGERPRINT, DiskFullError
from sia_core.services.gateway import Gateway
from sia_core.services.runner import RunnerOptions
from sia_core.services.summary import GenRow, summarize

STEPS = ("propose", "train", "run", "score", "gate")


class Loop(Spending, Proposing, Training, Evaluation, Gating):
    """Drives one run from its current state to ``max_gen``, a stop decision, or a budget."""

    def run(self) -> list[GenRow]:
        root = self.store.root
        guard_ast_parse()  # tracker and gateway threads parse while the loop does
        with locked(root / ".lock", wait=False, busy=f"run folder {root}"):
            self.store.remove_stale_temps()
            return self._run_locked()

    def _run_locked(self) -> list[GenRow]:
        cfg = self.config
        resumed = bool(self.store.events)
        self._write_run_json("running")
        # observers only (not in events.jsonl): where the run folder is, for reports and trackers
        self._progress("run_opened", None, run_dir=str(self.store.root))
        stop_reason = ""
        stopped_by_cap: dict[str, Any] | None = None
        try:
            self._open()
            self._write_run_json("running")  # now with the cost so far (a resumed run's)
            assert self.backend is not None
            task_model = self.backend.task_model()
            self.emit(
                "run_resumed" if resumed else "run_started",
                task=self.task.name,
                backend=cfg.backend,
                task_model=task_model.name,
                trainable=task_model.trainable,
                sandbox=cfg.sandbox,
                max_gen=cfg.max_gen,
            )
            self._estimate()
            if not self.store.exists(FINGERPRINT):
                self.store.write_json(FINGERPRINT, self.task.fingerprint())
            self._canaries()
            for gen in range(1, cfg.max_gen + 1):
                if gen in self.state.gens_finished:
                    continue
                # gated but killed before gen_finished: finish it now (caps: see _step)
                if not self.state.done(gen, "gate"):
                    if self.state.last_stop is not None:
                        break
                    if gen not in self.state.gens_started:
                        self.emit("gen_started", gen)
                    decision = self._step(gen, "propose", self._propose)
                    if decision.lever == "stop":
                        stop_reason = f"generation {gen}: the Feedback-Agent decided to stop"
                        self.emit("run_stopped", gen, reason=stop_reason)
                        break
                    if decision.lever in ("weights", "both"):
                        self._step(gen, "train", self._train)
                    self._step(gen, "run", self._run_scaffold)
                    self._step(gen, "score", self._score)
                    self._step(gen, "gate", self._gate)
                self.emit("gen_finished", gen, incumbent=self.state.incumbent)
            for gen in self.final_test_gens():
                self._step(gen, "test", self._final_test)
        except CapReached as cap:  # before a spending step: the run stops cleanly here
            stop_reason = describe_cap(cap.cap, self.store.run_id, still=self._still_capped())
            stopped_by_cap = cap.cap
            self.emit("run_stopped", cap.gen, reason=stop_reason, step=cap.step, cap=cap.cap)
        except BaseException as exc:
            try:
                self._write_run_json("failed", error=f"{type(exc).__name__}: {exc}")
                self.emit("run_failed", error=f"{type(exc).__name__}: {exc}")
            except (OSError, SiaError):
                pass  # e.g. the disk is full: the first error is the one to report
            if isinstance(exc, DiskFullError):
                raise SiaError(
                    f"{exc}; every finished step is kept: free some space, then "
                    f"`sia resume {self.store.run_id}`"
                ) from exc
            raise
        finally:
            self._close()
        if not stop_reason:
            stopped = self.state.last_stop
            stop_reason = stopped.data["reason"] if stopped else ""
        status = "stopped" if stop_reason else "finished"
        extra: dict[str, Any] = {"stopped_by_cap": stopped_by_cap} if stopped_by_cap else {}
        self._write_run_json(status, stop_reason=stop_reason, **extra)
        self.emit("run_finished", status=status, incumbent=self.state.incumbent)
        return self.summary()

    def _step(self, gen: int, step: str, fn: Callable[[int], Any]) -> Any:
        if self.state.done(gen, step):
            return self._load_step(gen, step)
        if step in SPENDING_STEPS:
            self._check_caps(gen, step)
        self._progress("step_started", gen, step=step)
        t0 = time.monotonic()
        result, data = fn(gen)
        seconds = round(time.monotonic() - t0, 3)
        if step in SPENDING_STEPS:
            data = {**data, "cost": self._account(gen, step, data, seconds)}
        self.emit("step_finished", gen, step=step, seconds=seconds, **data)
        if self.ledger is not None:
            write_gen_cost(self.store, self.ledger, gen)  # now with this step's wall time
        return result

    def _load_step(self, gen: int, step: str) -> Any:
        if step == "propose":
            return from_dict(Decision, self.store.read_json(f"gen_{gen}/decision.json"))
        return None

    def _open(self) -> None:
        cfg = self.config
        spec = self.pm.backends().get(cfg.backend)
        options = BackendOptions(
            meta_model=cfg.meta_model,
            task_model=cfg.task_model,
            seed=cfg.seed,
            run_dir=str(self.store.root),
            settings=dict(cfg.backend_settings),
        )
        self.backend = resolve(spec.factory)(options)
        self.sandbox = resolve(self.pm.sandboxes().get(cfg.sandbox).factory)()
        self.runner = resolve(self.pm.runners().get(cfg.runner).factory)(
            RunnerOptions(
                settings=dict(cfg.runner_settings),
                sandbox=cfg.sandbox,
                run_dir=str(self.store.root),
            )
        )
        self.runner.start()  # a cluster that cannot be reached fails the run now
        task_model = self.backend.task_model()
        if not isinstance(task_model, TaskModel):
            raise SiaError(
                f"backend {cfg.backend!r}: its task model ({type(task_model).__name__}) does not "
                "subclass sia_core.contracts.backend.TaskModel, which declares what it can do"
            )
        task_model.start()  # a model server that cannot start fails the run now
        self.pricer = None if task_model.free else Pricer()
        if self.pricer is not None:
            self.pricer.price(task_model.name)  # a bad price file fails now
        self._open_ledger()
        self.gateway = Gateway(task_model, host=self.runner.gateway_host(), pricer=self.pricer)
        self.gateway.start()

    def _close(self) -> None:
        if self.gateway is not None:
            self.gateway.stop()
        if self.runner is not None:
            self.runner.close()
        if self.backend is not None:
            try:
                self.backend.close()
            except Exception:  # closing must not hide the run's own outcome
                pass

    def _write_run_json(self, status: str, **extra: Any) -> None:
        prev = self.store.read_json("run.json") if self.store.exists("run.json") else {}
        data = {
            "run_id": self.store.run_id,
            "status": status,
            "config": to_dict(self.config),
            "sia_core_version": __version__,
            "plugins": [
                {"name": i.name, "version": i.version, "distribution": i.distribution}
                for i in self.pm.plugin_infos()
                if i.error is None
            ],
            "created": prev.get("created", time.time()),
            "updated": time.time(),
            "pid": os.getpid(),
            "incumbent": self.state.incumbent,
            "caps": caps_of(self.config),
            **extra,
        }
        if self.ledger is not None:
            data["cost"] = run_cost(self.ledger, step_seconds(self.store))
        if self.estimate is not None:
            data["estimate"] = self.estimate
        self.store.write_json("run.json", data)

    def summary(self) -> list[GenRow]:
        """Per generation: lever, objective, dev and (sealed) test score, incumbent, time."""
        return summarize(self.store)
