"""Conformance suite for an objective's trainer: subclass and supply an ``algorithm_spec`` fixture.

Complements ``sia_core.testing.conformance.algorithm.AlgorithmConformance`` (which checks the
fit): this one checks what ``AlgorithmSpec.trainer`` builds. The loss checks need torch and are
skipped without it.
"""

from __future__ import annotations

import math
from typing import Any

import attrs
import pytest

from sia_core.contracts.records import AlgorithmFit, AlgorithmSpec, RewardStats
from sia_core.contracts.training import DEFAULT_TRAIN_SETTINGS
from sia_core.machinery.plugins import resolve

from .objective import Group, Objective, Rollout


def _group(item_id: str, rewards: tuple[float, ...]) -> Group:
    return Group(
        item_id=item_id, rollouts=tuple(Rollout(item_id=item_id, reward=r) for r in rewards)
    )


GROUPS = (_group("a", (0.0, 1.0, 0.25, 3.0)), _group("b", (0.5, 0.5, 0.5)), _group("c", (2.0,)))


class ObjectiveConformance:
    """``make_objective(settings)`` builds an Objective whose advantages and loss behave."""

    @pytest.fixture
    def algorithm_spec(self) -> AlgorithmSpec:  # pragma: no cover - supplied by subclasses
        raise NotImplementedError

    @pytest.fixture
    def objective(self, algorithm_spec: AlgorithmSpec) -> Any:
        return resolve(algorithm_spec.trainer)(dict(DEFAULT_TRAIN_SETTINGS))

    def test_trainer_builds_the_named_objective(
        self, algorithm_spec: AlgorithmSpec, objective: Any
    ) -> None:
        assert isinstance(objective, Objective)
        assert objective.name == algorithm_spec.name
        assert isinstance(objective.needs_value_head, bool)
        assert isinstance(getattr(objective, "min_group_size", 1), int)
        assert resolve(algorithm_spec.trainer)(None).name == algorithm_spec.name

    def test_declared_settings_are_the_objectives(
        self, algorithm_spec: AlgorithmSpec, objective: Any
    ) -> None:
        """``AlgorithmSpec.settings`` lists what the objective reads (so a typo is refused)."""
        assert algorithm_spec.settings, "declare the --train-opt keys the objective reads"
        if attrs.has(type(objective)):
            fields = {f.name for f in attrs.fields(type(objective)) if f.init}
            assert set(algorithm_spec.settings) == fields

    def test_fit_names_the_objective_and_scores_in_unit_range(
        self, algorithm_spec: AlgorithmSpec
    ) -> None:
        for stats in (RewardStats(), RewardStats(step_reward_density=1.0, skew=40.0)):
            fit = resolve(algorithm_spec.fit)(stats)
            assert isinstance(fit, AlgorithmFit) and fit.name == algorithm_spec.name
            assert 0.0 <= fit.score <= 1.0

    def test_advantages_follow_the_groups(self, objective: Any) -> None:
        adv = objective.advantages(GROUPS)
        assert [len(a) for a in adv] == [len(g.rollouts) for g in GROUPS]
        assert all(math.isfinite(x) for a in adv for x in a)
        # a higher reward never gets a lower advantage within its group
        order = sorted(range(4), key=lambda i: GROUPS[0].rollouts[i].reward)
        assert [adv[0][i] for i in order] == sorted(adv[0])
        assert adv[0][order[-1]] > adv[0][order[0]]
        # a group whose rollouts all scored the same teaches nothing
        assert all(abs(x) < 1e-9 for x in adv[1])

    def _batch(self, objective: Any, torch: Any) -> dict[str, Any]:
        gen = torch.Generator().manual_seed(0)
        logp = (-torch.rand(4, 6, generator=gen) * 3).requires_grad_(True)
        mask = torch.ones(4, 6)
        mask[:, :2] = 0  # prompt tokens
        mask[3, 5] = 0  # padding
        kwargs: dict[str, Any] = dict(
            logp=logp,
            old_logp=logp.detach().clone(),
            ref_logp=logp.detach().clone(),
            advantages=torch.tensor([1.0, -1.0, 0.5, -0.5]),
            mask=mask,
        )
        if objective.needs_value_head:
            rewards = torch.zeros(4, 6)
            rewards[torch.arange(4), torch.tensor([5, 5, 5, 4])] = torch.tensor([1.0, 0, 0.5, 0])
            kwargs.update(values=torch.rand(4, 6, generator=gen).requires_grad_(True))
            kwargs.update(step_rewards=rewards)
        return kwargs

    def test_loss_is_a_finite_scalar_with_stats(self, objective: Any) -> None:
        torch = pytest.importorskip("torch")
        kwargs = self._batch(objective, torch)
        kwargs["ref_logp"] = kwargs["ref_logp"] - 0.3
        loss, stats = objective.loss(**kwargs)
        assert loss.dim() == 0 and torch.isfinite(loss)
        loss.backward()
        assert kwargs["logp"].grad is not None and torch.isfinite(kwargs["logp"].grad).all()
        assert {"kl", "clip_frac"} <= set(stats)
        assert all(isinstance(v, float) and math.isfinite(v) for v in stats.values())
        assert stats["kl"] > 0  # the policy differs from the reference

    def test_kl_is_zero_at_the_reference_policy(self, objective: Any) -> None:
        torch = pytest.importorskip("torch")
        _, stats = objective.loss(**self._batch(objective, torch))
        assert abs(stats["kl"]) < 1e-7

    def test_no_gradient_outside_the_completion(self, objective: Any) -> None:
        torch = pytest.importorskip("torch")
        kwargs = self._batch(objective, torch)
        loss, _ = objective.loss(**kwargs)
        loss.backward()
        grad = kwargs["logp"].grad
        assert torch.all(grad[kwargs["mask"] == 0] == 0)
        assert torch.any(grad[kwargs["mask"] == 1] != 0)
