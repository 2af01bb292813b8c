"""Every record round-trips through JSON unchanged."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from sia_core.contracts import records as r

text = st.text(max_size=20)
json_scalar = st.none() | st.booleans() | st.integers(-1000, 1000) | text
json_value = st.recursive(
    json_scalar,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
    max_leaves=8,
)
finite = st.floats(allow_nan=False, allow_infinity=False, width=32)

score = st.builds(
    r.ScoreResult,
    split=st.sampled_from(["dev", "test"]),
    score=finite,
    n_items=st.integers(0, 100),
    n_answered=st.integers(0, 100),
    per_item=st.dictionaries(text, finite, max_size=4),
    extra=st.dictionaries(text, json_value, max_size=3),
)
stats = st.builds(r.RewardStats, mean=finite, std=finite, skew=finite)
fit = st.builds(r.AlgorithmFit, name=text, score=finite, reason=text)
STRATEGIES = {
    r.BackendSpec: st.builds(
        r.BackendSpec, name=text, factory=text, roles=st.lists(text).map(tuple)
    ),
    r.SandboxSpec: st.builds(r.SandboxSpec, name=text, factory=text),
    r.AlgorithmSpec: st.builds(r.AlgorithmSpec, name=text, fit=text, trainer=text),
    r.ExecutorSpec: st.builds(r.ExecutorSpec, name=text, factory=text),
    r.RunnerSpec: st.builds(
        r.RunnerSpec, name=text, factory=text, settings=st.lists(text, max_size=3).map(tuple)
    ),
    r.TaskSpec: st.builds(r.TaskSpec, name=text, path=text),
    r.Item: st.builds(r.Item, id=text, input=json_value),
    r.TrajectoryStep: st.builds(r.TrajectoryStep, kind=text, content=json_value, t=finite),
    r.ItemResult: st.builds(
        r.ItemResult,
        item_id=text,
        split=text,
        answer=json_value,
        trajectory=st.lists(
            st.builds(r.TrajectoryStep, kind=text, content=json_value, t=finite), max_size=3
        ).map(tuple),
        node=text,
        reruns=st.lists(text, max_size=2).map(tuple),
    ),
    r.ModelCall: st.builds(
        r.ModelCall,
        call_id=st.integers(0, 10**6),
        item_id=st.none() | text,
        model=text,
        request=st.dictionaries(text, json_value, max_size=3),
        completion=st.none() | text,
        latency_s=finite,
        cost_usd=finite,
    ),
    r.ScoreResult: score,
    r.RewardStats: stats,
    r.AlgorithmFit: fit,
    r.Decision: st.builds(
        r.Decision,
        lever=st.sampled_from(r.LEVERS),
        rationale=text,
        parent_gen=st.none() | st.integers(1, 50),
        rl_algorithm=st.none() | text,
        algorithm_fits=st.lists(fit, max_size=3).map(tuple),
        reward_stats=st.none() | stats,
        notes=st.lists(text, max_size=3).map(tuple),
    ),
    r.Metrics: st.builds(
        r.Metrics,
        gen=st.integers(1, 50),
        dev=score,
        test=st.none() | score,
        seconds=finite,
        cost_usd=finite,
    ),
    r.GenerationNode: st.builds(
        r.GenerationNode,
        gen=st.integers(1, 50),
        parent_gen=st.none() | st.integers(1, 50),
        lever=st.sampled_from(r.LEVERS),
        scaffold_sha256=text,
        dev_score=st.none() | finite,
        test_score=st.none() | finite,
    ),
    r.TrainJob: st.builds(
        r.TrainJob,
        job_id=text,
        algorithm=text,
        trainer=text,
        task_dir=text,
        scaffold=text,
        base_model=text,
        out_dir=text,
        init_adapter=st.none() | text,
        settings=st.dictionaries(text, json_value, max_size=3),
    ),
    r.TrainResult: st.builds(
        r.TrainResult,
        status=st.sampled_from(["ok", "failed"]),
        adapter=st.none() | text,
        metrics=st.dictionaries(text, json_value, max_size=3),
    ),
    r.Event: st.builds(
        r.Event,
        type=text,
        run_id=text,
        seq=st.integers(0, 10**6),
        gen=st.none() | st.integers(1, 50),
        data=st.dictionaries(text, json_value, max_size=4),
        ts=finite,
    ),
}


@given(
    st.sampled_from(sorted(STRATEGIES, key=lambda c: c.__name__)).flatmap(
        lambda cls: st.tuples(st.just(cls), STRATEGIES[cls])
    )
)
def test_json_round_trip(case: tuple[type, object]) -> None:
    cls, record = case
    text_form = r.to_json(record)
    json.loads(text_form)  # valid JSON
    assert r.from_json(cls, text_form) == record


def test_records_are_frozen() -> None:
    spec = r.TaskSpec(name="a", path="/x")
    try:
        spec.name = "b"  # type: ignore[misc]
    except AttributeError:
        return
    raise AssertionError("records must be immutable")


def test_every_record_class_is_covered() -> None:
    import attrs

    classes = {
        obj
        for obj in vars(r).values()
        if isinstance(obj, type) and attrs.has(obj) and obj.__module__ == r.__name__
    }
    assert classes == set(STRATEGIES), classes ^ set(STRATEGIES)


def test_atomic_writes_make_ordinary_files(tmp_path) -> None:
    import os
    import stat

    from sia_core.machinery.runstore import atomic_write_text

    path = tmp_path / "a" / "b.txt"
    atomic_write_text(path, "x")
    old = os.umask(0)
    os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~old
    assert path.read_text() == "x" and [p.name for p in path.parent.iterdir()] == ["b.txt"]


def test_backend_on_off_settings_are_read_one_way() -> None:
    import pytest

    from sia_core.contracts.backend import BackendOptions
    from sia_core.contracts.errors import SiaError

    for text, value in (("1", True), (" Yes", True), ("on", True), ("0", False), ("OFF", False)):
        assert BackendOptions(settings={"stream": text}).flag("stream", not value) is value
    assert BackendOptions().flag("stream", True) is True
    assert BackendOptions().flag("stream", False) is False
    for bad in ("maybe", ""):
        with pytest.raises(SiaError, match=f"--backend-opt stream={bad!r}: use 1 or 0") as info:
            BackendOptions(settings={"stream": bad}).flag("stream", True)
        assert "\n" not in str(info.value)
