"""The gate step: the generation becomes the incumbent if it beats the incumbent's dev score
beyond noise (:mod:`sia_core.services.gate_rule`); the archive and ``context.md`` are rewritten."""

from __future__ import annotations

from typing import Any

import attrs

from sia_core.contracts.records import Decision, GenerationNode, Metrics, from_dict
from sia_core.loop.base import LoopBase
from sia_core.loop.propose import sha256_text
from sia_core.services.agents.context import evolution_log
from sia_core.services.gate_rule import judge


class Gating(LoopBase):
    """The gate step."""

    def _gate(self, gen: int) -> tuple[None, dict[str, Any]]:
        gdir = self.store.gen_dir(gen)
        decision = from_dict(Decision, self.store.read_json(gdir / "decision.json"))
        metrics = from_dict(Metrics, self.store.read_json(gdir / "metrics.json"))
        text = (gdir / "target_agent.py").read_text(encoding="utf-8")
        incumbent = self.state.incumbent
        nodes = {n.gen: n for n in self.state.nodes()}
        dev = metrics.dev.score
        trained = self.state.steps.get((gen, "train")) or {"status": "ok"}
        rule: dict[str, Any] = {}
        failed = trained.get("status") != "ok"
        if metrics.voided:
            accepted, why = False, f"voided: {metrics.voided}"
        elif failed and incumbent is not None:
            accepted, why = False, f"the weights update failed: {trained.get('error')}"
        elif incumbent is None:
            accepted, why = True, "the first generation is the first incumbent"
        else:
            inc_metrics = self.store.read_json(self.store.gen_dir(incumbent) / "metrics.json")
            verdict = judge(
                metrics.dev,
                from_dict(Metrics, inc_metrics).dev,
                incumbent,
                maximize=self.task.config.direction != "minimize",
                margin=self.config.gate_margin,
            )
            accepted, why = verdict.accepted, verdict.reason
            rule = attrs.asdict(verdict, filter=lambda a, _: a.name not in ("accepted", "reason"))
        node = GenerationNode(
            gen=gen,
            parent_gen=decision.parent_gen,
            lever=decision.lever,
            scaffold_sha256=sha256_text(text),
            rl_algorithm=decision.rl_algorithm,
            adapter=self.adapter_for(gen),
            dev_score=dev,
            status="failed" if failed else "done",
        )
        new_incumbent = gen if accepted else incumbent
        all_nodes = [*nodes.values(), node]
        self.store.write_json(
            "archive.json",
            {
                "incumbent": new_incumbent,
                "nodes": [attrs.evolve(n, incumbent=n.gen == new_incumbent) for n in all_nodes],
            },
        )
        decisions = {
            n.gen: self.store.read_json(self.store.gen_dir(n.gen) / "decision.json")
            for n in all_nodes
        }
        log = evolution_log(self.task, all_nodes, decisions, new_incumbent, gen, why)
        self.store.write_text("context.md", log)
        out = {"node": node, "incumbent": new_incumbent, "accepted": accepted, "reason": why}
        return None, {**out, **({"rule": rule} if rule else {})}
