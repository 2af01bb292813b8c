"""RL objectives: the advantage math, the losses, the fits and the `auto` choice among them.

Plugins: sia-rl-grpo, sia-rl-ppo, sia-rl-entropic (plugins/) and the third-party example
sia-rl-example (examples/), all on sia-train's objective interface. The loss tests use torch
(the CPU wheel pinned by constraints.txt, installed by scripts/setup).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from types import ModuleType
from typing import Any

import attrs
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import sia_rl_entropic.plugin
import sia_rl_example.plugin
import sia_rl_grpo.plugin
import sia_rl_ppo.plugin
from sia_core.contracts.errors import SiaError
from sia_core.contracts.records import AlgorithmSpec, RewardStats
from sia_core.contracts.training import DEFAULT_TRAIN_SETTINGS
from sia_core.machinery.plugins import SiaPluginManager, new_plugin_manager, resolve
from sia_core.services.objective_choice import choose_algorithm, reward_stats
from sia_core.testing.conformance.algorithm import AlgorithmConformance
from sia_core.testing.conformance.algorithm import reward_stats as any_reward_stats
from sia_rl_entropic.objective import (
    EntropicObjective,
    adaptive_beta,
    effective_sample_size,
    entropic_advantages,
    entropic_weights,
)
from sia_rl_grpo.objective import GRPOObjective, grpo_advantages
from sia_rl_ppo.objective import PPOObjective, gae
from sia_train.objective import Group, Rollout, settings_for, token_rewards
from sia_train.testing import ObjectiveConformance

PROPS = settings(max_examples=60, deadline=None)
LN2 = math.log(2.0)

BUILTIN = {
    "rl-grpo": sia_rl_grpo.plugin,
    "rl-ppo": sia_rl_ppo.plugin,
    "rl-entropic": sia_rl_entropic.plugin,
}
ALL = {**BUILTIN, "rl-example": sia_rl_example.plugin}  # entry-point name -> plugin module


def spec_of(module: ModuleType) -> AlgorithmSpec:
    (spec,) = module.sia_rl_algorithms()
    return spec  # type: ignore[no-any-return]


BY_NAME = {spec_of(m).name: m for m in ALL.values()}  # algorithm name -> plugin module


def make(name: str, **job: Any) -> Any:
    """The objective the named plugin's trainer entry builds from these job settings."""
    return resolve(spec_of(BY_NAME[name]).trainer)(job)


def groups_of(*reward_lists: list[float]) -> list[Group]:
    return [
        Group(item_id=f"i{n}", rollouts=[Rollout(item_id=f"i{n}", reward=r) for r in rewards])
        for n, rewards in enumerate(reward_lists)
    ]


def spread(rewards: list[float]) -> float:
    mean = sum(rewards) / len(rewards)
    return math.sqrt(sum((r - mean) ** 2 for r in rewards) / (len(rewards) - 1))


@pytest.fixture
def torch() -> Any:
    import torch  # scripts/setup installs the CPU wheel (requirements-dev.txt, constraints.txt)

    return torch


rewards_st = st.lists(st.floats(-100, 100), min_size=2, max_size=10)
unit_rewards_st = st.lists(st.floats(0, 1), min_size=2, max_size=10)

# --------------------------------------------------------------------------------------------
# GRPO advantages
# --------------------------------------------------------------------------------------------


@PROPS
@given(rewards_st)
def test_grpo_advantages_sum_to_zero_with_unit_sample_std(rewards: list[float]) -> None:
    std = spread(rewards)
    assume(std > 1e-6)
    adv = grpo_advantages(rewards)
    assert abs(math.fsum(adv)) < 1e-6
    # (r - mean)/(std + eps) with the sample std: the advantages' sample std is std/(std + eps)
    assert math.isclose(spread(adv), std / (std + 1e-6), rel_tol=1e-9)


@PROPS
@given(rewards_st, st.floats(-1e3, 1e3), st.floats(1e-2, 1e2))
def test_grpo_advantages_ignore_a_constant_and_a_positive_scale(
    rewards: list[float], shift: float, scale: float
) -> None:
    assume(spread(rewards) > 1e-2 and spread(rewards) * scale > 1e-2)
    base = grpo_advantages(rewards)
    shifted = grpo_advantages([r + shift for r in rewards])
    scaled = grpo_advantages([r * scale for r in rewards])
    for a, b, c in zip(base, shifted, scaled, strict=True):
        assert math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-6)
        assert math.isclose(a, c, rel_tol=1e-3, abs_tol=1e-3)


def test_grpo_zero_variance_groups_and_single_rollouts_get_zero() -> None:
    objective = GRPOObjective()
    adv = objective.advantages(groups_of([1.0, 1.0, 1.0], [0.0], [0.0, 1.0]))
    assert adv[:2] == [[0.0, 0.0, 0.0], [0.0]]
    assert adv[2][0] < 0 < adv[2][1]
    # unscaled (Dr. GRPO style): plain r - mean
    assert GRPOObjective(scale_rewards=False).advantages(groups_of([0.0, 3.0])) == [[-1.5, 1.5]]


# --------------------------------------------------------------------------------------------
# GAE
# --------------------------------------------------------------------------------------------

steps_st = st.integers(1, 12).flatmap(
    lambda n: st.tuples(
        st.lists(st.floats(-10, 10), min_size=n, max_size=n),
        st.lists(st.floats(-10, 10), min_size=n, max_size=n),
    )
)


@PROPS
@given(steps_st, st.floats(0, 1), st.floats(0, 1))
def test_gae_matches_the_direct_sum(
    rv: tuple[list[float], list[float]], gamma: float, lam: float
) -> None:
    rewards, values = rv
    n = len(rewards)
    nxt = [*values[1:], 0.0]  # terminal state after the last step
    delta = [rewards[t] + gamma * nxt[t] - values[t] for t in range(n)]
    direct = [sum((gamma * lam) ** k * delta[t + k] for k in range(n - t)) for t in range(n)]
    for got, want in zip(gae(rewards, values, gamma, lam), direct, strict=True):
        assert math.isclose(got, want, rel_tol=1e-9, abs_tol=1e-9)


@PROPS
@given(steps_st, st.floats(0, 1))
def test_gae_limits_are_td_error_and_monte_carlo_return(
    rv: tuple[list[float], list[float]], gamma: float
) -> None:
    rewards, values = rv
    n = len(rewards)
    mc = [sum(gamma**k * rewards[t + k] for k in range(n - t)) - values[t] for t in range(n)]
    td = [rewards[t] + gamma * [*values[1:], 0.0][t] - values[t] for t in range(n)]
    for got, want in zip(gae(rewards, values, gamma, 1.0), mc, strict=True):
        assert math.isclose(got, want, rel_tol=1e-9, abs_tol=1e-9)
    assert gae(rewards, values, gamma, 0.0) == pytest.approx(td, rel=1e-12, abs=1e-12)


def test_token_rewards_put_the_episode_reward_on_the_last_completion_token() -> None:
    mask = [0, 0, 1, 1, 0, 1, 1, 0]  # prompt, step 1, tool output, step 2, padding
    rollout = Rollout(item_id="a", reward=1.0, step_rewards=(0.25, 0.5))
    assert token_rewards(rollout, mask, step_ends=[3, 6]) == [0, 0, 0, 0.25, 0, 0, 1.5, 0]
    assert token_rewards(Rollout(item_id="a", reward=2.0), mask) == [0, 0, 0, 0, 0, 0, 2.0, 0]
    with pytest.raises(ValueError, match="not a completion token"):
        token_rewards(rollout, mask, step_ends=[4, 6])
    with pytest.raises(ValueError, match="2 step rewards but 1 step ends"):
        token_rewards(rollout, mask, step_ends=[3])


def test_ppo_gae_over_tokens_skips_non_completion_tokens(torch: Any) -> None:
    objective = PPOObjective(gamma=0.9, lam=0.8)
    gen = torch.Generator().manual_seed(1)
    values = torch.randn(3, 7, generator=gen, dtype=torch.float64)
    rewards = torch.randn(3, 7, generator=gen, dtype=torch.float64)
    mask = torch.tensor(
        [[0, 1, 1, 1, 1, 1, 1], [0, 0, 1, 1, 0, 1, 0], [1, 1, 1, 0, 0, 0, 0]], dtype=torch.bool
    )
    rewards = rewards * mask
    adv, targets = objective.token_advantages(rewards, values, mask)
    for row in range(3):
        m = mask[row]
        want = gae(rewards[row][m].tolist(), values[row][m].tolist(), 0.9, 0.8)
        assert adv[row][m].tolist() == pytest.approx(want, rel=1e-12, abs=1e-12)
        assert torch.all(adv[row][~m] == 0)
    assert torch.allclose((targets - values)[mask], adv[mask])  # λ-return targets


# --------------------------------------------------------------------------------------------
# Entropic advantage weighting
# --------------------------------------------------------------------------------------------


def kl_uniform(rewards: list[float], beta: float) -> float:
    """KL(q_β ‖ uniform), written independently of the plugin's version."""
    top = max(rewards)
    e = [math.exp(beta * (r - top)) for r in rewards]
    q = [x / sum(e) for x in e]
    return sum(p * math.log(len(q) * p) for p in q if p > 0)


@PROPS
@given(unit_rewards_st, st.floats(0, 40))
def test_entropic_weights_are_positive_with_a_leave_one_out_normaliser(
    rewards: list[float], beta: float
) -> None:
    k = len(rewards)
    w = entropic_weights(rewards, beta)
    e = [math.exp(beta * (r - max(rewards))) for r in rewards]
    assert all(x > 0 for x in w)
    for i in range(k):
        z_i = sum(e[j] for j in range(k) if j != i) / (k - 1)  # mean of the other samples' e
        assert math.isclose(w[i] * (z_i + 1e-12), e[i], rel_tol=1e-9)
    # LOO weights average at least 1 (Jensen); the full-mean normaliser averages exactly 1
    assert sum(w) / k >= 1 - 1e-9
    assert math.isclose(sum(x / (sum(e) / k) for x in e) / k, 1.0, rel_tol=1e-9)
    assert entropic_advantages(rewards, beta) == [x - 1 for x in w]


@PROPS
@given(rewards_st)
def test_entropic_is_uniform_at_beta_zero(rewards: list[float]) -> None:
    assert all(abs(a) < 1e-9 for a in entropic_advantages(rewards, 0.0))


@PROPS
@given(unit_rewards_st)
def test_entropic_weight_concentrates_on_the_best_sample_as_beta_grows(
    rewards: list[float],
) -> None:
    best = max(range(len(rewards)), key=rewards.__getitem__)
    assume(all(max(rewards) - r >= 0.01 for i, r in enumerate(rewards) if i != best))
    betas = [0.0, 0.5, 2.0, 10.0, 100.0, 2000.0]
    best_w = [entropic_weights(rewards, b)[best] for b in betas]
    assert best_w == sorted(best_w) and best_w[-1] > best_w[0]
    w = entropic_weights(rewards, 2000.0)
    assert w[best] / sum(w) > 0.999
    assert all(w[i] - 1 < -0.99 for i in range(len(w)) if i != best)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(-50, 50), min_size=2, max_size=12))
def test_adaptive_beta_meets_the_kl_target_when_reachable(rewards: list[float]) -> None:
    beta = adaptive_beta(rewards)
    if max(rewards) == min(rewards):
        assert beta == 0.0
        return
    if kl_uniform(rewards, 2.0**20) > LN2 + 1e-9:  # reachable inside the doubling bracket
        assert abs(kl_uniform(rewards, beta) - LN2) < 1e-6
        if kl_uniform(rewards, 1.0) > LN2 + 1e-9:
            assert beta <= 1.0  # KL grows with β, so the root lies in the first bracket [0, 1]
    else:
        # ln 2 is at best the supremum (e.g. half the samples tie at the top): TTT-Discover's
        # best effort is the last doubled bound, unless rounding reaches the target first
        assert beta == 2.0**20 or abs(kl_uniform(rewards, beta) - LN2) < 1e-6


def test_adaptive_beta_examples() -> None:
    assert adaptive_beta([3.0]) == 0.0 and adaptive_beta([2.0, 2.0, 2.0]) == 0.0
    # one winner among 8: KL = ln 2 is reachable at a finite β; q's Shannon perplexity is k/2
    rewards = [0.0] * 7 + [1.0]
    beta = adaptive_beta(rewards)
    assert 1.0 < beta < 100.0
    assert abs(kl_uniform(rewards, beta) - LN2) < 1e-9
    # Kish ESS at the solved β is at most the Shannon effective size k/2
    assert effective_sample_size(rewards, beta) <= 4.0 + 1e-9
    # the adaptive β is the same whatever the reward offset
    assert math.isclose(adaptive_beta([r + 100 for r in rewards]), beta, rel_tol=1e-9)


def test_entropic_objective_settings() -> None:
    groups = groups_of([0.0, 1.0], [0.0, 0.0, 0.0, 1.0], [0.5, 0.5])
    exact = EntropicObjective().advantages(groups)
    assert exact[0][1] > 1e9  # k = 2: the exact rule's LOO weight explodes once β saturates
    assert max(EntropicObjective(max_advantage=10).advantages(groups)[0]) == 10
    assert all(abs(a) < 1e-9 for a in exact[2])  # constant group: β = 0, A = 0
    fixed = EntropicObjective(beta=1.0)
    assert fixed.group_betas(groups) == [1.0, 1.0, 1.0]
    assert fixed.advantages(groups)[1] == entropic_advantages([0.0, 0.0, 0.0, 1.0], 1.0)


# --------------------------------------------------------------------------------------------
# Losses
# --------------------------------------------------------------------------------------------

NAMES = ["grpo", "ppo", "entropic", "reinforce-kl"]


def batch(torch: Any, seed: int = 0) -> dict[str, Any]:
    gen = torch.Generator().manual_seed(seed)
    logp = (-torch.rand(4, 5, generator=gen, dtype=torch.float64) * 2).requires_grad_(True)
    mask = torch.ones(4, 5, dtype=torch.float64)
    mask[:, 0] = 0
    return dict(
        logp=logp,
        old_logp=logp.detach().clone(),
        ref_logp=logp.detach().clone(),
        advantages=torch.tensor([1.5, -0.5, 0.25, -2.0], dtype=torch.float64),
        mask=mask,
    )


@pytest.mark.parametrize("name", NAMES)
def test_loss_gradient_raises_logp_of_positive_advantage_tokens(torch: Any, name: str) -> None:
    kw = batch(torch)
    loss, _ = make(name).loss(**kw)
    loss.backward()
    grad, sign = kw["logp"].grad, torch.sign(kw["advantages"]).unsqueeze(-1)
    on = kw["mask"] == 1
    # gradient descent moves logp along -grad: up where A > 0, down where A < 0
    assert torch.all(torch.sign(-grad)[on] == sign.expand_as(grad)[on])
    assert torch.all(grad[~on] == 0)


@pytest.mark.parametrize("name", ["grpo", "ppo", "entropic"])
def test_clipping_caps_the_ratio_effect(torch: Any, name: str) -> None:
    kw = batch(torch)
    adv = kw["advantages"].unsqueeze(-1)
    # move every token 1 nat away from the sampling policy, in the direction its advantage wants
    kw["old_logp"] = kw["logp"].detach() - torch.sign(adv)
    loss, stats = make(name, clip_eps=0.2).loss(**kw)
    loss.backward()
    on = kw["mask"] == 1
    assert stats["clip_frac"] == 1.0
    assert torch.all(kw["logp"].grad == 0)  # beyond the clip range nothing more to gain
    capped = torch.where(adv > 0, 1.2 * adv, 0.8 * adv).expand_as(on)[on].mean()
    assert float(loss.detach()) == pytest.approx(-float(capped))
    # the other direction (moving against the advantage) is never clipped
    kw2 = batch(torch)
    kw2["old_logp"] = kw2["logp"].detach() + torch.sign(adv)
    loss2, stats2 = make(name, clip_eps=0.2).loss(**kw2)
    loss2.backward()
    assert stats2["clip_frac"] == 0.0 and torch.all(kw2["logp"].grad[on] != 0)
    # without clipping (TTT-Discover's importance-sampling loss) the ratio acts in full
    kw3 = batch(torch)
    kw3["old_logp"] = kw3["logp"].detach() - torch.sign(adv)
    loss3, _ = make(name, clip_eps=None).loss(**kw3)
    loss3.backward()
    assert torch.all(kw3["logp"].grad[on] != 0)


@pytest.mark.parametrize("name", NAMES)
def test_kl_term_is_zero_at_the_reference_and_pulls_back_to_it(torch: Any, name: str) -> None:
    kw = batch(torch)
    kw["advantages"] = torch.zeros(4, dtype=torch.float64)
    loss, stats = make(name, kl_coef=0.5).loss(**kw)
    loss.backward()
    assert stats["kl"] == 0.0 and float(loss) == 0.0
    assert torch.all(kw["logp"].grad == 0)
    kw = batch(torch)
    kw["advantages"] = torch.zeros(4, dtype=torch.float64)
    offset = torch.linspace(-1, 1, 5, dtype=torch.float64).expand(4, 5)
    kw["ref_logp"] = kw["logp"].detach() - offset
    loss, stats = make(name, kl_coef=0.5).loss(**kw)
    loss.backward()
    on = (kw["mask"] == 1) & (offset != 0)
    assert stats["kl"] > 0 and float(loss) > 0
    # descent moves logp towards ref_logp
    assert torch.all(torch.sign(kw["logp"].grad)[on] == torch.sign(offset)[on])
    _, no_ref = make(name, kl_coef=0.5).loss(**{**batch(torch), "ref_logp": None})
    assert no_ref["kl"] == 0.0


def test_ppo_value_loss_moves_values_to_returns_and_clips(torch: Any) -> None:
    objective = PPOObjective(vf_clip=0.2, vf_coef=1.0)
    kw = batch(torch)
    kw["advantages"] = torch.zeros(4, dtype=torch.float64)
    targets = torch.ones(4, 5, dtype=torch.float64)
    old_values = torch.zeros(4, 5, dtype=torch.float64)
    rewards = torch.zeros(4, 5, dtype=torch.float64)
    on = kw["mask"] == 1

    def run(v: float) -> tuple[Any, dict[str, float]]:
        values = torch.full((4, 5), v, dtype=torch.float64, requires_grad=True)
        loss, stats = objective.loss(
            **{**kw, "logp": kw["logp"].detach().requires_grad_(True)},
            values=values,
            old_values=old_values,
            returns=targets,
            step_rewards=rewards,
        )
        loss.backward()
        return values.grad, stats

    grad, stats = run(0.1)  # inside the clip range, below the target: pushed up
    assert torch.all(grad[on] < 0) and stats["vf_clip_frac"] == 0.0
    assert stats["vf_loss"] == pytest.approx(0.5 * 0.9**2)
    grad, stats = run(0.5)  # moved past the clip range towards the target: no more push
    assert torch.all(grad == 0) and stats["vf_clip_frac"] == 1.0
    grad, stats = run(-0.5)  # moved away from the target: the unclipped loss still pulls back
    assert torch.all(grad[on] < 0) and stats["vf_clip_frac"] == 0.0
    assert torch.all(grad[~on] == 0)


def test_ppo_policy_gradient_follows_the_gae_advantage(torch: Any) -> None:
    objective = PPOObjective(gamma=1.0, lam=0.9, whiten_advantages=False)
    kw = batch(torch, seed=3)
    gen = torch.Generator().manual_seed(4)
    values = torch.rand(4, 5, generator=gen, dtype=torch.float64).requires_grad_(True)
    rewards = torch.zeros(4, 5, dtype=torch.float64)
    rewards[:, -1] = torch.tensor([1.0, 0.0, 0.3, -1.0], dtype=torch.float64)
    loss, stats = objective.loss(**kw, values=values, step_rewards=rewards)
    loss.backward()
    adv, _ = objective.token_advantages(rewards, values.detach(), kw["mask"])
    on = (kw["mask"] == 1) & (adv.abs() > 1e-9)
    assert torch.all(torch.sign(-kw["logp"].grad)[on] == torch.sign(adv)[on])
    assert stats["vf_loss"] > 0
    with pytest.raises(ValueError, match="step_rewards"):
        objective.loss(**batch(torch), values=values)


# --------------------------------------------------------------------------------------------
# Conformance
# --------------------------------------------------------------------------------------------


class _Suite(AlgorithmConformance, ObjectiveConformance):
    module: ModuleType

    @pytest.fixture
    def algorithm_spec(self) -> AlgorithmSpec:
        return spec_of(self.module)


class TestGRPO(_Suite):
    module = sia_rl_grpo.plugin


class TestPPO(_Suite):
    module = sia_rl_ppo.plugin


class TestEntropic(_Suite):
    module = sia_rl_entropic.plugin


class TestReinforceKLExample(_Suite):
    module = sia_rl_example.plugin


def test_specs_name_grpo_ppo_entropic_and_the_example() -> None:
    specs = {k: spec_of(m) for k, m in ALL.items()}
    assert {k: s.name for k, s in specs.items()} == {
        "rl-grpo": "grpo",
        "rl-ppo": "ppo",
        "rl-entropic": "entropic",
        "rl-example": "reinforce-kl",
    }
    assert specs["rl-ppo"].trainer == "sia_rl_ppo.objective:make_objective"
    assert [make(n).needs_value_head for n in NAMES] == [False, True, False, False]


def test_objective_settings_come_from_the_job() -> None:
    ppo = make("ppo", **DEFAULT_TRAIN_SETTINGS, gamma=0.99, ppo={"lam": 0.9})
    assert (ppo.kl_coef, ppo.gamma, ppo.lam, ppo.clip_eps) == (0.04, 0.99, 0.9, 0.2)
    with pytest.raises(SiaError, match=r"unknown ppo setting.*lamda.*valid: "):
        make("ppo", ppo={"lamda": 0.9})
    with pytest.raises(SiaError, match="invalid grpo settings"):
        make("grpo", clip_eps=1.5)
    with pytest.raises(SiaError, match="invalid entropic settings"):
        settings_for(EntropicObjective, {"entropic": {"kl_target": -1}}, "entropic")
    with pytest.raises(ValueError, match="other items"):
        Group(item_id="a", rollouts=[Rollout(item_id="b", reward=1.0)])
    with pytest.raises(ValueError, match="non-finite"):
        Rollout(item_id="a", reward=float("nan"))
    assert Rollout(item_id="a", reward=1.0, step_rewards=[0.5, 0.25]).total_reward == 1.75


# --------------------------------------------------------------------------------------------
# Fits and the `auto` choice
# --------------------------------------------------------------------------------------------


def dense_stats() -> RewardStats:
    """Multi-step tool use: most steps carry a reward, continuous episode scores."""
    per_item = {f"i{n}": 0.3 + 0.05 * (n % 7) for n in range(24)}
    groups = [[0.3, 0.35, 0.5, 0.45], [0.6, 0.6, 0.62, 0.7], [0.2, 0.3, 0.25, 0.2]]
    return reward_stats(per_item, groups=groups, steps_total=200, steps_with_reward=170)


def sparse_binary_stats() -> RewardStats:
    """Short answers checked at the end: 0/1 per item, a third of the groups all 0 or all 1."""
    per_item = {f"i{n}": float(n % 3 == 0) for n in range(30)}
    groups = [[0, 1, 0, 1], [0, 0, 0, 0], [1, 0, 1, 1], [1, 1, 1, 1], [0, 1, 1, 0], [0, 0, 1, 0]]
    return reward_stats(per_item, groups=groups, rollout_seconds=[0.4, 0.6])


def right_skewed_stats() -> RewardStats:
    """Kernel speed-ups: most attempts score little, a rare one scores high."""
    per_item = {f"i{n}": 0.01 * (n % 5) for n in range(40)}
    per_item.update(i40=0.9, i41=1.3)
    groups = [[0.01, 0.02, 0.0, 1.3], [0.03, 0.0, 0.02, 0.04], [0.9, 0.01, 0.0, 0.02]]
    return reward_stats(per_item, groups=groups, rollout_seconds=[3.0])


SHAPES = {"ppo": dense_stats, "grpo": sparse_binary_stats, "entropic": right_skewed_stats}


def registered(*modules: ModuleType) -> SiaPluginManager:
    pm = new_plugin_manager(entrypoints=False)
    for m in modules:
        pm.register_object(m, m.__name__)
    return pm


@pytest.mark.parametrize("expected", list(SHAPES))
def test_auto_picks_the_objective_for_the_reward_shape(expected: str) -> None:
    stats = SHAPES[expected]()
    name, fits, reason = choose_algorithm(stats, registered(*BUILTIN.values()).rl_algorithms())
    assert name == expected, (stats, fits)
    assert {f.name for f in fits} == {"grpo", "ppo", "entropic"}
    assert all(0.0 <= f.score <= 1.0 and f.reason for f in fits)
    assert f"density {stats.step_reward_density:.2f}" in reason
    assert f"skew {stats.skew:+.2f}" in reason
    # a third-party objective installed beside them does not displace the built-in choice
    with_example = registered(*ALL.values()).rl_algorithms()
    assert choose_algorithm(stats, with_example)[0] == expected


def test_rare_binary_successes_stay_with_grpo() -> None:
    """Binary rewards are right-skewed when successes are rare; tilting 0/1 adds little."""
    per_item = {f"i{n}": float(n % 20 == 0) for n in range(40)}
    groups = [[0, 0, 0, 0]] * 6 + [[0, 1, 0, 0], [0, 0, 0, 1], [1, 0, 0, 0], [0, 0, 1, 0]]
    stats = reward_stats(per_item, groups=groups)
    assert stats.binary and stats.skew > 3 and stats.zero_variance_group_share == 0.6
    name, fits, _ = choose_algorithm(stats, registered(*BUILTIN.values()).rl_algorithms())
    assert name == "grpo", fits
    assert "skewed but binary" in next(f for f in fits if f.name == "entropic").reason


def test_fit_reasons_say_why() -> None:
    by_name = {
        name: {
            f.name: f
            for f in choose_algorithm(fn(), registered(*BUILTIN.values()).rl_algorithms())[1]
        }
        for name, fn in SHAPES.items()
    }
    assert "dense step-level rewards" in by_name["ppo"]["ppo"].reason
    assert "zero-variance groups give GRPO no gradient" in by_name["grpo"]["grpo"].reason
    assert "rare high scores" in by_name["entropic"]["entropic"].reason
    assert "flattened by group normalisation" in by_name["entropic"]["grpo"].reason
    assert "better served by a value head" in by_name["ppo"]["grpo"].reason


@PROPS
@given(any_reward_stats)
def test_every_fit_scores_in_the_unit_range(stats: RewardStats) -> None:
    for module in ALL.values():
        spec = spec_of(module)
        fit = resolve(spec.fit)(stats)
        assert fit.name == spec.name and 0.0 <= fit.score <= 1.0


def test_many_zero_variance_groups_weaken_grpo_and_expensive_rollouts_favour_ppo() -> None:
    from sia_rl_grpo.fit import fit as grpo_fit
    from sia_rl_ppo.fit import fit as ppo_fit

    base = sparse_binary_stats()
    worse = attrs.evolve(base, zero_variance_group_share=0.9)
    assert grpo_fit(worse).score < grpo_fit(base).score
    assert "90% zero-variance groups" in grpo_fit(worse).reason
    heavy_tail = attrs.evolve(base, binary=False, skew=3.0)
    assert grpo_fit(heavy_tail).score < grpo_fit(attrs.evolve(heavy_tail, skew=0.0)).score
    costly = attrs.evolve(base, rollout_cost_s=300.0)
    assert ppo_fit(costly).score > ppo_fit(base).score
    assert grpo_fit(costly).score < grpo_fit(base).score


# --------------------------------------------------------------------------------------------
# Packaging: entry points and light imports
# --------------------------------------------------------------------------------------------


def test_objectives_are_discovered_through_entry_points(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIA_LOAD_PLUGINS", ",".join(ALL))
    monkeypatch.setenv("SIA_STRICT_PLUGINS", "1")
    pm = new_plugin_manager()
    algorithms = pm.rl_algorithms()
    assert set(algorithms.names()) == {"grpo", "ppo", "entropic", "reinforce-kl"}
    infos = {i.name: i for i in pm.plugin_infos()}
    assert infos["rl-example"].distribution == "sia-rl-example"
    assert infos["rl-example"].hooks == ("sia_rl_algorithms",)
    assert {infos[k].distribution for k in BUILTIN} == {
        "sia-rl-grpo",
        "sia-rl-ppo",
        "sia-rl-entropic",
    }
    assert choose_algorithm(right_skewed_stats(), algorithms)[0] == "entropic"


def test_plugin_fit_and_objective_modules_import_without_torch() -> None:
    modules = [m.__name__ for m in ALL.values()]
    modules += [spec.fit.partition(":")[0] for spec in map(spec_of, ALL.values())]
    modules += [spec.trainer.partition(":")[0] for spec in map(spec_of, ALL.values())]
    code = (
        "import importlib, json, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        "print(json.dumps(sorted(k for k in ('torch', 'numpy', 'transformers', 'peft', 'trl') "
        "if k in sys.modules)))\n"
    )
    env = {**os.environ, "PYTHONPATH": ""}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == []
