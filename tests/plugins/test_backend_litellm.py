"""The litellm backend over real HTTP: the real local llama.cpp server (SmolLM2), the OpenAI stub
where SmolLM2 is too weak for the assertion, and litellm's Anthropic route against the Messages
API stub for native tool calls."""

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

from sia_backend_litellm.backend import LiteLLMBackend, parse_tool_blocks
from sia_backend_local.llama_server import LlamaServer
from sia_backend_local.smollm2 import smollm2_gguf
from sia_core.contracts.backend import BackendOptions, MetaRequest
from sia_core.services.gateway import UpstreamError
from sia_core.testing.anthropic_stub import AnthropicStub
from sia_core.testing.conformance.backend import BackendConformance
from sia_core.testing.fixtures import tiny_task_source
from sia_core.testing.openai_stub import OpenAIStub

REFERENCE = (tiny_task_source() / "reference/reference_target_agent.py").read_text()
TASK_MD = (tiny_task_source() / "data/public/task.md").read_text()
IMPROVED = REFERENCE.replace(
    '"instruction": "Answer with the number only."',
    '"instruction": "Add the two numbers. Reply with the sum as digits only."',
)


@pytest.fixture(scope="module")
def llama() -> Iterator[LlamaServer]:
    server = LlamaServer(smollm2_gguf(), n_ctx=4096)
    server.start()
    yield server
    server.stop()


def meta_request(tmp_path: Path) -> MetaRequest:
    return MetaRequest(
        gen=1,
        gen_dir=tmp_path,
        task_name="tiny-add",
        task_md=TASK_MD,
        reference_scaffold=REFERENCE,
        public_dir=tiny_task_source() / "data/public",
    )


def backend(meta: str, task: str | None = None, **settings: Any) -> LiteLLMBackend:
    return LiteLLMBackend(
        BackendOptions(
            meta_model=meta,
            task_model=task,
            settings={k: str(v) for k, v in settings.items()},
        )
    )


def deciding_agent(body: dict[str, Any]) -> str:
    """A model that decides at once, in the text protocol."""
    return fenced("decide", lever="stop", rationale="nothing to gain", improvement_md="# stop\n")


class TestLiteLLMConformance(BackendConformance):
    """The roles on a stub speaking the text protocol, the task model on the real local model."""

    @pytest.fixture
    def backend(self, llama: LlamaServer) -> Iterator[LiteLLMBackend]:
        with OpenAIStub(deciding_agent) as stub:
            b = backend(
                "openai/agent-stub",
                "openai/smollm2",
                meta_api_base=stub.url,
                task_api_base=llama.base_url,
            )
            yield b
            b.close()


@pytest.mark.slow
def test_real_local_model_runs_the_text_protocol(llama: LlamaServer, tmp_path: Path) -> None:
    """SmolLM2 cannot follow the protocol, but its turn reached it (the server's token count)
    and the step ends with the reference scaffold and the reason."""
    b = backend("openai/smollm2", api_base=llama.base_url, max_turns=1, max_output_tokens=16)
    assert b.adapter.native is False  # litellm does not know this model: text protocol
    out = b.meta(meta_request(tmp_path))
    turns = [t for t in out.transcript if t["type"] == "assistant"]
    assert turns and all(t["usage"]["input_tokens"] > 500 for t in turns)  # the server's count
    assert all(t["usage"].get("priced") is False for t in turns)
    assert out.scaffold == REFERENCE
    assert "no usable decision" in out.decision.rationale
    assert out.usage["calls"] == len(turns)


def _step(body: dict[str, Any]) -> int:
    return sum(m["role"] == "assistant" for m in body["messages"])


def fenced(name: str, **arguments: Any) -> str:
    return (
        f"I will call {name}.\n```tool\n{json.dumps({'name': name, 'arguments': arguments})}\n```"
    )


def text_agent(body: dict[str, Any]) -> str:
    """A capable model speaking the text protocol: list files, a broken block, write, decide."""
    step = _step(body)
    if step == 0:
        return fenced("list_files")
    if step == 1:
        return '```tool\n{"name": "write_scaffold", "arguments": {"code": oops}}\n```'
    if step == 2:
        return fenced("write_scaffold", code=IMPROVED)
    return fenced("decide", rationale="clearer instruction", improvement_md="# better\n")


def test_text_protocol_full_step(tmp_path: Path) -> None:
    with OpenAIStub(text_agent) as stub:
        out = backend("openai/stub-model", api_base=stub.url).meta(meta_request(tmp_path))
        reqs = stub.requests
    assert out.scaffold == IMPROVED
    assert out.decision.rationale == "clearer instruction"
    assert all("tools" not in r for r in reqs)
    assert reqs[0]["model"] == "stub-model"
    system = reqs[0]["messages"][0]
    assert system["role"] == "system" and "How to call tools" in system["content"]
    assert "write_scaffold:" in system["content"]
    results = reqs[1]["messages"][-1]
    assert results["role"] == "user" and results["content"].startswith("Tool results:")
    assert "task/public/train.jsonl" in results["content"]
    bad = reqs[2]["messages"][-1]["content"]
    assert "(unparsed) (ERROR)" in bad and "not a JSON object" in bad
    assert [t["name"] for t in out.transcript if t["type"] == "tool"] == [
        "list_files",
        "(unparsed)",
        "write_scaffold",
        "decide",
    ]
    assert out.usage["calls"] == 4 and out.usage["input_tokens"] > 0


def test_parse_tool_blocks() -> None:
    calls = parse_tool_blocks(
        'a\n```tool\n{"name": "read_file", "arguments": {"path": "x"}}\n```\n'
        '```json\n{"tool": "list_files"}\n```\n```python\nprint(1)\n```',
        "t1",
    )
    assert [(c.name, c.arguments) for c in calls] == [
        ("read_file", {"path": "x"}),
        ("list_files", {}),
    ]
    assert parse_tool_blocks("no tools here", "t2") == []


def test_native_tools_through_litellms_anthropic_route(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-litellm")

    def script(body: dict[str, Any]) -> dict[str, Any]:
        step = _step(body)
        if step == 0:
            return {"tool_use": {"name": "write_scaffold", "input": {"code": IMPROVED}}}
        decide = {"rationale": "native tools work", "improvement_md": "# ok\n"}
        return {"tool_use": {"name": "decide", "input": decide}}

    with AnthropicStub(script, api_key="sk-ant-litellm") as stub:
        b = backend("anthropic/claude-haiku-4-5", api_base=stub.url)
        assert b.adapter.native is True
        out = b.meta(meta_request(tmp_path))
        reqs = stub.requests
    assert out.scaffold == IMPROVED and out.decision.rationale == "native tools work"
    assert reqs[0]["path"] == "/v1/messages"
    body = reqs[0]["body"]
    assert body["model"] == "claude-haiku-4-5"
    assert [t["name"] for t in body["tools"]][-1] == "decide"
    assert body["tools"][2]["input_schema"]["required"] == ["code"]
    result = reqs[1]["body"]["messages"][-1]["content"][0]
    assert result["type"] == "tool_result" and "saved target_agent.py" in json.dumps(result)
    assert out.usage["cost_usd"] > 0  # litellm's offline price table knows this model


def test_task_model_errors_reach_the_gateway(tmp_path: Path) -> None:
    with OpenAIStub() as stub:
        model = backend("openai/stub-model", api_base=stub.url, num_retries=0).task_model()
        stub.fail_next(1, 429)
        with pytest.raises(UpstreamError) as err:
            model.chat({"messages": [{"role": "user", "content": "hi"}]})
        assert err.value.status == 429
        reply = model.chat({"messages": [{"role": "user", "content": "echo me"}], "seed": 1})
    assert reply["choices"][0]["message"]["content"] == "echo me"
    assert reply["usage"]["prompt_tokens"] == 2


def test_needs_a_model_and_known_settings() -> None:
    with pytest.raises(Exception, match="needs a model: --meta_model and/or --task_model"):
        LiteLLMBackend(BackendOptions())
    with pytest.raises(Exception, match="unknown --backend-opt for the litellm backend: nope"):
        backend("openai/x", nope=1)
    with pytest.raises(Exception, match="tool_mode=maybe: choose one of auto, native, text"):
        backend("openai/x", tool_mode="maybe")


SUM = re.compile(r"What is (\d+) \+ (\d+)")


@pytest.mark.slow
def test_cli_run_with_a_stub_agent_and_the_real_local_task_model(
    llama: LlamaServer, tmp_path: Path
) -> None:
    """`sia --backend litellm`: the Feedback-Agent (stub, text protocol) reads the parent's
    trajectories, writes and tests a scaffold on the real local model, and decides."""

    def agent(body: dict[str, Any]) -> str:
        system = body["messages"][0]["content"]
        step = _step(body)
        if "Meta-Agent" in system:
            return fenced("decide", rationale="reference as gen 1", improvement_md="# gen 1\n")
        return [
            fenced("read_file", path="run/gen_1/metrics.json"),
            fenced("write_scaffold", code=IMPROVED),
            fenced("test_scaffold", n_items=2),
            fenced(
                "decide",
                lever="harness",
                rationale="clearer instruction",
                improvement_md="# gen 2\n",
            ),
        ][min(step, 3)]

    runs = tmp_path / "runs"
    with OpenAIStub(agent) as stub:
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "sia_core.surface.cli",
                "--task",
                "tiny-add",
                "--backend",
                "litellm",
                "--meta_model",
                "openai/agent-stub",
                "--task_model",
                "openai/smollm2",
                "--backend-opt",
                f"meta_api_base={stub.url}",
                "--backend-opt",
                f"task_api_base={llama.base_url}",
                "--max_gen",
                "2",
                "--test-eval",
                "none",
                "--runs-dir",
                str(runs),
                "--run_id",
                "1",
            ],
            capture_output=True,
            text=True,
            env={**os.environ},
            timeout=600,
        )
    assert proc.returncode == 0, proc.stderr[-3000:]
    gen2 = runs / "run_1/gen_2"
    assert (gen2 / "target_agent.py").read_text() == IMPROVED
    decision = json.loads((gen2 / "decision.json").read_text())
    assert decision["lever"] == "harness" and decision["rationale"] == "clearer instruction"
    transcript = json.loads((gen2 / "agent_transcript.json").read_text())
    tools = {t["name"]: t for t in transcript if t["type"] == "tool"}
    assert not any(t["is_error"] for t in tools.values()), tools
    trial = json.loads(tools["test_scaffold"]["result"].split("\n", 1)[1])
    assert trial["n_items"] == 2 and trial["usage"]["calls"] >= 2  # the real model answered
    assert json.loads((runs / "run_1/gen_2/metrics.json").read_text())["llm_calls"] >= 12
