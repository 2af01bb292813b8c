"""The train step: a LoRA weight update through the frozen scaffold, run by an executor plugin."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs

from sia_core.contracts.errors import SiaError
from sia_core.contracts.records import Decision, TrainJob, TrainResult, from_dict
from sia_core.contracts.training import DEFAULT_TRAIN_SETTINGS
from sia_core.loop.base import LoopBase
from sia_core.machinery.plugins import resolve
from sia_core.services.agents.roles import with_notes


class Training(LoopBase):
    """The train step."""

    def _train(self, gen: int) -> tuple[None, dict[str, Any]]:
        """Weight update through the frozen scaffold; a failed job leaves the parent's adapter."""
        assert self.backend is not None
        gdir = self.store.gen_dir(gen)
        decision = from_dict(Decision, self.store.read_json(gdir / "decision.json"))
        algorithm = self.pm.rl_algorithms().get(str(decision.rl_algorithm))
        executor = self._executor()
        task_model = self.backend.task_model()
        parent_adapter = self.adapter_for(decision.parent_gen)
        # an earlier attempt's folder is kept: the worker resumes from its checkpoint when the
        # job is the same, and clears anything else itself
        out = gdir / "adapter"
        job = TrainJob(
            job_id=f"run_{self.store.run_id}-gen_{gen}",
            algorithm=algorithm.name,
            trainer=algorithm.trainer,
            task_dir=str(self.task.root),
            scaffold=str(gdir / "target_agent.py"),
            base_model=task_model.base_model,
            out_dir=str(out),
            init_adapter=str(self.store.root / parent_adapter) if parent_adapter else None,
            seed=self.config.seed * 1000 + gen,
            settings={**DEFAULT_TRAIN_SETTINGS, **self.config.train_settings},
            sandbox=self.config.sandbox,
        )
        self.store.write_json(gdir / "train_job.json", job)
        try:
            result = executor.run(job, lambda d: self._progress("train_progress", gen, **d))
        except Exception as exc:  # an executor bug must not kill the run either
            result = TrainResult(status="failed", error=f"{type(exc).__name__}: {exc}")
        if result.status == "ok" and not (result.adapter and Path(result.adapter).exists()):
            result = attrs.evolve(
                result,
                status="failed",
                error=f"the executor reported no adapter at {result.adapter}",
            )
        if result.status == "ok" and result.metrics.get("tokens", 1) == 0:
            result = attrs.evolve(
                result,
                status="failed",
                error="it trained on 0 tokens: the scaffold made no task-model call on the "
                "train items, so the weights lever cannot help it",
            )
        self.store.write_json(gdir / "train_result.json", result)
        if result.status != "ok":  # said where the user and the agents look, not only here
            self._note(
                gen,
                f"the weights update failed ({result.error}); this generation "
                "serves the parent's weights and the gate will not accept it",
            )
        # the adapter this generation will serve (adapter_for(gen) only knows it once the step
        # is recorded as finished): the new one, or the parent's after a failed job
        served = parent_adapter
        if result.status == "ok" and result.adapter:
            served = str(Path(result.adapter).resolve().relative_to(self.store.root.resolve()))
        return None, {
            "status": result.status,
            "algorithm": algorithm.name,
            "executor": executor.name,
            "adapter": served,
            "error": result.error,
        }

    def _executor(self) -> Any:
        executors = self.pm.executors()
        names = [self.config.executor] if self.config.executor != "auto" else executors.names()
        reasons = []
        for name in names:
            executor = resolve(executors.get(name).factory)()
            ok, why = executor.available()
            if ok:
                return executor
            reasons.append(f"{name}: {why}")
        raise SiaError("no training executor is available: " + "; ".join(reasons))

    def _note(self, gen: int, note: str) -> None:
        """Add a note of sia's to the generation's ``decision.json`` and ``improvement.md``."""
        gdir = self.store.gen_dir(gen)
        decision = self.store.read_json(gdir / "decision.json")
        decision["notes"] = [*decision.get("notes", []), note]
        self.store.write_json(gdir / "decision.json", decision)
        text = with_notes(self.store.read_text(gdir / "improvement.md"), [note])
        self.store.write_text(gdir / "improvement.md", text)
