"""The example RL objective (reinforce-kl), tested with sia's shared suites as a third party would.

``AlgorithmConformance`` checks the spec and its ``fit`` on every reward shape;
``ObjectiveConformance`` (sia-train) checks what the trainer builds: advantages per group, a
finite loss with gradients, the declared settings. Copy this file with your objective.
"""

from __future__ import annotations

import pytest

from sia_core.contracts.records import AlgorithmSpec
from sia_core.testing.conformance.algorithm import AlgorithmConformance
from sia_rl_example import plugin
from sia_train.objective import Group, Rollout
from sia_train.testing import ObjectiveConformance


class TestReinforceKL(AlgorithmConformance, ObjectiveConformance):
    @pytest.fixture
    def algorithm_spec(self) -> AlgorithmSpec:
        (spec,) = plugin.sia_rl_algorithms()
        return spec


def test_advantages_are_returns_minus_the_group_mean() -> None:
    from sia_rl_example.objective import make_objective

    group = Group(
        item_id="a", rollouts=tuple(Rollout(item_id="a", reward=r) for r in (1.0, 0.0, 0.5))
    )
    assert make_objective({}).advantages([group]) == [[0.5, -0.5, 0.0]]
