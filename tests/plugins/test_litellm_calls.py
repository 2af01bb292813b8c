"""Calls that fit the model (plugins/backend-litellm/calls.py), over real HTTP on loopback: the
output cap from the server's context and the measured speed, no retry after a timeout, retries
for 5xx, and one line when a reply is cut. The real llama.cpp server (SmolLM2) where it can
show it; the OpenAI stub for what a 135M model cannot be made to do on cue (hang, fail)."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

import pytest

from sia_backend_litellm import calls
from sia_backend_litellm.backend import LiteLLMAdapter, litellm_module
from sia_backend_litellm.calls import CallFitter, CallTimeout, server_context
from sia_backend_local.llama_server import LlamaServer
from sia_backend_local.smollm2 import smollm2_gguf
from sia_core.services.agents import ToolSpec
from sia_core.testing.openai_stub import OpenAIStub

DECIDE = ToolSpec(name="decide", description="decide", parameters={"type": "object"})


@pytest.fixture(scope="module")
def llama() -> Iterator[LlamaServer]:
    server = LlamaServer(smollm2_gguf(), n_ctx=2048)
    server.start()
    yield server
    server.stop()


def adapter(api_base: str, **kw: Any) -> LiteLLMAdapter:
    return LiteLLMAdapter("openai/stub-model", api_base=api_base, tool_mode="text", **kw)


def say(a: LiteLLMAdapter, text: str, cap: int = 16_000) -> Any:
    return a.send("You are terse.", [{"role": "user", "content": text}], [DECIDE], cap)


def test_output_cap_fits_the_context_a_server_reports() -> None:
    with OpenAIStub(max_model_len=2048) as stub:
        assert server_context(stub.url) == 2048
        a = adapter(stub.url)
        say(a, "hello there")
        sent = stub.requests[0]["max_tokens"]
    # 16,000 asked; the context (2048) less the prompt is what goes out
    assert 1000 < sent < 2048
    assert "2048-token context" in a.fitter.last_reason


def test_a_server_that_reports_no_context_keeps_the_asked_cap() -> None:
    with OpenAIStub() as stub:
        assert server_context(stub.url) is None
        a = adapter(stub.url)
        say(a, "hello", cap=5000)
        assert stub.requests[0]["max_tokens"] == 5000


def test_a_timeout_is_not_retried_and_says_so_in_one_line() -> None:
    with OpenAIStub(fault=lambda body: "hang", hang_s=600) as stub:
        a = adapter(stub.url, timeout_s=1.0, num_retries=3)
        started = time.monotonic()
        with pytest.raises(CallTimeout) as err:
            say(a, "hi")
        waited = time.monotonic() - started
        assert len(stub.requests) == 1  # litellm's own retries would have sent 4
    assert "did not answer within timeout_s=1 s" in str(err.value)
    assert "\n" not in str(err.value)
    assert waited < 300  # the client gave up: the stub hangs for 600 s


def test_server_errors_are_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(calls, "BACKOFF_S", 0.0)
    with OpenAIStub() as stub:
        stub.fail_next(2, 503)
        turn = say(adapter(stub.url, num_retries=3), "echo me")
        assert len(stub.requests) == 3
    assert "echo me" in turn.text
    with OpenAIStub() as stub:
        stub.fail_next(5, 503)
        with pytest.raises(Exception, match=r"503|ServiceUnavailable|injected"):
            say(adapter(stub.url, num_retries=1), "x")
        assert len(stub.requests) == 2


def test_measured_speed_caps_the_next_call() -> None:
    fitter = CallFitter(litellm_module, "m", api_base=None, timeout_s=60, num_retries=0)
    fitter._limits = (None, None)
    assert fitter.cap(16_000, 100) == 16_000
    fitter.observe(output_tokens=100, seconds=10.0)  # 10 tokens/s
    assert fitter.cap(16_000, 100) == int(10 * 60 * calls.TIME_SHARE)
    assert "10.0 tokens/s measured" in fitter.last_reason
    fitter.observe(output_tokens=5, seconds=10.0)  # too few tokens to say anything
    assert fitter.speed == 10.0


def test_real_server_speed_is_measured_and_a_cut_reply_is_one_line(
    llama: LlamaServer, caplog: pytest.LogCaptureFixture
) -> None:
    # a hang guard only: a loaded machine may take long over a first call
    a = LiteLLMAdapter("openai/smollm2", api_base=llama.base_url, tool_mode="text", timeout_s=600)
    with caplog.at_level(logging.WARNING, logger="sia.backend.litellm"):
        turn = say(a, "Write a long story about a cat, with many details.", cap=48)
    assert turn.stop_reason == "length"
    assert a.fitter.speed is not None and a.fitter.speed > 0
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "was cut at 48 output tokens" in lines[0]
    assert "--backend-opt max_output_tokens=N" in lines[0]
    # 16,000 asked of a server measured at a few hundred tokens/s, were the timeout 2 s
    a.fitter.timeout_s = 2.0
    assert a.fitter.cap(16_000, 200) <= max(int(a.fitter.speed * 2.0 * calls.TIME_SHARE), 256)


def test_a_quick_gateway_error_is_retried_not_taken_for_a_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(calls, "BACKOFF_S", 0.0)
    for status in (502, 504):
        with OpenAIStub() as stub:
            stub.fail_next(1, status)
            turn = say(adapter(stub.url, num_retries=2, timeout_s=600), "echo me")
            assert len(stub.requests) == 2, status
        assert "echo me" in turn.text
