"""The gate's noise rule (sia_core.services.gate_rule): a paired per-item gain must beat
1.645 x its standard error; ``--gate-margin`` replaces the rule. Unit cases, then the real loop."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sia_core.contracts.records import ScoreResult
from sia_core.services.gate_rule import NOISE_Z, judge

from .test_loop import run_loop, write_script


def scores(values: list[float]) -> ScoreResult:
    per_item = {f"i{n}": v for n, v in enumerate(values)}
    return ScoreResult(
        split="dev",
        score=sum(values) / len(values),
        n_items=len(values),
        n_answered=len(values),
        per_item=per_item,
    )


def test_a_gain_within_noise_is_kept_out_and_one_beyond_it_accepted() -> None:
    base = scores([0.0] * 100)
    five = judge(scores([1.0] * 5 + [0.0] * 95), base, 1)  # +0.05, SE 0.022: bar 0.036
    assert five.rule == "noise" and five.n_paired == 100
    assert five.accepted is True and five.paired_gain == pytest.approx(0.05)
    assert five.noise_bar == pytest.approx(NOISE_Z * 0.2190 / 10, rel=1e-3)
    noisy = judge(scores([1.0] * 10 + [0.0] * 90), scores([0.0] * 8 + [1.0] * 2 + [0.0] * 90), 1)
    # +0.08 in score, but 8 items won and 2 lost (paired): gain 0.08 vs bar 0.052: accepted
    assert noisy.accepted
    one_item = judge(scores([1.0] + [0.0] * 99), base, 1)  # one item of 100
    assert not one_item.accepted and "within the noise bar" in one_item.reason
    swapped = judge(scores([1.0] * 3 + [0.0] * 97), scores([0.0] * 3 + [1.0] * 2 + [0.0] * 95), 1)
    assert not swapped.accepted  # +0.01 from 3 wins and 2 losses


def test_a_tie_and_a_loss_are_kept_out() -> None:
    same = scores([1.0, 0.0, 1.0, 0.0])
    assert not judge(same, same, 1).accepted  # gain 0, bar 0
    assert not judge(scores([0.0] * 4), scores([1.0] * 4), 1).accepted


def test_minimize_reverses_the_sign() -> None:
    lower = scores([0.1] * 20)
    higher = scores([0.5] * 20)
    assert judge(lower, higher, 1, maximize=False).accepted
    assert not judge(higher, lower, 1, maximize=False).accepted


def test_an_explicit_margin_replaces_the_rule_and_unpaired_scores_fall_back() -> None:
    base = scores([0.0] * 100)
    one_item = scores([1.0] + [0.0] * 99)
    verdict = judge(one_item, base, 3, margin=0.0)
    assert verdict.accepted and verdict.rule == "margin" and "--gate-margin 0.0" in verdict.reason
    program = ScoreResult(split="dev", score=0.7, n_items=1, n_answered=1)  # no per-item scores
    plain = judge(program, ScoreResult(split="dev", score=0.6, n_items=1, n_answered=1), 3)
    assert plain.accepted and plain.rule == "plain" and "no per-item scores" in plain.reason


ONE_RIGHT = """import re


def solve(item, ctx):
    a, b = map(int, re.findall(r"\\d+", item["input"])[:2])
    return a + b if "95 + 80" in item["input"] else 0
"""


def test_the_loop_keeps_a_one_item_gain_out_and_takes_a_real_one(
    sia_pm, tiny_task_dir: Path, tmp_path: Path
) -> None:
    script = {
        "meta": {"scaffold": "zero_scaffold.py"},
        "feedback": {
            "2": {"lever": "harness", "scaffold": "one_right_scaffold.py", "rationale": "one"},
            "3": {"lever": "harness", "scaffold": "calc_scaffold.py", "rationale": "all"},
            "4": {"lever": "stop", "rationale": "done"},
        },
        "task_model": {"name": "scripted-echo"},
    }
    path = write_script(tmp_path, script)
    (path.parent / "one_right_scaffold.py").write_text(ONE_RIGHT)
    store, _ = run_loop(sia_pm, tiny_task_dir, path, tmp_path / "runs", max_gen=3)
    gates = [
        json.loads(line)["data"]
        for line in (store.root / "events.jsonl").read_text().splitlines()
        if '"step": "gate"' in line
    ]
    assert [g["accepted"] for g in gates] == [True, False, True]
    assert gates[1]["rule"]["paired_gain"] == pytest.approx(1 / 12)
    assert gates[1]["rule"]["noise_bar"] > 1 / 12 and "within the noise bar" in gates[1]["reason"]
    assert gates[2]["rule"]["paired_gain"] == pytest.approx(1.0) and gates[2]["incumbent"] == 3


def test_the_weights_lever_line_says_when_and_why(tmp_path: Path) -> None:
    from sia_core.machinery.runstore import RunStore
    from sia_core.services.summary import weights_lever_line

    store = RunStore.open(tmp_path, "1", create=True)
    decisions = {
        1: {"lever": "harness", "source": "meta", "rationale": "reference"},
        2: {"lever": "harness", "source": "feedback", "rationale": "search", "notes": []},
        3: {
            "lever": "harness",
            "source": "feedback",
            "rationale": "search",
            "notes": ["weights would be next, but the task model cannot be trained"],
        },
    }
    for gen, d in decisions.items():
        store.write_json(store.gen_dir(gen) / "decision.json", d)
    line = weights_lever_line(store)
    assert line == (
        "weights lever: not pulled: weights would be next, but the task model cannot be trained"
    )
    store.write_json(
        store.gen_dir(4) / "decision.json",
        {"lever": "weights", "source": "feedback", "rationale": "stalled for 2 generations"},
    )
    assert weights_lever_line(store) == (
        "weights lever: pulled in gen 4; first because: stalled for 2 generations"
    )
