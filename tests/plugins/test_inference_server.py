"""Rollouts through an inference server (``--train-opt inference_url``), against a
protocol-faithful stub of vLLM's OpenAI server with LoRA hot-loading, over real HTTP.

The real SmolLM2 is trained (its update reads the server's token ids and log-probabilities);
the stub samples the completions. Not run against a real vLLM here (no GPU): docs/training.md.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from sia_train.executor import LocalExecutor
from sia_train.vllm_stub import VLLMStub

from .test_train_worker import make_job
from .test_train_worker import model_cache as _model_cache  # noqa: F401 (a fixture)
from .test_train_worker import shaped_task as _shaped_task  # noqa: F401 (a fixture)

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("_model_cache")]


def job_for(task: Path, out: Path, url: str) -> Any:
    return make_job(
        task, out, "grpo", steps=2, group_size=4, items_per_step=2, checkpoint_every=1,
        inference_url=url, inference_model="base-model", micro_batch_tokens=256,
    )  # fmt: skip


def completions(stub: VLLMStub) -> list[dict[str, Any]]:
    return [body for route, body in stub.requests if route == "/v1/completions"]


def test_rollouts_come_from_the_server_and_each_update_is_hot_loaded(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    task = request.getfixturevalue("_shaped_task")
    out = tmp_path / "out"
    with VLLMStub() as stub:
        result = LocalExecutor().run(job_for(task, out, stub.url), lambda e: None)
        assert result.status == "ok", result.error
        calls = completions(stub)
    assert len(calls) == 16  # 2 steps x 2 items x 4 rollouts, one call each
    assert all(isinstance(c["prompt"], list) and c["return_tokens_as_token_ids"] for c in calls)
    # step 1 samples the base model, step 2 the adapter step 1 trained (loaded by name)
    assert {c["model"] for c in calls[:8]} == {"base-model"}
    assert len(stub.load_order) == 2 and stub.load_order[0].endswith("-step-1")
    assert {c["model"] for c in calls[8:]} == {stub.load_order[0]}
    unloads = [b["lora_name"] for r, b in stub.requests if r == "/v1/unload_lora_adapter"]
    assert unloads == stub.load_order  # each replaced one, then the last one at the end
    lines = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]
    assert [x["calls"] for x in lines] == [8, 8] and all(x["tokens"] > 0 for x in lines)
    assert all(x["unmatched_calls"] == 0 for x in lines)
    assert result.metrics["update_norm"] > 0
    assert not (out / "served").exists()


def test_a_server_that_dies_mid_run_fails_the_step_and_the_job_resumes(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    task = request.getfixturevalue("_shaped_task")
    out = tmp_path / "out"
    with VLLMStub(die_after=8) as stub:  # answers step 1, dies at step 2's first call
        port = stub.port or int(stub.url.rsplit(":", 1)[1].split("/")[0])
        job = job_for(task, out, stub.url)
        failed = LocalExecutor().run(job, lambda e: None)
    assert failed.status == "failed"
    first = failed.error.splitlines()[0]
    assert first.startswith("step 2: all 8 rollouts failed") and "inference server" in first
    with VLLMStub(port=port, seed=1) as again:  # the server is back, on the same address
        resumed = LocalExecutor().run(job, lambda e: None)
        assert resumed.status == "ok", resumed.error
        # the checkpoint's adapter is served before the resumed step samples
        assert again.load_order[0].endswith("-start")
        assert {c["model"] for c in completions(again)} == {again.load_order[0]}
    assert resumed.metrics["resumed_from"] == 1
    lines = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [1, 2]
