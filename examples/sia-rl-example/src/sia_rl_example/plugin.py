"""Registers ``reinforce-kl``; like every plugin module, imports only sia_core and stdlib."""

from __future__ import annotations

from collections.abc import Iterator

from sia_core import hookimpl
from sia_core.contracts.records import AlgorithmFit, AlgorithmSpec, RewardStats


@hookimpl
def sia_rl_algorithms() -> Iterator[AlgorithmSpec]:
    yield AlgorithmSpec(
        name="reinforce-kl",
        fit="sia_rl_example.plugin:fit",
        trainer="sia_rl_example.objective:make_objective",
        description="REINFORCE with a group-mean baseline plus a KL penalty to the base model",
        settings=("kl_coef",),  # the --train-opt keys the objective reads
    )


def fit(stats: RewardStats) -> AlgorithmFit:
    """A modest fit that grows with step-reward density, never above PPO's on dense rewards.

    The paper lists REINFORCE + KL for dense rewards where the main risk is capability
    regression; sia's PPO serves that shape better, so this stays a fallback (at most 0.45).
    """
    density = stats.step_reward_density
    density = min(max(density, 0.0), 1.0) if density == density else 0.0  # NaN -> 0
    score = 0.1 + 0.35 * min(density / 0.5, 1.0)
    return AlgorithmFit(
        name="reinforce-kl",
        score=score,
        reason=f"plain REINFORCE + KL fallback; step-reward density {density:.2f}",
    )
