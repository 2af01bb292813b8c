"""The offline Feedback-Agent of sia-backend-local: lever rule and parameter search.

The task model here is the deterministic scripted one (the real llama.cpp model has its own
tests in test_local_server.py); everything else is the real loop.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sia_backend_local.backend import LocalBackend
from sia_backend_local.policy import offline_feedback, stalled_for
from sia_core import hookimpl
from sia_core.contracts.backend import BackendOptions, FeedbackRequest
from sia_core.contracts.config import RunConfig
from sia_core.contracts.records import BackendSpec
from sia_core.loop import Loop
from sia_core.machinery.runstore import RunStore
from sia_core.services.taskdir.params import SpaceError, read_declared, write_params
from sia_core.surface.builtin.scripted import ScriptedTaskModel

SCAFFOLD = '''"""tiny-add with a mode switch."""
import re

PARAMS = {"mode": "llm", "max_tokens": 16, "note": "first try"}
SEARCH_SPACE = {
    "mode": {"choices": ["llm", "compute", "zero"]},
    "max_tokens": {"int": [4, 64], "step": 4},
}


def solve(item, ctx):
    mode = ctx.params["mode"]
    if mode == "compute":
        a, b = map(int, re.findall(r"\\d+", item.input)[:2])
        return a + b
    if mode == "zero":
        return 0
    reply = ctx.llm(item.input, max_tokens=ctx.params["max_tokens"])
    found = re.findall(r"\\d+", reply)
    return int(found[0]) if found else None
'''


def test_read_and_write_params_round_trip() -> None:
    declared = read_declared(SCAFFOLD)
    assert declared.params == {"mode": "llm", "max_tokens": 16, "note": "first try"}
    new = write_params(SCAFFOLD, declared, {**declared.params, "mode": "compute"})
    assert read_declared(new).params["mode"] == "compute"
    assert read_declared(new).space == declared.space
    pairs = zip(SCAFFOLD.splitlines(), new.splitlines(), strict=True)
    changed = [(a, b) for a, b in pairs if a != b]
    assert len(changed) == 1 and changed[0][0].startswith("PARAMS")


@given(
    st.none() | st.booleans() | st.integers() | st.text(max_size=30),
    st.sampled_from(["llm", "compute", "zero"]),
    st.integers(1, 16).map(lambda n: 4 * n),
)
def test_write_params_keeps_a_valid_module(note, mode: str, max_tokens: int) -> None:
    declared = read_declared(SCAFFOLD)
    params = {**declared.params, "note": note, "mode": mode, "max_tokens": max_tokens}
    out = write_params(SCAFFOLD, declared, params)
    ast.parse(out)
    assert read_declared(out).params == params


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("def solve(item, ctx):\n    return 1\n", "declares no PARAMS"),
        ("PARAMS = {'a': 1}\ndef solve(item, ctx):\n    return 1\n", "no SEARCH_SPACE"),
        ("PARAMS = {'a': 1}\nSEARCH_SPACE = {'b': {'int': [1, 2]}}\n", "PARAMS does not define"),
        ("PARAMS = {'a': f(1)}\nSEARCH_SPACE = {}\n", "plain literals"),
        ("PARAMS = {'a': 1}\nSEARCH_SPACE = {'a': {'range': [1, 2]}}\n", "needs 'choices'"),
        ("PARAMS = {'a': 9}\nSEARCH_SPACE = {'a': {'int': [1, 2]}}\n", r"outside \[1, 2\]"),
        ("PARAMS = {'a': 'x'}\nSEARCH_SPACE = {'a': {'choices': ['y']}}\n", "not one of"),
        ("PARAMS = {'a': 1.5}\nSEARCH_SPACE = {'a': {'int': [1, 2]}}\n", "not an int"),
    ],
)
def test_undeclared_space_is_refused_clearly(source: str, message: str) -> None:
    with pytest.raises(SpaceError, match=message):
        read_declared(source)


def _request(
    tmp_path: Path, history: list[dict], blockers: tuple[str, ...] = (), scaffold: str = SCAFFOLD
) -> FeedbackRequest:
    for row in history:
        gdir = tmp_path / f"gen_{row['gen']}"
        gdir.mkdir(exist_ok=True)
        (gdir / "target_agent.py").write_text(row.pop("scaffold", scaffold))
    last = history[-1]["gen"]
    return FeedbackRequest(
        next_gen=last + 1,
        next_gen_dir=tmp_path / f"gen_{last + 1}",
        parent_gen=last,
        parent_gen_dir=tmp_path / f"gen_{last}",
        parent_scaffold=scaffold,
        dev_metrics={},
        context_md="",
        task_md="",
        task_name="t",
        history=tuple(history),
        weights_blockers=blockers,
        seed=3,
    )


def test_stall_pulls_weights_when_possible_and_says_why_when_not(tmp_path: Path) -> None:
    history = [
        {"gen": 1, "dev_score": 0.5, "incumbent": True, "lever": "harness"},
        {"gen": 2, "dev_score": 0.4, "incumbent": False, "lever": "harness"},
        {"gen": 3, "dev_score": 0.3, "incumbent": False, "lever": "harness"},
    ]
    assert stalled_for(tuple(history)) == 2
    out = offline_feedback(_request(tmp_path, [dict(r) for r in history]))
    assert out.decision.lever == "weights" and out.scaffold is None
    assert "not beaten the incumbent for 2" in out.decision.rationale
    blocked = offline_feedback(
        _request(tmp_path, [dict(r) for r in history], blockers=("no RL algorithm plugin",))
    )
    assert blocked.decision.lever == "harness" and blocked.scaffold is not None
    assert "weights would be next, but no RL algorithm plugin" in blocked.decision.notes[0]


def test_under_lever_harness_a_stall_keeps_searching_the_scaffold(tmp_path: Path) -> None:
    """--lever harness: the stall that would pull weights proposes the next search point
    instead (proposing weights there became a harness generation re-running its parent)."""
    history = [
        {"gen": 1, "dev_score": 0.5, "incumbent": True, "lever": "harness"},
        {"gen": 2, "dev_score": 0.4, "incumbent": False, "lever": "harness"},
        {"gen": 3, "dev_score": 0.3, "incumbent": False, "lever": "harness"},
    ]
    request = attrs.evolve(_request(tmp_path, [dict(r) for r in history]), lever_override="harness")
    out = offline_feedback(request)
    assert out.decision.lever == "harness"
    assert out.scaffold is not None and out.scaffold != SCAFFOLD
    forced = attrs.evolve(request, lever_override="weights")
    assert offline_feedback(forced).decision.lever == "weights"


def test_search_is_deterministic_and_never_repeats_a_measured_point(tmp_path: Path) -> None:
    history = [{"gen": 1, "dev_score": 0.1, "incumbent": True, "lever": "harness"}]
    a = offline_feedback(_request(tmp_path, [dict(r) for r in history]))
    b = offline_feedback(_request(tmp_path, [dict(r) for r in history]))
    assert a.scaffold == b.scaffold and a.improvement_md == b.improvement_md
    proposed = read_declared(a.scaffold).params
    assert {k: proposed[k] for k in ("mode", "max_tokens")} != {"mode": "llm", "max_tokens": 16}
    assert proposed["note"] == "first try"  # undeclared settings stay as they are
    assert "## What changed" in a.improvement_md and "optuna TPE" in a.improvement_md


def test_no_space_means_stop(tmp_path: Path) -> None:
    plain = "def solve(item, ctx):\n    return 1\n"
    out = offline_feedback(
        _request(tmp_path, [{"gen": 1, "dev_score": 0.1, "incumbent": True}], scaffold=plain)
    )
    assert out.decision.lever == "stop" and "declares no PARAMS" in out.decision.rationale


class ScriptedModelLocalBackend(LocalBackend):
    """The local backend's roles with the deterministic scripted task model."""

    def task_model(self):
        if self._model is None:
            self._model = ScriptedTaskModel({"name": "scripted", "default": "I think 7"})
        return self._model

    def close(self) -> None:
        self._model = None


class Plugin:
    @hookimpl
    def sia_backends(self):
        yield BackendSpec(name="local-scripted", factory=f"{__name__}:ScriptedModelLocalBackend")


def run(sia_pm, task_dir: Path, runs: Path, max_gen: int):
    store = RunStore.open(runs, "1", create=True)
    config = RunConfig(
        task="tiny-add",
        task_dir=str(task_dir),
        max_gen=max_gen,
        backend="local-scripted",
        sandbox="process",
        seed=0,
    )
    return store, Loop(config, store, sia_pm).run()


def test_offline_loop_improves_over_the_reference(sia_pm, register_plugin, tiny_task_dir, tmp_path):
    register_plugin(Plugin(), "local-scripted")
    (tiny_task_dir / "reference/reference_target_agent.py").write_text(SCAFFOLD)
    store, rows = run(sia_pm, tiny_task_dir, tmp_path / "runs", max_gen=5)
    assert rows[0].dev is not None and rows[0].dev < 0.2  # the model always says 7
    best = max(r.dev for r in rows)
    assert best == 1.0 and best > rows[0].dev
    g1 = json.loads((store.root / "gen_1/decision.json").read_text())
    assert g1["source"] == "meta" and "reference scaffold" in g1["rationale"]
    for r in rows[1:]:
        diff = (store.root / f"gen_{r.gen}/diff.patch").read_text()
        assert diff.count("\n+PARAMS") == 1  # each generation changed the declared settings only
    # the policy is a pure function of the history: a second run proposes the same scaffolds
    store2, _ = run(sia_pm, tiny_task_dir, tmp_path / "runs2", max_gen=5)
    for r in rows:
        a = (store.root / f"gen_{r.gen}/target_agent.py").read_text()
        assert a == (store2.root / f"gen_{r.gen}/target_agent.py").read_text()


def test_backend_options_are_validated() -> None:
    with pytest.raises(Exception, match="local backend"):
        LocalBackend(BackendOptions(settings={"stall_generations": "two"}))
    with pytest.raises(
        Exception,
        match=r"unknown --backend-opt for the local backend: stall_gens; known: flash_attn, gguf_outtype, n_ctx",
    ):
        LocalBackend(BackendOptions(settings={"stall_gens": "2"}))


def test_write_params_changes_only_the_changed_values_and_keeps_comments() -> None:
    source = 'PARAMS = {\n    "k": 5,  # candidates\n    "mode": "a",\n}\nSEARCH_SPACE = {"k": {"int": [1, 9]}}\n'
    declared = read_declared(source)
    out = write_params(source, declared, {"k": 7, "mode": "a"})
    assert out == source.replace('"k": 5,', '"k": 7,')
    assert write_params(source, declared, {"k": 5, "mode": "b"}).count('"b"') == 1
    assert write_params(source, declared, dict(declared.params)) == source
