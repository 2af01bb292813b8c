"""The claude backend over real HTTP: the anthropic SDK against a Messages API stub on loopback."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from anthropic._constants import ANTHROPIC_API_VERSION

from sia_backend_claude.backend import ClaudeBackend
from sia_backend_claude.models import resolve_model, usage_with_cost
from sia_core.contracts.backend import BackendOptions, MetaRequest
from sia_core.testing.anthropic_stub import AnthropicStub
from sia_core.testing.conformance.backend import BackendConformance
from sia_core.testing.fixtures import tiny_task_source

KEY = "sk-ant-test-key"
REFERENCE = (tiny_task_source() / "reference/reference_target_agent.py").read_text()
TASK_MD = (tiny_task_source() / "data/public/task.md").read_text()
SUM = re.compile(r"What is (\d+) \+ (\d+)")


def _role(body: dict[str, Any]) -> str:
    """Which caller sent a request: the meta or feedback agent (by its system prompt) or the
    task model (no tools)."""
    if not body.get("tools"):
        return "task"
    system = json.dumps(body.get("system"))
    return "meta" if "Meta-Agent" in system else "feedback"


def _step(body: dict[str, Any]) -> int:
    return sum(m["role"] == "assistant" for m in body["messages"])


def answer_sums(body: dict[str, Any]) -> str:
    """The task model's reply: the correct sum of a tiny-add question (a strong model)."""
    m = SUM.search(json.dumps(body["messages"]))
    return str(int(m.group(1)) + int(m.group(2))) if m else "no idea"


def agent_script(body: dict[str, Any]) -> dict[str, Any]:
    """A competent agent: list files, write a scaffold, decide."""
    role = _role(body)
    if role == "task":
        return {"text": answer_sums(body)}
    step = _step(body)
    if step == 0:
        return {"text": "Let me look.", "tool_use": {"name": "list_files", "input": {}}}
    if step == 1:
        return {"tool_use": {"name": "write_scaffold", "input": {"code": REFERENCE + "\n# v2\n"}}}
    decide = {"rationale": "the reference is sound", "improvement_md": "# Kept the reference\n"}
    if role == "feedback":
        decide |= {"lever": "harness", "rl_algorithm": "auto"}
    return {"tool_use": {"name": "decide", "input": decide}}


@pytest.fixture
def anthropic_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    monkeypatch.delenv("ANTHROPIC_AUTH_TOKEN", raising=False)


@pytest.fixture
def stub(anthropic_env: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[AnthropicStub]:
    with AnthropicStub(agent_script, api_key=KEY) as s:
        monkeypatch.setenv("ANTHROPIC_BASE_URL", s.url)
        yield s


def make_backend(**settings: Any) -> ClaudeBackend:
    settings.setdefault("backoff_s", 0.01)
    return ClaudeBackend(BackendOptions(settings={k: str(v) for k, v in settings.items()}))


def meta_request(tmp_path: Path) -> MetaRequest:
    return MetaRequest(
        gen=1,
        gen_dir=tmp_path,
        task_name="tiny-add",
        task_md=TASK_MD,
        reference_scaffold=REFERENCE,
        public_dir=tiny_task_source() / "data/public",
    )


class TestClaudeConformance(BackendConformance):
    @pytest.fixture
    def backend(self, stub: AnthropicStub) -> Iterator[ClaudeBackend]:
        b = make_backend()
        yield b
        b.close()


def test_aliases_map_to_model_ids() -> None:
    assert resolve_model(None) == "claude-haiku-4-5"
    assert resolve_model("sonnet") == "claude-sonnet-5"
    assert resolve_model("opus") == "claude-opus-5-5"
    assert resolve_model("claude-haiku-5-5") == "claude-haiku-5-5"


def test_requests_the_sdk_sends(stub: AnthropicStub, tmp_path: Path) -> None:
    """Headers, model id, tools, prompt caching and streaming as they reach the wire."""
    backend = make_backend()
    out = backend.meta(meta_request(tmp_path))
    backend.close()
    assert out.scaffold == REFERENCE + "\n# v2\n"
    assert out.decision.rationale == "the reference is sound"
    reqs = stub.requests
    assert len(reqs) == 3
    first = reqs[0]
    assert first["path"] == "/v1/messages"
    assert first["headers"]["authorization"] == f"Bearer {KEY}"  # SDK 2.x: no x-api-key
    assert first["headers"]["anthropic-version"] == ANTHROPIC_API_VERSION
    assert first["headers"]["user-agent"].startswith("Anthropic/Python 2.")
    body = first["body"]
    assert body["model"] == "claude-haiku-4-5"
    assert body["stream"] is True
    assert [t["name"] for t in body["tools"]] == [
        "list_files",
        "read_file",
        "write_scaffold",
        "test_scaffold",
        "decide",
    ]
    assert body["tools"][-1]["cache_control"] == {"type": "ephemeral"}
    assert "cache_control" not in body["tools"][0]
    assert body["tools"][1]["input_schema"]["required"] == ["path"]
    assert body["system"][0]["cache_control"] == {"type": "ephemeral"}
    assert "Meta-Agent" in body["system"][0]["text"]
    # the conversation grows; a tool result answers each tool_use
    last = reqs[2]["body"]["messages"]
    assert [m["role"] for m in last] == ["user", "assistant", "user", "assistant", "user"]
    assert last[2]["content"][0]["type"] == "tool_result"
    assert "task/public/train.jsonl" in last[2]["content"][0]["content"]
    assert last[-1]["content"][-1]["cache_control"] == {"type": "ephemeral"}
    # usage and cost per call: the second call reads the cached prefix
    assistant = [t for t in out.transcript if t.get("type") == "assistant"]
    assert assistant[0]["usage"]["cache_creation_input_tokens"] > 0
    assert assistant[1]["usage"]["cache_read_input_tokens"] > 0
    assert all(t["usage"]["cost_usd"] > 0 for t in assistant)
    assert out.usage["calls"] == 3
    assert out.usage["cache_read_input_tokens"] > 0 and out.usage["output_tokens"] > 0
    assert out.usage["uncached_input_tokens"] == 0  # all up to the last message was cached
    assert out.usage["input_tokens"] == (
        out.usage["cache_read_input_tokens"] + out.usage["cache_creation_input_tokens"]
    )
    expected = sum(t["usage"]["cost_usd"] for t in assistant)
    assert out.usage["cost_usd"] == pytest.approx(expected)


def test_non_streaming_mode(stub: AnthropicStub, tmp_path: Path) -> None:
    backend = make_backend(stream=0)
    out = backend.meta(meta_request(tmp_path))
    assert out.scaffold == REFERENCE + "\n# v2\n"
    assert all("stream" not in r["body"] or not r["body"]["stream"] for r in stub.requests)


@pytest.mark.parametrize("status", [429, 500, 529])
def test_http_errors_are_retried(stub: AnthropicStub, tmp_path: Path, status: int) -> None:
    stub.fail_next(2, status)
    out = make_backend().meta(meta_request(tmp_path))
    assert out.decision.rationale == "the reference is sound"
    assert len(stub.requests) == 3 + 2  # two refused, then the three turns


def test_overloaded_event_mid_stream_is_retried(stub: AnthropicStub, tmp_path: Path) -> None:
    stub.stream_error_next(1, "overloaded_error")
    out = make_backend().meta(meta_request(tmp_path))
    assert out.decision.rationale == "the reference is sound"
    assert len(stub.requests) == 4


def test_persistent_errors_keep_the_reference_and_say_why(
    stub: AnthropicStub, tmp_path: Path
) -> None:
    stub.fail_next(3, 500, "upstream on fire")
    out = make_backend(max_retries=2).meta(meta_request(tmp_path))
    assert out.scaffold == REFERENCE
    assert "no usable decision" in out.decision.rationale
    assert "500" in out.decision.rationale and "upstream on fire" in out.decision.rationale
    assert out.transcript[-2]["type"] == "error"


def test_bad_request_is_not_retried(stub: AnthropicStub, tmp_path: Path) -> None:
    stub.fail_next(1, 400, "prompt is too long")
    out = make_backend().meta(meta_request(tmp_path))
    assert len(stub.requests) == 1
    assert "prompt is too long" in out.decision.rationale


def test_malformed_streamed_tool_input_is_retried(anthropic_env: None, tmp_path: Path) -> None:
    calls = {"n": 0}

    def script(body: dict[str, Any]) -> dict[str, Any]:
        calls["n"] += 1
        if calls["n"] == 1:
            return {"tool_use": {"name": "list_files", "raw_input": '{"x": tru}'}}
        return agent_script(body)

    with AnthropicStub(script, api_key=KEY) as stub:
        out = make_backend(base_url=stub.url).meta(meta_request(tmp_path))
    assert out.decision.rationale == "the reference is sound"
    assert calls["n"] == 4


def test_malformed_tool_input_goes_back_to_the_model(anthropic_env: None, tmp_path: Path) -> None:
    """Non-streamed: a tool input that is not an object is answered with a tool error, and the
    model can correct itself."""

    def script(body: dict[str, Any]) -> dict[str, Any]:
        if _step(body) == 0:
            return {"tool_use": {"name": "write_scaffold", "raw_input": "def solve(:"}}
        return agent_script({**body, "messages": body["messages"][2:]})

    with AnthropicStub(script, api_key=KEY) as stub:
        out = make_backend(base_url=stub.url, stream=0).meta(meta_request(tmp_path))
        second = stub.requests[1]["body"]["messages"][2]["content"][0]
    assert second["type"] == "tool_result" and second["is_error"] is True
    assert "not a JSON object" in second["content"]
    errors = [t for t in out.transcript if t.get("type") == "tool" and t["is_error"]]
    assert errors and errors[0]["name"] == "write_scaffold"


def test_reply_without_tool_call_keeps_the_reference(anthropic_env: None, tmp_path: Path) -> None:
    with AnthropicStub(lambda body: {"text": "I think it is fine."}, api_key=KEY) as stub:
        out = make_backend(base_url=stub.url).meta(meta_request(tmp_path))
        nudge = stub.requests[1]["body"]["messages"][-1]["content"][-1]["text"]
    assert out.scaffold == REFERENCE
    assert "without calling a tool" in out.decision.rationale
    assert "decide" in nudge
    assert out.usage["calls"] == 2


def test_syntax_error_is_reported_to_the_model(anthropic_env: None, tmp_path: Path) -> None:
    def script(body: dict[str, Any]) -> dict[str, Any]:
        if _step(body) == 0:
            return {"tool_use": {"name": "write_scaffold", "input": {"code": "def solve(:\n"}}}
        return {"tool_use": {"name": "decide", "input": {"rationale": "r", "improvement_md": "m"}}}

    with AnthropicStub(script, api_key=KEY) as stub:
        out = make_backend(base_url=stub.url).meta(meta_request(tmp_path))
        result = stub.requests[1]["body"]["messages"][2]["content"][0]
    assert result["is_error"] and "syntax error at line 1" in result["content"]
    assert out.scaffold == REFERENCE  # nothing valid was written


def test_missing_key_is_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    monkeypatch.delenv("ANTHROPIC_AUTH_TOKEN", raising=False)
    with pytest.raises(Exception, match="ANTHROPIC_API_KEY"):
        make_backend()


def test_unknown_setting_is_named(anthropic_env: None) -> None:
    with pytest.raises(Exception, match="unknown --backend-opt for the claude backend: colour"):
        make_backend(colour="red")


def test_task_model_converts_openai_bodies(stub: AnthropicStub) -> None:
    model = ClaudeBackend(BackendOptions(task_model="sonnet")).task_model()
    reply = model.chat(
        {
            "model": "whatever",
            "messages": [
                {"role": "system", "content": "Answer with digits."},
                {"role": "user", "content": [{"type": "text", "text": "What is 2 + 3?"}]},
            ],
            "max_tokens": 8,
            "temperature": 0,
            "stop": "\n",
        }
    )
    body = stub.requests[-1]["body"]
    assert body["model"] == "claude-sonnet-5"
    assert body["system"] == "Answer with digits."
    assert body["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "What is 2 + 3?"}]}
    ]
    assert body["max_tokens"] == 8 and body["temperature"] == 0
    assert body["stop_sequences"] == ["\n"]
    assert reply["choices"][0]["message"]["content"] == "5"
    assert reply["choices"][0]["finish_reason"] == "stop"
    assert reply["usage"]["completion_tokens"] == 1 and reply["usage"]["cost"] > 0


def test_task_model_tool_calls_round_trip(anthropic_env: None) -> None:
    def script(body: dict[str, Any]) -> dict[str, Any]:
        return {"tool_use": {"name": "add", "input": {"a": 2, "b": 3}}}

    with AnthropicStub(script, api_key=KEY) as stub:
        model = make_backend(base_url=stub.url).task_model()
        reply = model.chat(
            {
                "messages": [{"role": "user", "content": "add 2 and 3"}],
                "tools": [{"type": "function", "function": {"name": "add", "parameters": {}}}],
                "tool_choice": "required",
            }
        )
        body = stub.requests[-1]["body"]
    assert body["tools"][0]["name"] == "add" and body["tool_choice"] == {"type": "any"}
    call = reply["choices"][0]["message"]["tool_calls"][0]
    assert call["function"] == {"name": "add", "arguments": '{"a": 2, "b": 3}'}
    assert reply["choices"][0]["finish_reason"] == "tool_calls"


def test_task_model_error_reaches_the_gateway_as_upstream_error(stub: AnthropicStub) -> None:
    from sia_core.services.gateway import UpstreamError

    model = make_backend(max_retries=0).task_model()
    stub.fail_next(1, 429)
    with pytest.raises(UpstreamError) as err:
        model.chat({"messages": [{"role": "user", "content": "hi"}]})
    assert err.value.status == 429


# --------------------------------------------------------------------------------------------
# Real runs of the `sia` CLI against the stub
# --------------------------------------------------------------------------------------------


def sia_run(stub: AnthropicStub, runs: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "ANTHROPIC_API_KEY": KEY,
        "ANTHROPIC_BASE_URL": stub.url,
        "SIA_DISABLE_PLUGINS": os.environ.get("SIA_DISABLE_PLUGINS", ""),
    }
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "sia_core.surface.cli",
            "--task",
            "tiny-add",
            "--backend",
            "claude",
            "--backend-opt",
            "backoff_s=0.01",
            "--runs-dir",
            str(runs),
            "--run_id",
            "1",
            "--sandbox",
            "process",
            *args,
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


def test_run_continues_with_the_parent_when_the_agent_produces_nothing(
    anthropic_env: None, tmp_path: Path
) -> None:
    """Agents that never call a tool: every generation keeps its parent's scaffold, says why,
    and the run finishes; the task model (Claude) still answers through the gateway."""

    def script(body: dict[str, Any]) -> dict[str, Any]:
        if _role(body) == "task":
            return {"text": answer_sums(body)}
        return {"text": "Looks fine to me."}

    runs = tmp_path / "runs"
    with AnthropicStub(script, api_key=KEY) as stub:
        proc = sia_run(stub, runs, "--max_gen", "2")
    assert proc.returncode == 0, proc.stderr
    run = runs / "run_1"
    for gen in (1, 2):
        assert (run / f"gen_{gen}/target_agent.py").read_text() == REFERENCE
        decision = json.loads((run / f"gen_{gen}/decision.json").read_text())
        assert "no usable decision" in decision["rationale"]
        assert "without calling a tool" in decision["rationale"]
        transcript = json.loads((run / f"gen_{gen}/agent_transcript.json").read_text())
        assert [t["type"] for t in transcript][-1] == "end"
    gen2 = json.loads((run / "gen_2/decision.json").read_text())
    assert "keeps the parent's scaffold (gen 1)" in gen2["rationale"]
    metrics = json.loads((run / "gen_1/metrics.json").read_text())
    assert metrics["dev"]["score"] == 1.0  # Claude-as-task-model answered every item
    assert metrics["cost_usd"] > 0


IMPROVED = REFERENCE.replace(
    '"instruction": "Answer with the number only."',
    '"instruction": "Add the two numbers. Reply with the sum as digits only."',
)

#: a recorded Feedback-Agent conversation (replies in order): read the evidence, write a
#: scaffold, try it on train items, decide
FEEDBACK_REPLAY: list[dict[str, Any]] = [
    {"text": "Reading the trajectories.", "tool_use": {"name": "list_files", "input": {}}},
    {
        "tool_use": [
            {
                "name": "read_file",
                "input": {"path": "run/gen_1/agent_execution.json", "limit": 3000},
            },
            {"name": "read_file", "input": {"path": "run/gen_1/metrics.json"}},
        ]
    },
    {"tool_use": {"name": "write_scaffold", "input": {"code": IMPROVED}}},
    {"tool_use": {"name": "test_scaffold", "input": {"n_items": 2}}},
    {
        "text": "The trial answered both train items correctly.",
        "tool_use": {
            "name": "decide",
            "input": {
                "lever": "harness",
                "rl_algorithm": "auto",
                "rationale": "a clearer instruction; 2/2 on the train trial",
                "improvement_md": "# Generation 2\n\nClearer instruction.\n",
            },
        },
    },
]


def test_recorded_feedback_step_leaves_a_complete_generation(
    anthropic_env: None, tmp_path: Path
) -> None:
    replay = iter(FEEDBACK_REPLAY)

    def script(body: dict[str, Any]) -> dict[str, Any]:
        role = _role(body)
        if role == "task":
            return {"text": answer_sums(body)}
        if role == "meta":
            decide = {"rationale": "reference as generation 1", "improvement_md": "# gen 1\n"}
            return {"tool_use": {"name": "decide", "input": decide}}
        return next(replay)

    runs = tmp_path / "runs"
    with AnthropicStub(script, api_key=KEY) as stub:
        # test every generation: gen_1/sealed/ exists while gen 2's agent looks around
        proc = sia_run(stub, runs, "--max_gen", "2", "--test-eval", "every")
    assert proc.returncode == 0, proc.stderr
    gen2 = runs / "run_1/gen_2"
    assert (gen2 / "target_agent.py").read_text() == IMPROVED
    decision = json.loads((gen2 / "decision.json").read_text())
    assert decision["lever"] == "harness" and decision["source"] == "feedback"
    assert decision["rationale"] == "a clearer instruction; 2/2 on the train trial"
    assert decision["parent_gen"] == 1
    assert (
        (gen2 / "improvement.md").read_text().startswith("# Generation 2\n\nClearer instruction.")
    )
    transcript = json.loads((gen2 / "agent_transcript.json").read_text())
    tools = [t for t in transcript if t["type"] == "tool"]
    assert [t["name"] for t in tools] == [
        "list_files",
        "read_file",
        "read_file",
        "write_scaffold",
        "test_scaffold",
        "decide",
    ]
    assert not any(t["is_error"] for t in tools), tools
    listed = tools[0]["result"]
    assert "run/gen_1/agent_execution.json" in listed and "task/public/train.jsonl" in listed
    assert (runs / "run_1/gen_1/sealed/metrics_test.json").exists()
    assert (runs / "run_1/gen_1/work").is_dir()
    assert "private" not in listed and "sealed" not in listed and "/work/" not in listed
    assert "test_labels" not in json.dumps(transcript)
    assert '"dev"' in tools[2]["result"]
    trial = json.loads(tools[4]["result"].split("\n", 1)[1])
    assert trial["n_items"] == 2 and trial["score"] == 1.0
    assert [i["id"] for i in trial["items"]] == ["train-01", "train-02"]
    assert trial["items"][0]["answer"] == trial["items"][0]["label"] == 112
    assert transcript[-1]["type"] == "end" and transcript[-1]["stop"] == "decided"
    assert transcript[-1]["usage"]["calls"] == 5
    assert transcript[-1]["usage"]["trials"]["calls"] == 2
    assert "gen_2/trials/trial_1/target_agent.py" in str(
        sorted(p.relative_to(runs / "run_1") for p in gen2.rglob("*.py"))
    )


def test_cost_per_call() -> None:
    usage = {
        "input_tokens": 1000,
        "output_tokens": 100,
        "cache_creation_input_tokens": 2000,
        "cache_read_input_tokens": 10000,
        "service_tier": "standard",
    }
    out = usage_with_cost("claude-haiku-4-5", usage)
    # $1/$5 per MTok; cache writes 1.25x, cache reads 0.1x the input price
    assert out["cost_usd"] == pytest.approx((1000 + 2000 * 1.25 + 10000 * 0.1 + 100 * 5) / 1e6)
    assert out["input_tokens"] == 13000 and out["uncached_input_tokens"] == 1000
    unknown = usage_with_cost("claude-new-9", usage)
    assert unknown["cost_usd"] == 0.0 and unknown["priced"] is False
    assert usage_with_cost("claude-new-9", usage, (2.0, 10.0))["cost_usd"] > 0
