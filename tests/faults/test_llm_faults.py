"""LLM backend faults in the loop, through real HTTP: a protocol-faithful OpenAI-compatible stub
on loopback stands for the task model behind sia's real gateway, and for the Meta/Feedback model
of a test backend (``data/stub_backend.py``), in a real ``sia run`` process.

Faults follow the request's content, so a resumed run meets the same faults as an
uninterrupted one.
"""

from __future__ import annotations

import json
import re
import signal
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sia_core.testing.openai_stub import OpenAIStub, echo_last_user
from tests.core.test_plugins import make_fake_dist

from .common import final_state, last_line, sia

DATA = Path(__file__).parent / "data"
CORE_DATA = Path(__file__).parents[1] / "core/data"

#: dev (and one test) question -> the fault the task model's server shows for it
TASK_FAULTS = {
    "95 + 80": "status:429",
    "99 + 4": "status:500",
    "28 + 7": "hang",  # the client's timeout is 1 s
    "55 + 69": "empty",
    "62 + 25": "prose",
    "46 + 27": "drop",
    "98 + 95": "garbage",
    "83 + 96": "null",
    "42 + 74": "status:503",
}

#: what agent_execution.json records for each faulted item: (status, error pattern)
RECORDED = {
    "status:429": (
        "error",
        r"LLMError: model gateway returned HTTP 429 .*upstream error 429: stub",
    ),
    "status:500": (
        "error",
        r"LLMError: model gateway returned HTTP 502 .*upstream error 500: stub",
    ),
    "hang": ("error", r"HTTP 504|did not answer within 1 s"),
    "drop": ("error", r"HTTP 502 .*cannot reach .*RemoteDisconnected"),
    "garbage": ("error", r"HTTP 502 .*invalid JSON from http://127\.0\.0\.1"),
    "empty": ("ok", r"^$"),  # a reply without a number: the answer is None, scored wrong
    "null": ("ok", r"^$"),
    "prose": ("ok", r"^$"),
}


def _question(body: dict[str, Any]) -> str:
    match = re.search(r"(\d+ \+ \d+)", echo_last_user(body))
    return match.group(1) if match else ""


def task_reply(body: dict[str, Any]) -> str:
    question = _question(body)
    if TASK_FAULTS.get(question) == "prose":
        return "I would rather not do arithmetic today."
    a, b = map(int, question.split(" + ")) if question else (0, 0)
    return str(a + b)


def task_fault(body: dict[str, Any]) -> str | None:
    fault = TASK_FAULTS.get(_question(body))
    return None if fault in (None, "prose") else fault


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    site = tmp_path_factory.mktemp("site")
    source = (DATA / "stub_backend.py").read_text()
    make_fake_dist(
        site, "sia-test-stub-backend", "test-stub-backend", "sia_test_stub_backend", source
    )
    killer = (CORE_DATA / "killer_plugin.py").read_text()
    make_fake_dist(site, "sia-test-killer", "test-killer", "sia_test_killer", killer)
    return site


@pytest.fixture(scope="module")
def task_stub() -> Iterator[OpenAIStub]:
    with OpenAIStub(reply=task_reply, fault=task_fault, hang_s=5) as stub:
        yield stub


def args(runs: Path, url: str, max_gen: int, meta_url: str | None = None) -> list[str]:
    out = ["--task", "tiny-add", "--max_gen", str(max_gen), "--run_id", "1"]
    out += ["--backend", "stub-http", "--backend-opt", f"url={url}"]
    out += ["--backend-opt", "timeout_s=1", "--runs-dir", str(runs), "--test-eval", "every"]
    if meta_url:
        out += ["--backend-opt", f"meta_url={meta_url}"]
    return out


def with_errors(root: Path) -> dict[str, Any]:
    state = final_state(root)
    for g in sorted(root.glob("gen_*")):
        items = json.loads((g / "agent_execution.json").read_text())["items"]
        # the first line (the traceback below it names this run's folder)
        state[g.name]["errors"] = {i["item_id"]: i["error"].split("\n")[0] for i in items}
    return state


@pytest.fixture(scope="module")
def faulty_run(site: Path, task_stub: OpenAIStub, tmp_path_factory: pytest.TempPathFactory) -> Path:
    runs = tmp_path_factory.mktemp("faulty") / "runs"
    proc = sia(args(runs, task_stub.url, max_gen=2), env={"PYTHONPATH": str(site)})
    assert proc.returncode == 0, proc.stderr
    return runs / "run_1"


def questions() -> dict[str, str]:
    """item id -> its ``a + b`` question, from the tiny task's public data."""
    public = Path(__file__).parents[2] / "sia_core/src/sia_core/testing/tiny_task/data/public"
    out = {}
    for split in ("dev", "test"):
        for line in (public / f"{split}.jsonl").read_text().splitlines():
            row = json.loads(line)
            out[row["id"]] = _question({"messages": [{"role": "user", "content": row["input"]}]})
    return out


@pytest.mark.slow
def test_task_model_faults_are_recorded_and_scored_as_wrong(
    faulty_run: Path, task_stub: OpenAIStub
) -> None:
    assert {fault for _, fault in task_stub.faults} >= set(TASK_FAULTS.values()) - {"prose"}
    asked = questions()
    for gen in (1, 2):  # the loop went on past the faulty generation
        gdir = faulty_run / f"gen_{gen}"
        execution = json.loads((gdir / "agent_execution.json").read_text())
        metrics = json.loads((gdir / "metrics.json").read_text())
        calls = {c["item_id"]: c for c in execution["calls"]}
        assert len(execution["items"]) == 12
        for item in execution["items"]:
            question = asked[item["item_id"]]
            fault = TASK_FAULTS.get(question)
            if fault is None:
                assert (item["status"], item["answer"]) == ("ok", eval(question))
                continue
            status, pattern = RECORDED[fault]
            assert (item["status"], item["answer"]) == (status, None), (fault, item)
            assert re.search(pattern, item["error"]), (fault, item["error"])
            call = calls[item["item_id"]]  # the gateway's record of the model call
            if status == "error":
                assert call["status"] == "error" and call["error"], call
            else:
                assert call["status"] == "ok", call
                assert call["completion"] == {"empty": "", "null": None}.get(
                    fault, "I would rather not do arithmetic today."
                )
        # every item counts: the 8 faulted ones are wrong, none leaves the denominator
        assert metrics["dev"]["n_items"] == 12 and metrics["dev"]["n_answered"] == 4
        assert metrics["dev"]["score"] == pytest.approx(4 / 12)
        assert metrics["n_errors"] == 6  # 5 dev errors + the test item's 503
    assert json.loads((faulty_run / "run.json").read_text())["status"] == "finished"


@pytest.mark.slow
def test_task_model_faults_then_sigkill_resume_equals_uninterrupted(
    faulty_run: Path, site: Path, task_stub: OpenAIStub, tmp_path: Path
) -> None:
    runs = tmp_path / "runs"
    env = {"PYTHONPATH": str(site)}
    killed = sia(
        args(runs, task_stub.url, max_gen=2), env={**env, "SIA_TEST_KILL_AT": "item_finished:2:8"}
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    resumed = sia(["resume", "1", "--runs-dir", str(runs)], env=env)
    assert resumed.returncode == 0, resumed.stderr
    assert with_errors(runs / "run_1") == with_errors(faulty_run)


# --------------------------------------------------------------------------------------------
# the Meta/Feedback model
# --------------------------------------------------------------------------------------------

GOOD = "def solve(item, ctx):\n    return sum(int(x) for x in item.input[8:-1].split(' + '))\n"

#: generation -> what the Meta (1) or Feedback model's server does when asked for it
META = {
    1: "hang",
    2: "empty",
    3: "prose",
    4: "syntax",
    5: "status:500",
    6: "garbage",
    7: "good",
}


def _gen(body: dict[str, Any]) -> int:
    text = echo_last_user(body)
    match = re.search(r"generation (\d+)", text)
    return int(match.group(1)) if match else 1


def meta_reply(body: dict[str, Any]) -> str:
    kind = META[_gen(body)]
    if kind == "prose":
        return "I looked at the scaffold and I think it is fine as it is."
    if kind == "syntax":
        return "Here you go:\n```python\ndef solve(item, ctx)\n    return 1\n```\n"
    if kind == "good":
        return f"```python\n{GOOD}```"
    return ""


def meta_fault(body: dict[str, Any]) -> str | None:
    kind = META[_gen(body)]
    return kind if kind in ("hang", "empty", "status:500", "garbage") else None


#: generation -> (what the decision's rationale/notes must say, the scaffold is the parent's)
META_RECORDED = {
    1: (
        r"the meta agent failed \(UpstreamError: upstream error 504: .* did not answer within 1 s\)",
    ),
    2: (r"the proposed scaffold is empty; kept the parent's",),
    3: (r"the proposed scaffold has a syntax error \(line 1: ",),
    4: (r"the proposed scaffold has a syntax error \(line 1: expected ':'\)",),
    5: (
        r"the feedback agent failed \(UpstreamError: upstream error 500: stub: injected status:500\)",
    ),
    6: (r"the feedback agent failed \(UpstreamError: upstream error 502: invalid JSON",),
}


@pytest.mark.slow
def test_meta_and_feedback_model_faults(site: Path, tmp_path: Path) -> None:
    reference = (
        Path(__file__).parents[2]
        / "sia_core/src/sia_core/testing/tiny_task/reference"
        / "reference_target_agent.py"
    ).read_text()
    env = {"PYTHONPATH": str(site)}
    with (
        OpenAIStub(reply=lambda body: str(eval(_question(body)))) as task,
        OpenAIStub(reply=meta_reply, fault=meta_fault, hang_s=5) as meta,
    ):
        runs = tmp_path / "runs"
        proc = sia(args(runs, task.url, max_gen=7, meta_url=meta.url), env=env)
        assert proc.returncode == 0, proc.stderr
        assert [fault for _, fault in meta.faults] == ["hang", "empty", "status:500", "garbage"]
    root = runs / "run_1"
    for gen, (pattern,) in META_RECORDED.items():
        gdir = root / f"gen_{gen}"
        decision = json.loads((gdir / "decision.json").read_text())
        said = " ".join([decision["rationale"], *decision["notes"]])
        assert re.search(pattern, said), (gen, said)
        assert re.search(pattern, (gdir / "improvement.md").read_text()), gen
        # the parent's scaffold (gen 1: the reference) ran instead, and scored as the parent did
        assert (gdir / "target_agent.py").read_text() == reference, gen
        assert json.loads((gdir / "metrics.json").read_text())["dev"]["score"] == 1.0
    for gen in (2, 3, 4):
        assert (root / f"gen_{gen}/rejected_target_agent.py").exists()
    assert (root / "gen_7/target_agent.py").read_text() == GOOD  # the loop went on to a good one
    assert json.loads((root / "run.json").read_text())["status"] == "finished"


# --------------------------------------------------------------------------------------------
# a task model that is down
# --------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
def test_task_model_down_stops_the_run_and_resume_finishes_it(site: Path, tmp_path: Path) -> None:
    """Every call failing upstream is a broken server, not a bad scaffold: the run stops with one
    line before scoring zeros; once the server is up, resume equals an uninterrupted run."""
    env = {"PYTHONPATH": str(site)}
    correct = lambda body: str(eval(_question(body) or "0"))  # noqa: E731
    with OpenAIStub(reply=correct) as up:
        ref = sia(args(tmp_path / "ref", up.url, max_gen=2), env=env)
        assert ref.returncode == 0, ref.stderr
    port = free_port()
    runs = tmp_path / "runs"
    down = sia(args(runs, f"http://127.0.0.1:{port}/v1", max_gen=2), env=env)
    assert down.returncode == 1 and "Traceback" not in down.stderr
    assert last_line(down.stderr).startswith(
        "sia: error: generation 1: all 24 task-model calls failed (task model stub-task: "
        f"upstream error 502: cannot reach http://127.0.0.1:{port}/v1: ConnectionRefusedError"
    )
    assert last_line(down.stderr).endswith("fix the task model's server, then `sia resume 1`")
    assert not (runs / "run_1/gen_1/metrics.json").exists(), "nothing was scored"
    with OpenAIStub(reply=correct, port=port):
        resumed = sia(["resume", "1", "--runs-dir", str(runs)], env=env)
    assert resumed.returncode == 0, resumed.stderr
    assert final_state(runs / "run_1") == final_state(tmp_path / "ref/run_1")
