"""SIGKILL a real ``sia`` process while a model request is in flight, then resume.

The Meta, Feedback and task models sit behind OpenAI-compatible stubs on loopback (the Meta and
Feedback roles of the test backend in ``data/stub_backend.py``; the task model behind sia's real
gateway). A trap in the stub holds the first matching request open and tells the test, which
then SIGKILLs the process: the kill lands inside the Meta step, the Feedback step or the
scaffold run, not at a step boundary (those are tests/core/test_resume.py). ``sia resume``
must then equal an uninterrupted run, and nothing of the killed run may be left running.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sia_core.testing.openai_stub import OpenAIStub, echo_last_user
from tests.core.test_plugins import make_fake_dist
from tests.hostile.harness import still_running

from .common import final_state, sia
from .test_llm_faults import GOOD, _question, args

DATA = Path(__file__).parent / "data"


class Trap:
    """A stub fault function: holds the first request matching ``pattern`` open ("hang")."""

    def __init__(self) -> None:
        self.pattern: re.Pattern[str] | None = None
        self.hit = threading.Event()

    def arm(self, pattern: str) -> None:
        self.pattern, self.hit = re.compile(pattern), threading.Event()

    def __call__(self, body: dict[str, Any]) -> str | None:
        if self.pattern is not None and self.pattern.search(echo_last_user(body)):
            self.pattern = None
            self.hit.set()
            return "hang"
        return None


def meta_reply(body: dict[str, Any]) -> str:
    """Gen 1: the reference scaffold (from the prompt); later gens: the calculator."""
    text = echo_last_user(body)
    if "generation 1's" in text:
        return "```python\n" + text.split("\n\n", 1)[1] + "\n```"
    return f"```python\n{GOOD}```"


@pytest.fixture(scope="module")
def stubs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    site = tmp_path_factory.mktemp("site")
    source = (DATA / "stub_backend.py").read_text()
    make_fake_dist(
        site, "sia-test-stub-backend", "test-stub-backend", "sia_test_stub_backend", source
    )
    meta_trap, task_trap = Trap(), Trap()
    with (
        OpenAIStub(reply=meta_reply, fault=meta_trap, hang_s=120) as meta,
        OpenAIStub(reply=lambda b: str(eval(_question(b) or "0")), fault=task_trap) as task,
    ):
        base = tmp_path_factory.mktemp("ref")
        cmd = args(base / "runs", task.url, max_gen=3, meta_url=meta.url)
        env = {"PYTHONPATH": str(site)}
        proc = sia([*cmd[:-2], "--backend-opt", "timeout_s=300", *cmd[-2:]], env=env)
        assert proc.returncode == 0, proc.stderr
        yield {
            "env": env,
            "meta": meta,
            "task": task,
            "traps": {"meta": meta_trap, "task": task_trap},
            "expected": final_state(base / "runs/run_1"),
        }


@pytest.mark.slow
@pytest.mark.parametrize(
    ("model", "pattern"),
    [
        ("meta", r"generation 1's"),  # the Meta step of generation 1
        ("meta", r"generation 3\b"),  # the Feedback step making generation 3
        ("task", r"97 \+ 30"),  # a task-model call in generation 1's scaffold run
    ],
    ids=["meta", "feedback", "scaffold-run"],
)
def test_sigkill_with_a_request_in_flight_then_resume(
    stubs: dict[str, Any], model: str, pattern: str, tmp_path: Path
) -> None:
    runs = tmp_path / "runs"
    cmd = args(runs, stubs["task"].url, max_gen=3, meta_url=stubs["meta"].url)
    cmd = [*cmd[:-2], "--backend-opt", "timeout_s=300", *cmd[-2:]]
    trap = stubs["traps"][model]
    trap.arm(pattern)
    with open(tmp_path / "stderr", "w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "sia_core.surface.cli", *cmd],
            env={**os.environ, **stubs["env"]},
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
        try:
            assert trap.hit.wait(120), (tmp_path / "stderr").read_text()
        finally:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(30)
    assert proc.returncode == -signal.SIGKILL
    if model == "task":
        assert still_running(str(runs)) == {}, "a scaffold worker outlived the orchestrator"
    resumed = sia(["resume", "1", "--runs-dir", str(runs)], env=stubs["env"])
    assert resumed.returncode == 0, resumed.stderr
    assert final_state(runs / "run_1") == stubs["expected"]
