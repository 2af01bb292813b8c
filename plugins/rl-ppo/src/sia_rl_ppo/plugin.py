"""Registers the ``ppo`` objective; imports only sia_core and the standard library."""

from __future__ import annotations

from collections.abc import Iterator

from sia_core import hookimpl
from sia_core.contracts.records import AlgorithmSpec


@hookimpl
def sia_rl_algorithms() -> Iterator[AlgorithmSpec]:
    yield AlgorithmSpec(
        name="ppo",
        fit="sia_rl_ppo.fit:fit",
        trainer="sia_rl_ppo.objective:make_objective",
        description="PPO: value head, per-token GAE(γ, λ), clipped surrogate and value loss, k3 KL",
        settings=(
            "clip_eps",
            "kl_coef",
            "loss_agg",
            "gamma",
            "lam",
            "vf_coef",
            "vf_clip",
            "whiten_advantages",
        ),
    )
