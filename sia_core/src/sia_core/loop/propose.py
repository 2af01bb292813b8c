"""The propose step: the Meta-Agent (generation 1) or the Feedback-Agent writes the next
scaffold and decision; sia validates both and records them in the generation folder."""

from __future__ import annotations

import difflib
import hashlib
from typing import Any

import attrs

from sia_core.contracts.backend import FeedbackRequest, MetaRequest
from sia_core.contracts.records import Decision, Metrics, from_dict
from sia_core.loop.base import LoopBase
from sia_core.loop.policy import LeverContext, validate_lever, weights_blockers
from sia_core.services.agents.roles import call_role, improvement_md
from sia_core.services.objective_choice import choose_algorithm, reward_stats
from sia_core.services.runner.spec import scaffold_problem
from sia_core.services.runner.trial import try_on_train


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def unified_diff(old: str, new: str, old_name: str, new_name: str) -> str:
    return "".join(
        difflib.unified_diff(
            old.splitlines(keepends=True), new.splitlines(keepends=True), old_name, new_name
        )
    )


class Proposing(LoopBase):
    """The propose step."""

    def _propose(self, gen: int) -> tuple[Decision, dict[str, Any]]:
        assert self.backend is not None
        gdir = self.store.gen_dir(gen)
        gdir.mkdir(parents=True, exist_ok=True)
        reference = self.task.reference_scaffold.read_text(encoding="utf-8")
        restart: list[str] = []
        if gen > 1 and self.state.incumbent is None:
            restart.append(
                "no incumbent: every earlier generation was voided, so this one starts again "
                "from the task's reference scaffold (Meta-Agent)"
            )
        if gen == 1 or restart:
            parent_gen, parent_text, parent_name = None, reference, "reference_target_agent.py"
            outcome = call_role(
                "meta",
                lambda: self.backend.meta(  # type: ignore[union-attr]
                    MetaRequest(
                        gen=gen,
                        gen_dir=gdir,
                        task_name=self.task.name,
                        task_md=self.task.task_md,
                        reference_scaffold=reference,
                        sample_task_descriptions=self.task.sample_task_descriptions,
                        public_dir=self.task.public_dir,
                        try_scaffold=lambda code, n: self._try_scaffold(gen, code, n),
                    )
                ),
                fallback_text=reference,
                parent_gen=None,
                fallback_why="the reference scaffold is used unchanged",
            )
        else:
            parent_gen = self.state.incumbent
            assert parent_gen is not None
            pdir = self.store.gen_dir(parent_gen)
            parent_text = (pdir / "target_agent.py").read_text(encoding="utf-8")
            parent_name = f"gen_{parent_gen}/target_agent.py"
            lever_ctx = self._lever_context(gen)
            request = FeedbackRequest(
                next_gen=gen,
                next_gen_dir=gdir,
                parent_gen=parent_gen,
                parent_gen_dir=pdir,
                parent_scaffold=parent_text,
                dev_metrics=self.store.read_json(pdir / "metrics.json"),
                context_md=self.store.read_text("context.md"),
                task_md=self.task.task_md,
                task_name=self.task.name,
                history=tuple(self.state.history()),
                trainable_task_model=lever_ctx.trainable,
                weights_blockers=tuple(weights_blockers(lever_ctx)),
                lever_override=None if self.config.lever == "auto" else self.config.lever,
                seed=self.config.seed,
                direction=self.task.config.direction,
                run_dir=self.store.root,
                public_dir=self.task.public_dir,
                try_scaffold=lambda code, n: self._try_scaffold(gen, code, n, parent_gen),
            )
            outcome = call_role(
                "feedback",
                lambda: self.backend.feedback(request),  # type: ignore[union-attr]
                fallback_text=parent_text,
                parent_gen=parent_gen,
                fallback_why=f"generation {gen} reuses the parent's scaffold (gen {parent_gen})",
            )

        decision = self._validate(outcome.decision, gen, parent_gen)
        notes = [*restart, *decision.notes]
        text = outcome.scaffold if outcome.scaffold is not None else parent_text
        if decision.lever == "weights" and text != parent_text:
            notes.append("the scaffold stays frozen for a weights generation; its edit was dropped")
            text = parent_text
        problem = scaffold_problem(text)
        if problem:
            (gdir / "rejected_target_agent.py").write_text(text, encoding="utf-8")
            notes.append(
                f"the proposed scaffold {problem}; kept the parent's "
                "(saved as rejected_target_agent.py)"
            )
            text = parent_text
        if text == parent_text and decision.lever == "harness" and gen > 1:
            notes.append("the scaffold is unchanged from the parent")
        decision = attrs.evolve(decision, notes=tuple(notes))
        self.store.write_text(gdir / "target_agent.py", text)
        self.store.write_text(
            gdir / "diff.patch",
            unified_diff(parent_text, text, f"a/{parent_name}", f"b/gen_{gen}/target_agent.py"),
        )
        self.store.write_text(gdir / "improvement.md", improvement_md(outcome, decision))
        self.store.write_json(gdir / "agent_transcript.json", list(outcome.transcript))
        self.store.write_json(gdir / "decision.json", decision)
        data: dict[str, Any] = {
            "lever": decision.lever,
            "parent_gen": parent_gen,
            "rl_algorithm": decision.rl_algorithm,
            "scaffold_sha256": sha256_text(text),
        }
        if outcome.usage:
            data["agent_usage"] = dict(outcome.usage)  # the role's own calls, for the ledger
        return decision, data

    def _try_scaffold(
        self, gen: int, code: str, n_items: int, model_gen: int | None = None
    ) -> dict[str, Any]:
        """Run a candidate scaffold on a few public train items, for the agents (on the task
        model ``model_gen`` ran on: the parent's weights)."""
        assert self.gateway is not None and self.sandbox is not None
        if model_gen is not None:
            self._use_task_model_of(model_gen)
        return try_on_train(
            self.task,
            code,
            n_items,
            trials_dir=self.store.gen_dir(gen) / "trials",
            gateway=self.gateway,
            sandbox=self.sandbox,
            gen=gen,
            max_calls=self.config.max_calls_per_gen,
            model_name=self.gateway_model_name(),
            parallel=self.config.parallel or self.task.config.parallel,
            item_timeout_s=self.config.item_timeout_s or self.task.config.item_timeout_s,
        )

    def _validate(self, decision: Decision, gen: int, parent_gen: int | None) -> Decision:
        assert self.backend is not None
        decision = attrs.evolve(decision, parent_gen=parent_gen)
        if parent_gen is None:  # the Meta-Agent's proposal (gen 1, or a restart)
            return decision
        algorithms = self.pm.rl_algorithms()
        decision = validate_lever(decision, self._lever_context(gen))
        if decision.lever not in ("weights", "both"):
            return attrs.evolve(decision, rl_algorithm=None)
        assert parent_gen is not None
        pdir = self.store.gen_dir(parent_gen)
        metrics = from_dict(Metrics, self.store.read_json(pdir / "metrics.json"))
        steps = metrics.dev.extra.get("step_rewards") or {}
        stats = reward_stats(
            metrics.dev.per_item,
            steps_total=int(steps.get("steps", 0)),
            steps_with_reward=int(steps.get("rewarded", 0)),
        )
        requested = self.config.rl_algorithm
        if requested == "auto" and decision.rl_algorithm and decision.rl_algorithm in algorithms:
            requested = decision.rl_algorithm  # the Feedback-Agent named one
        name, fits, reason = choose_algorithm(
            stats,
            algorithms,
            requested,
            self.state.history(),
            self.task.config.direction == "maximize",
        )
        return attrs.evolve(
            decision,
            rl_algorithm=name,
            algorithm_fits=fits,
            reward_stats=stats,
            notes=(*decision.notes, f"RL objective {name}: {reason}"),
        )

    def _lever_context(self, gen: int) -> LeverContext:
        assert self.backend is not None
        task_model = self.backend.task_model()
        return LeverContext(
            gen=gen,
            override=self.config.lever,
            trainable=task_model.trainable,
            task_model_name=task_model.name,
            n_algorithms=len(self.pm.rl_algorithms()),
            n_executors=len(self.pm.executors()),
        )
