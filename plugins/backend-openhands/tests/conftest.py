"""Fixtures for the openhands backend's tests: servers on loopback (see oh_support.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from oh_support import REFERENCE, adaptive

from sia_backend_local.llama_server import LlamaServer
from sia_backend_local.smollm2 import smollm2_gguf
from sia_core.testing.openai_stub import OpenAIStub


@pytest.fixture
def stub() -> Iterator[OpenAIStub]:
    with OpenAIStub(reply=adaptive) as server:
        yield server


@pytest.fixture(scope="session")
def llama() -> Iterator[LlamaServer]:
    """The real local model on loopback (SmolLM2-135M-Instruct, llama.cpp)."""
    server = LlamaServer(smollm2_gguf(), n_ctx=8192, n_threads=1, n_threads_batch=1)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    """A run folder after generation 1, with sealed test artifacts that must stay unread."""
    run = tmp_path / "runs" / "run_1"
    gen = run / "gen_1"
    (gen / "sealed").mkdir(parents=True)
    (gen / "work_test").mkdir()
    (gen / "target_agent.py").write_text(REFERENCE)
    (gen / "metrics.json").write_text('{"gen": 1, "dev": {"score": 0.25, "n_items": 4}}')
    (gen / "agent_execution.json").write_text('{"items": [{"item_id": "d1", "answer": "x"}]}')
    (gen / "sealed" / "metrics_test.json").write_text('{"score": "SEALED-TEST-SCORE-0.123"}')
    (gen / "work_test" / "answers.json").write_text('{"t1": "SEALED-TEST-ANSWER"}')
    (run / "context.md").write_text("# evolution log\n\ngen 1: dev 0.25\n")
    return run
