"""Lever validation, reward shape and RL objective choice; conformance of the scripted backend."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sia_core import hookimpl
from sia_core.contracts.backend import BackendOptions
from sia_core.contracts.records import AlgorithmFit, AlgorithmSpec, Decision, RewardStats
from sia_core.loop.policy import LeverContext, validate_lever
from sia_core.machinery.plugins import new_plugin_manager
from sia_core.services.objective_choice import choose_algorithm, feedback_signal, reward_stats
from sia_core.surface.builtin.scripted import ScriptedBackend
from sia_core.testing.conformance.algorithm import AlgorithmConformance
from sia_core.testing.conformance.backend import BackendConformance


def fit_dense(stats: RewardStats) -> AlgorithmFit:
    return AlgorithmFit(name="ppo", score=stats.step_reward_density, reason="dense step rewards")


def fit_sparse(stats: RewardStats) -> AlgorithmFit:
    score = (1.0 - stats.step_reward_density) * (0.9 if stats.binary else 0.5)
    return AlgorithmFit(name="grpo", score=score, reason="sparse episode rewards")


class Objectives:
    @hookimpl
    def sia_rl_algorithms(self):
        yield AlgorithmSpec(name="ppo", fit=f"{__name__}:fit_dense", trainer="x:y")
        yield AlgorithmSpec(name="grpo", fit=f"{__name__}:fit_sparse", trainer="x:y")


@pytest.fixture
def algorithms():
    pm = new_plugin_manager(entrypoints=False)
    pm.register_object(Objectives(), "objectives")
    return pm.rl_algorithms()


def test_reward_shape_picks_the_objective(algorithms) -> None:
    sparse = reward_stats({"a": 1.0, "b": 0.0, "c": 0.0})
    assert choose_algorithm(sparse, algorithms)[0] == "grpo"
    dense = reward_stats({"a": 0.3, "b": 0.7}, steps_total=10, steps_with_reward=9)
    name, fits, reason = choose_algorithm(dense, algorithms)
    assert name == "ppo" and {f.name for f in fits} == {"ppo", "grpo"}
    assert "dense step rewards" in reason


def test_dev_gain_signal_moves_the_choice(algorithms) -> None:
    """A weight generation whose objective gained on dev boosts that objective next time."""
    sparse = reward_stats({"a": 1.0, "b": 0.0})
    history = [
        {"lever": "weights", "rl_algorithm": "ppo", "dev_score": 1.0, "parent_dev_score": 0.0},
    ]
    assert feedback_signal(history) == pytest.approx({"ppo": 0.5})
    name, _, reason = choose_algorithm(sparse, algorithms, history=history)
    assert name == "ppo"
    assert "moved the choice from grpo to ppo" in reason
    # for a minimize task the same history is a loss
    assert choose_algorithm(sparse, algorithms, history=history, maximize=False)[0] == "grpo"


def test_requested_objective_must_exist(algorithms) -> None:
    assert choose_algorithm(reward_stats({}), algorithms, "ppo")[0] == "ppo"
    with pytest.raises(Exception, match="choose one of: grpo, ppo"):
        choose_algorithm(reward_stats({}), algorithms, "dpo")


@given(st.dictionaries(st.text(max_size=4), st.floats(-1e6, 1e6), min_size=1, max_size=30))
def test_reward_stats_are_finite(rewards: dict[str, float]) -> None:
    s = reward_stats(rewards)
    assert all(math.isfinite(x) for x in (s.mean, s.std, s.skew))
    assert s.n_rewards == len(rewards)
    assert s.binary == all(v in (0.0, 1.0) for v in rewards.values())


@pytest.mark.parametrize(
    ("proposed", "ctx", "lever", "note"),
    [
        ("weights", LeverContext(gen=2), "harness", "not trainable"),
        ("weights", LeverContext(gen=2, trainable=True), "harness", "no RL algorithm plugin"),
        (
            "weights",
            LeverContext(gen=2, trainable=True, n_algorithms=1, n_executors=1),
            "weights",
            None,
        ),
        (
            "harness",
            LeverContext(gen=2, override="weights", trainable=True, n_algorithms=1, n_executors=1),
            "weights",
            "--lever weights overrides",
        ),
        ("stop", LeverContext(gen=2, override="harness"), "stop", None),
        ("sideways", LeverContext(gen=2), "harness", "unknown lever"),
    ],
)
def test_validate_lever(proposed, ctx, lever, note) -> None:
    out = validate_lever(Decision(lever=proposed, rationale="r"), ctx)
    assert out.lever == lever
    if note:
        assert any(note in n for n in out.notes)
        assert out.proposed_lever == (proposed if proposed != lever else None)
    else:
        assert not out.notes


class TestScriptedBackendConformance(BackendConformance):
    @pytest.fixture
    def backend(self):
        b = ScriptedBackend(BackendOptions())
        yield b
        b.close()


class TestObjectiveConformance(AlgorithmConformance):
    @pytest.fixture(params=["fit_dense", "fit_sparse"])
    def algorithm_spec(self, request):
        return AlgorithmSpec(name=request.param, fit=f"{__name__}:{request.param}", trainer="x:y")
