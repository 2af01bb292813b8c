"""The score step (dev, and test where it came for free) and the final sealed test; a
generation whose task files changed or whose canaries were hit is voided."""

from __future__ import annotations

import math
from typing import Any

import attrs

from sia_core.contracts.records import Metrics, ScoreResult
from sia_core.loop.trials import Trials
from sia_core.machinery.runstore import FINGERPRINT, SEALED, gen_fingerprint
from sia_core.services import canary
from sia_core.services.taskdir import tampered


class Evaluation(Trials):
    """The score and test steps."""

    def _score(self, gen: int) -> tuple[None, dict[str, Any]]:
        gdir = self.store.gen_dir(gen)
        run_data = self.store.read_json(gdir / "agent_execution.json")
        test_path = gdir / SEALED / "agent_execution_test.json"
        test: ScoreResult | None = None
        items = list(run_data["items"])
        voided = self._tampered(gen)
        flagged = (
            "" if voided else canary.check_generation(self.task, self._canaries(), self.store, gen)
        )
        voided = voided or flagged
        if flagged:
            dev = self.task.score("dev", run_data["answers"])
            dev = attrs.evolve(
                dev, score=0.0, extra={**dev.extra, "voided": flagged, "measured": dev.score}
            )
        elif voided:
            worst = math.inf if self.task.config.direction == "minimize" else 0.0
            dev = ScoreResult(
                split="dev", score=worst, n_items=0, n_answered=0, extra={"voided": voided}
            )
        elif run_data.get("program") is not None:
            # a program handles every item at once, so its test score comes for free
            scores = self.task.score_program_output(gdir / "outputs", sandbox=self.sandbox)
            dev, test = scores["dev"], scores.get("test")
        else:
            dev = self.task.score("dev", run_data["answers"])
            steps = self.task.step_reward_summary("dev", run_data["items"])
            dev = attrs.evolve(dev, extra={**dev.extra, "step_rewards": steps}) if steps else dev
            if test_path.exists():
                test_data = self.store.read_json(test_path)
                test = self.task.score("test", test_data["answers"])
                items += test_data["items"]
        usage = run_data.get("usage") or {}
        program = run_data.get("program")
        if program is not None:  # the program run counts as one item: its status, its time
            items.append({"status": program["status"], "seconds": program.get("seconds", 0.0)})
            ran = {"status": program["status"], "exit_status": program.get("returncode")}
            dev = attrs.evolve(dev, extra={**dev.extra, "program": ran})
        metrics = Metrics(
            gen=gen,
            dev=dev,
            n_errors=sum(i["status"] == "error" for i in items),
            n_timeouts=sum(i["status"] == "timeout" for i in items),
            seconds=round(sum(i.get("seconds", 0.0) for i in items), 3),
            llm_calls=int(usage.get("calls", 0)),
            prompt_tokens=int(usage.get("prompt_tokens", 0)),
            completion_tokens=int(usage.get("completion_tokens", 0)),
            cost_usd=float(usage.get("cost_usd", 0.0)),
            voided=voided,
        )
        if voided:
            self.emit("warning", gen, message=f"generation {gen} voided: {voided}")
        self.store.write_json(gdir / "metrics.json", metrics)
        if test is not None:
            self.store.write_json(gdir / SEALED / "metrics_test.json", test)
        return None, {"dev_score": dev.score}

    def _tampered(self, gen: int) -> str:
        """Why generation ``gen`` is void because the task's files changed, or ``""``."""
        read = self.store.read_json
        return tampered(
            self.task,
            read(gen_fingerprint(gen)) if self.store.exists(gen_fingerprint(gen)) else None,
            read(FINGERPRINT) if self.store.exists(FINGERPRINT) else None,
        )

    def _final_test(self, gen: int) -> tuple[None, dict[str, Any]]:
        """Score a generation on the sealed test split once, after the loop (report only)."""
        gdir = self.store.gen_dir(gen)
        results, _, calls, usage = self._execute(gen, self.task.items("test"), gdir / "work_test")
        self._check_task_model(gen, calls)
        self._write_execution(
            gdir / SEALED / "agent_execution_test.json", gen, results, calls, usage, None
        )
        score = self.task.score("test", {r.item_id: r.answer for r in results})
        self.store.write_json(gdir / SEALED / "metrics_test.json", score)
        return None, {"items": len(results)}

    def final_test_gens(self) -> list[int]:
        """Generations scored on test after the loop: the first one and the incumbent."""
        if self.config.test_eval != "final":
            return []
        done = {n.gen for n in self.state.nodes()}
        gens = {g for g in (1, self.state.incumbent) if g is not None and g in done}
        return sorted(
            g for g in gens if not (self.store.gen_dir(g) / SEALED / "metrics_test.json").exists()
        )
