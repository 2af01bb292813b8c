"""Conformance suite for RL objective plugins: subclass and supply an ``algorithm_spec`` fixture."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sia_core.contracts.records import AlgorithmFit, AlgorithmSpec, RewardStats
from sia_core.machinery.plugins import resolve

reward_stats = st.builds(
    RewardStats,
    n_rewards=st.integers(0, 10_000),
    mean=st.floats(-1e3, 1e3),
    std=st.floats(0, 1e3),
    skew=st.floats(-50, 50),
    zero_variance_group_share=st.floats(0, 1),
    step_reward_density=st.floats(0, 1),
    binary=st.booleans(),
    rollout_cost_s=st.floats(0, 1e4),
)


class AlgorithmConformance:
    """Every objective names itself, and its fit is a finite score with a reason for any stats."""

    @pytest.fixture
    def algorithm_spec(self) -> AlgorithmSpec:  # pragma: no cover - supplied by subclasses
        raise NotImplementedError

    def test_spec_is_complete(self, algorithm_spec: AlgorithmSpec) -> None:
        assert algorithm_spec.name and ":" in algorithm_spec.fit and ":" in algorithm_spec.trainer

    def test_fit_is_finite_with_a_reason(self, algorithm_spec: AlgorithmSpec) -> None:
        fit_fn = resolve(algorithm_spec.fit)

        @settings(max_examples=50, deadline=None)
        @given(reward_stats)
        def check(stats: RewardStats) -> None:
            fit: Any = fit_fn(stats)
            assert isinstance(fit, AlgorithmFit)
            assert math.isfinite(fit.score)
            assert fit.reason.strip()

        check()
