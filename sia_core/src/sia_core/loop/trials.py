"""The run step: the generation's scaffold on the dev items (and canaries) in the sandbox,
through the gateway; what it answered and called goes to ``agent_execution.json``."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import attrs

from sia_core.contracts.records import Item, ItemResult
from sia_core.contracts.sandbox import Limits
from sia_core.loop.base import LoopBase
from sia_core.machinery.runstore import CANARY_EXECUTION, SEALED, gen_fingerprint
from sia_core.services import canary
from sia_core.services.gateway import Budget
from sia_core.services.runner import RunSpec, run_program, scaffold_kind
from sia_core.services.runner.execution import check_model_reachable, execution_record


class Trials(LoopBase):
    """The run step, and running a scaffold on a list of items."""

    def _execute(
        self, gen: int, items: list[Item], work: Path
    ) -> tuple[list[ItemResult], Any, list[Any], dict[str, Any]]:
        """Run generation ``gen``'s scaffold on ``items``: results, program result, calls, usage."""
        assert self.gateway is not None and self.sandbox is not None
        cfg, task = self.config, self.task
        if work.exists():
            shutil.rmtree(work)  # a half-finished earlier attempt
        work.mkdir(parents=True)
        scaffold = self.store.gen_dir(gen) / "target_agent.py"
        self._use_task_model_of(gen)
        self.gateway.begin(
            gen, Budget(max_calls=cfg.max_calls_per_gen, max_tokens=cfg.max_tokens_per_gen)
        )
        spec = RunSpec(
            scaffold_path=scaffold,
            work_dir=work,
            public_dir=task.public_dir,
            train_examples=tuple(task.train_examples()),
            model_name=self.gateway_model_name(),
            parallel=cfg.parallel or task.config.parallel,
            item_timeout_s=cfg.item_timeout_s or task.config.item_timeout_s,
            limits=Limits(),
        )
        total, finished = len(items), 0

        def on_item(result: ItemResult) -> None:
            nonlocal finished
            finished += 1
            self._progress(
                "item_finished",
                gen,
                item_id=result.item_id,
                split=result.split,
                status=result.status,
                done=finished,
                total=total,
            )
            if self.on_item:
                self.on_item(result)

        # a syntax error never gets here: the propose step keeps the parent's scaffold instead
        program = None
        results: list[ItemResult] = []
        if scaffold_kind(scaffold) == "per_item":
            assert self.runner is not None
            results = self.runner.run_items(
                spec, items, sandbox=self.sandbox, gateway=self.gateway, on_item=on_item
            )
        else:
            program = run_program(spec, sandbox=self.sandbox, gateway=self.gateway)
            # nothing of the scaffold runs now: take out what the output contract names, as
            # regular files, into a folder the scaffold never saw; only that is ever scored
            outputs = work.parent / "outputs"
            if outputs.exists():
                shutil.rmtree(outputs)
            program = attrs.evolve(program, outputs=self.task.harvest_outputs(work, outputs))
        return results, program, self.gateway.calls(), self.gateway.usage()

    def _canaries(self) -> canary.CanarySet | None:
        """This run's canary items (drawn once, when the run starts), or None."""
        if self._canary_set is None:
            self._canary_set = canary.for_run(self.task, self.store)
        return self._canary_set

    def _run_scaffold(self, gen: int) -> tuple[None, dict[str, Any]]:
        gdir = self.store.gen_dir(gen)
        every = self.config.test_eval == "every"
        canaries = self._canaries()
        dev_items = self.task.items("dev")
        if canaries is not None:  # shuffled in: an id shaped like the others, split "dev"
            dev_items = canaries.merge(dev_items)
        items = dev_items + (self.task.items("test") if every else [])
        self.store.write_json(gen_fingerprint(gen), self.task.fingerprint())
        results, program, calls, usage = self._execute(gen, items, gdir / "work")
        self._check_task_model(gen, calls)
        if canaries is not None:
            # their results and calls go where no agent reads: a per-item record would let a
            # Feedback-Agent learn the drawn labels from its hits
            ids = canaries.ids()
            self.store.write_json(
                gdir / CANARY_EXECUTION,
                {
                    "gen": gen,
                    "items": [r for r in results if r.item_id in ids],
                    "answers": {r.item_id: r.answer for r in results if r.item_id in ids},
                    "calls": [c for c in calls if c.item_id in ids],
                },
            )
            results = [r for r in results if r.item_id not in ids]
            calls = [c for c in calls if c.item_id not in ids]
        dev = [r for r in results if r.split == "dev"]
        test = [r for r in results if r.split == "test"]
        test_ids = {r.item_id for r in test}
        self._write_execution(
            gdir / "agent_execution.json",
            gen,
            dev,
            [c for c in calls if c.item_id not in test_ids],
            usage,
            program,
        )
        if every and program is None:
            self._write_execution(
                gdir / SEALED / "agent_execution_test.json",
                gen,
                test,
                [c for c in calls if c.item_id in test_ids],
                usage,
                None,
            )
        data: dict[str, Any] = {
            "kind": "per_item" if program is None else "program",
            "items": len(results),
            "errors": sum(r.status == "error" for r in results),
            "timeouts": sum(r.status == "timeout" for r in results),
            "llm_calls": usage.get("calls", 0),
        }
        if program is not None:  # one program: an error or a timeout is the run's own
            data.update(
                errors=int(program.status == "error"),
                timeouts=int(program.status == "timeout"),
                exit_status=program.returncode,
            )
        return None, data

    def _check_task_model(self, gen: int, calls: list[Any]) -> None:
        check_model_reachable(gen, calls, self.store.run_id)

    def _write_execution(
        self,
        path: Path,
        gen: int,
        results: list[ItemResult],
        calls: list[Any],
        usage: dict[str, Any],
        program: Any,
    ) -> None:
        model = self.gateway_model_name()
        record = execution_record(self.task, gen, model, results, calls, usage, program)
        self.store.write_json(path, record)
