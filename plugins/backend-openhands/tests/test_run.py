"""``sia --backend openhands`` end to end: the CLI in a subprocess, the agent's LLM and the task
model (a litellm model string) the scripted stub on loopback; and the plugin stays lazy. (The
real local model is the task model of the conformance suite and of the lawbench run in the
docs.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from oh_support import IMPROVED

from sia_core.testing.openai_stub import OpenAIStub


def sia(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    return subprocess.run(
        [sys.executable, "-m", "sia_core.surface.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )


@pytest.mark.slow
def test_two_generations_through_the_cli(stub: OpenAIStub, tmp_path: Path) -> None:
    """Gen 1 and gen 2 are made by the OpenHands agent; each generation folder holds the scaffold,
    the decision, improvement.md and the agent's full transcript."""
    runs = tmp_path / "runs"
    proc = sia(
        "--task",
        "tiny-add",
        "--backend",
        "openhands",
        "--max_gen",
        "2",
        "--meta_model",
        "openai/stub-model",
        "--backend-opt",
        f"base_url={stub.url}",
        "--task_model",
        "openai/stub-model",
        "--backend-opt",
        f"task_base_url={stub.url}",
        "--backend-opt",
        "native_tool_calling=false",
        "--backend-opt",
        "max_turns=4",
        "--runs-dir",
        str(runs),
        "--run_id",
        "1",
        "--parallel",
        "1",
        "--sandbox",
        "process",
        "--test-eval",
        "none",
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    run = runs / "run_1"
    # OpenHands' own log lines and banner stay out of sia's output, in the run folder
    output = proc.stdout + proc.stderr
    assert "OpenHands SDK v" not in output and "openhands.sdk" not in output
    assert "openhands.sdk" in (run / "openhands.log").read_text()
    for gen in (1, 2):
        gdir = run / f"gen_{gen}"
        assert (gdir / "target_agent.py").read_text() == IMPROVED
        decision = json.loads((gdir / "decision.json").read_text())
        assert decision["rationale"] == "the instruction now names the operation and the format"
        assert "Clearer instruction" in (gdir / "improvement.md").read_text()
        transcript = json.loads((gdir / "agent_transcript.json").read_text())
        kinds = [r["event"]["kind"] for r in transcript if r["type"] == "openhands_event"]
        assert kinds.count("ActionEvent") == 2 and "SystemPromptEvent" in kinds
        assert transcript[-1]["stop"] == "decided"
    assert "+" in (run / "gen_1" / "diff.patch").read_text()
    # gen 2's parent is gen 1's improved scaffold: unchanged, so gen 2's diff is empty
    assert (run / "gen_2" / "diff.patch").read_text().strip() == ""
    sent = [json.dumps(b) for b in stub.requests]
    assert any("You are the Feedback-Agent" in b for b in sent)
    task_calls = [b for b in sent if "of sia, a framework" not in b]
    assert task_calls, "the scaffold's calls went to the litellm task model"
    metrics = json.loads((run / "gen_1" / "metrics.json").read_text())
    assert metrics["llm_calls"] >= 1
    assert "Reference scaffold for tiny-add" in json.dumps(stub.requests[0])


def test_plugin_is_listed_and_imports_nothing_heavy() -> None:
    code = (
        "import sys; from sia_core.machinery.plugins import new_plugin_manager; "
        "pm = new_plugin_manager(); b = pm.backends().get('openhands'); print(b.factory); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('openhands', 'litellm')))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    factory, modules = proc.stdout.strip().splitlines()
    assert factory == "sia_backend_openhands.backend:OpenHandsBackend"
    assert modules == "[]"
