"""Registers the ``grpo`` objective; imports only sia_core and the standard library."""

from __future__ import annotations

from collections.abc import Iterator

from sia_core import hookimpl
from sia_core.contracts.records import AlgorithmSpec


@hookimpl
def sia_rl_algorithms() -> Iterator[AlgorithmSpec]:
    yield AlgorithmSpec(
        name="grpo",
        fit="sia_rl_grpo.fit:fit",
        trainer="sia_rl_grpo.objective:make_objective",
        description="GRPO: group-normalised advantages, clipped ratio, k3 KL; no value head",
        settings=("clip_eps", "kl_coef", "loss_agg", "eps", "scale_rewards"),
    )
