"""The openhands backend over real HTTP: OpenHands' agent loop against sia's OpenAI stub
(scripted tool calls in OpenHands' prompt-mocked format) and against the real local model."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from oh_support import IMPROVED, REFERENCE, TASK_MD, Script, all_text, fn_call

from sia_backend_local.llama_server import LlamaServer
from sia_backend_openhands.backend import OpenHandsBackend
from sia_core.contracts.backend import BackendOptions, FeedbackRequest, MetaRequest
from sia_core.testing.conformance.backend import BackendConformance
from sia_core.testing.fixtures import tiny_task_source
from sia_core.testing.openai_stub import OpenAIStub


def backend(meta: str | None, **settings: Any) -> OpenHandsBackend:
    return OpenHandsBackend(
        BackendOptions(meta_model=meta, settings={k: str(v) for k, v in settings.items()})
    )


def stub_backend(stub: OpenAIStub, **settings: Any) -> OpenHandsBackend:
    return backend("openai/stub-model", base_url=stub.url, native_tool_calling="false", **settings)


def meta_request(gen_dir: Path) -> MetaRequest:
    return MetaRequest(
        gen=1, gen_dir=gen_dir, task_name="tiny-add", task_md=TASK_MD, reference_scaffold=REFERENCE
    )


def feedback_request(run_dir: Path) -> FeedbackRequest:
    return FeedbackRequest(
        next_gen=2,
        next_gen_dir=run_dir / "gen_2",
        parent_gen=1,
        parent_gen_dir=run_dir / "gen_1",
        parent_scaffold=REFERENCE,
        dev_metrics={"dev": {"score": 0.25, "n_items": 4}},
        context_md=(run_dir / "context.md").read_text(),
        task_md=TASK_MD,
        task_name="tiny-add",
    )


def events(transcript: tuple[dict[str, Any], ...], kind: str) -> list[dict[str, Any]]:
    return [
        r["event"]
        for r in transcript
        if r.get("type") == "openhands_event" and r["event"].get("kind") == kind
    ]


class TestOpenHandsConformance(BackendConformance):
    """Both roles through OpenHands against the stub; the task model is the real local one."""

    @pytest.fixture
    def backend(self, stub: OpenAIStub) -> Iterator[OpenHandsBackend]:
        b = stub_backend(stub, max_turns=4)
        yield b
        b.close()


def test_feedback_step_reads_writes_tests_and_decides(stub: OpenAIStub, run_dir: Path) -> None:
    """A full Feedback step: list files, read the parent's metrics, try a sealed file (refused),
    write the scaffold, decide. The generation's outcome and transcript show every step, and
    nothing sealed ever reached the model."""
    script = Script(
        fn_call("list_files"),
        fn_call("read_file", path="run/gen_1/metrics.json"),
        fn_call("read_file", path="run/gen_1/sealed/metrics_test.json"),
        fn_call("write_scaffold", code=IMPROVED),
        fn_call(
            "decide",
            lever="harness",
            rationale="dev 0.25: answers carry words around the number",
            improvement_md="# Digits only\n",
        ),
    )
    stub.reply = script
    b = stub_backend(stub, max_turns=8)
    out = b.feedback(feedback_request(run_dir))
    b.close()

    assert out.scaffold == IMPROVED
    assert out.decision.lever == "harness" and out.decision.parent_gen == 1
    assert out.decision.rationale == "dev 0.25: answers carry words around the number"
    assert out.improvement_md == "# Digits only"
    assert len(script.bodies) == 5  # decide ends the conversation: no sixth model call
    actions = [e["tool_name"] for e in events(out.transcript, "ActionEvent")]
    assert actions == ["list_files", "read_file", "read_file", "write_scaffold", "decide"]
    results = [
        e["observation"]["content"][0]["text"] for e in events(out.transcript, "ObservationEvent")
    ]
    assert "run/gen_1/metrics.json" in results[0]
    assert "sealed" not in results[0] and "work_test" not in results[0]
    assert '"score": 0.25' in results[1]
    assert "not a readable file" in results[2]
    assert results[3].startswith("saved target_agent.py")
    # the model saw the metrics it read, the tool results, and never a sealed artifact
    sent = "\n".join(json.dumps(body) for body in script.bodies)
    assert '\\"score\\": 0.25' in sent
    assert "SEALED-TEST" not in sent
    assert out.transcript[-1]["type"] == "end" and out.transcript[-1]["stop"] == "decided"
    assert out.usage["calls"] == 5 and out.usage["input_tokens"] > 0
    # the system prompt is sia's; the tools are sia's, described in OpenHands' text protocol
    first = all_text(script.bodies[0])
    assert "You are the Feedback-Agent of sia" in first
    for name in ("list_files", "read_file", "write_scaffold", "test_scaffold", "decide", "finish"):
        assert re.search(rf"---- BEGIN FUNCTION #\d+: {name} ----", first), name
    assert "Allowed values: [`harness`, `weights`, `both`, `stop`]" in first


def test_no_decision_keeps_the_parent_with_the_reason(stub: OpenAIStub, run_dir: Path) -> None:
    """A model that never calls a tool is nudged, then the parent's scaffold is kept."""
    script = Script("I think the scaffold is fine as it is.")
    stub.reply = script
    b = stub_backend(stub, max_turns=6, max_no_tool_replies=2)
    out = b.feedback(feedback_request(run_dir))
    b.close()
    assert out.scaffold == REFERENCE
    assert out.decision.lever == "harness"
    assert "no usable decision" in out.decision.rationale
    assert "without calling decide" in out.decision.rationale
    assert "keeps the parent's scaffold (gen 1)" in out.improvement_md
    assert len(script.bodies) == 3  # the first message + 2 nudges
    nudges = [r for r in out.transcript if r.get("type") == "message"]
    assert len(nudges) == 2


def test_turn_limit_ends_the_step(stub: OpenAIStub, run_dir: Path) -> None:
    script = Script(fn_call("list_files"))
    stub.reply = script
    b = stub_backend(stub, max_turns=3)
    out = b.feedback(feedback_request(run_dir))
    b.close()
    assert len(script.bodies) == 3
    assert out.scaffold == REFERENCE
    assert "no usable decision" in out.decision.rationale
    assert "maximum iterations" in out.decision.rationale or "turn limit" in out.decision.rationale


def test_server_errors_are_retried(stub: OpenAIStub, tmp_path: Path) -> None:
    """A 500 and a 429 from the server are retried by OpenHands' LLM; the step still decides."""
    stub.fail_next(2, status=500)
    b = stub_backend(stub, max_turns=4)
    out = b.meta(meta_request(tmp_path / "gen_1"))
    b.close()
    assert out.scaffold == IMPROVED, out.decision.rationale
    assert len(stub.requests) == 4  # 2 failed + write_scaffold + decide


def test_a_dead_server_is_reported_and_the_reference_kept(tmp_path: Path) -> None:
    with OpenAIStub() as stub:
        stub.fail_next(100, status=500, message="upstream exploded")
        b = stub_backend(stub, max_turns=4, retries=1)
        out = b.meta(meta_request(tmp_path / "gen_1"))
        b.close()
    assert out.scaffold == REFERENCE
    assert "no usable decision" in out.decision.rationale
    assert "upstream exploded" in out.decision.rationale or "500" in out.decision.rationale


def test_real_local_model_runs_through_openhands(llama: LlamaServer, tmp_path: Path) -> None:
    """SmolLM2 behind llama.cpp: OpenHands' prompt-mocked tool calls reach the real model; it
    rarely follows them, so the step ends with the reference scaffold and the reason."""
    b = backend(
        "openai/smollm2",
        base_url=llama.base_url,
        native_tool_calling="false",
        max_turns=2,
        max_no_tool_replies=1,
        max_output_tokens=48,
    )
    out = b.meta(meta_request(tmp_path / "gen_1"))
    b.close()
    replies = [
        e for e in events(out.transcript, "MessageEvent") if e.get("source") == "agent"
    ] + events(out.transcript, "ActionEvent")
    assert replies, out.transcript[-1]
    assert out.usage["calls"] >= 1 and out.usage["input_tokens"] > 100
    assert out.decision.rationale.strip()
    if out.scaffold is not None:
        compile(out.scaffold, "target_agent.py", "exec")


def test_bad_settings_are_one_clear_line() -> None:
    from sia_core.contracts.errors import SiaError

    with pytest.raises(SiaError, match="native_tool_calling='maybe'"):
        backend("openai/x", native_tool_calling="maybe")
    with pytest.raises(SiaError, match="max_turns"):
        backend("openai/x", max_turns="many")
    with pytest.raises(SiaError, match="SIA_NO_SUCH_KEY"):
        backend("openai/x", api_key_env="SIA_NO_SUCH_KEY")


def test_public_task_files_are_readable_private_ones_not(stub: OpenAIStub, tmp_path: Path) -> None:
    src = tiny_task_source()
    script = Script(
        fn_call("list_files"),
        fn_call("read_file", path="task/public/../private/dev_labels.jsonl"),
        fn_call("decide", rationale="seen enough", improvement_md="none"),
    )
    stub.reply = script
    b = stub_backend(stub, max_turns=4)
    request = MetaRequest(
        gen=1,
        gen_dir=tmp_path / "gen_1",
        task_name="tiny-add",
        task_md=TASK_MD,
        reference_scaffold=REFERENCE,
        public_dir=src / "data/public",
    )
    out = b.meta(request)
    b.close()
    results = [
        e["observation"]["content"][0]["text"] for e in events(out.transcript, "ObservationEvent")
    ]
    assert "task/public/train.jsonl" in results[0] and "private" not in results[0]
    assert "no '..'" in results[1]
    labels = (src / "data/private/dev_labels.jsonl").read_text().splitlines()[0]
    assert labels not in "\n".join(json.dumps(b) for b in script.bodies)
    assert out.decision.rationale == "seen enough"


def test_native_tool_calls_through_litellms_anthropic_route(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a model that has native tool calling, OpenHands sends the tools as tool definitions
    and reads tool_use blocks: here over the Anthropic Messages API (sia's stub on loopback)."""
    from sia_core.testing.anthropic_stub import AnthropicStub

    script = [
        {"tool_use": {"name": "write_scaffold", "input": {"code": IMPROVED}}},
        {
            "tool_use": {
                "name": "decide",
                "input": {"rationale": "native tools work", "improvement_md": "# native\n"},
            }
        },
    ]
    monkeypatch.setenv("SIA_TEST_ANTHROPIC_KEY", "sk-ant-openhands")
    with AnthropicStub(script, api_key="sk-ant-openhands") as stub:
        b = backend(
            "anthropic/claude-haiku-4-5",
            base_url=stub.url,
            api_key_env="SIA_TEST_ANTHROPIC_KEY",
            max_turns=4,
        )
        assert b.native_tool_calling is True
        out = b.meta(meta_request(tmp_path / "gen_1"))
        b.close()
        reqs = stub.requests
    assert out.scaffold == IMPROVED and out.decision.rationale == "native tools work"
    assert out.improvement_md == "# native\n"
    assert len(reqs) == 2 and reqs[0]["path"] == "/v1/messages"
    body = reqs[0]["body"]
    assert body["model"] == "claude-haiku-4-5"
    names = [t["name"] for t in body["tools"]]
    assert {"list_files", "read_file", "write_scaffold", "test_scaffold", "decide"} <= set(names)
    result = json.dumps(reqs[1]["body"]["messages"][-1])
    assert "tool_result" in result and "saved target_agent.py" in result
