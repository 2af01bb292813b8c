"""Registers the ``entropic`` objective; imports only sia_core and the standard library."""

from __future__ import annotations

from collections.abc import Iterator

from sia_core import hookimpl
from sia_core.contracts.records import AlgorithmSpec


@hookimpl
def sia_rl_algorithms() -> Iterator[AlgorithmSpec]:
    yield AlgorithmSpec(
        name="entropic",
        fit="sia_rl_entropic.fit:fit",
        trainer="sia_rl_entropic.objective:make_objective",
        description="entropic advantage weighting, adaptive β with KL(q_β‖U) = ln 2 (TTT-Discover)",
        settings=(
            "clip_eps",
            "kl_coef",
            "loss_agg",
            "kl_target",
            "beta_max",
            "bisect_iters",
            "beta",
            "max_advantage",
        ),
    )
