"""Base-model profiles (sia_train.profiles) and ``sia models``: what each needs, one line when
this machine lacks it, and the worker refusing such a job before it loads anything."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from sia_core.contracts.records import TrainJob
from sia_train.executor import LocalExecutor
from sia_train.profiles import PROFILES, machine_problem, profile_for
from sia_train.train_loop import settings_of

TINY = Path(__file__).resolve().parents[2] / "sia_core/src/sia_core/testing/tiny_task"


def sia(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sia_core.surface.cli", *args],
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_sia_models_lists_the_profiles_and_what_this_machine_lacks() -> None:
    proc = sia("models", "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    names = [p["name"] for p in data["profiles"]]
    assert names == ["gpt-oss-20b", "gpt-oss-120b", "qwen3-8b"]
    for p in data["profiles"]:
        assert p["train_settings"]["lora_rank"] == 32
        assert p["train_settings"]["learning_rate"] == 4e-5
        assert p["serving"].startswith("vLLM")
        if not data["gpus"]:
            assert "this machine has no CUDA GPU" in p["here"]


def test_check_is_one_line_and_exit_1_where_the_machine_cannot() -> None:
    proc = sia("models", "--check", "Qwen/Qwen3-8B")
    if profile_for("qwen3-8b") and machine_problem(PROFILES[2]):
        assert proc.returncode == 1
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("sia: qwen3-8b needs 1 GPU with 40 GB")
        assert "Traceback" not in proc.stderr
    unknown = sia("models", "--check", "gpt-5")
    assert unknown.returncode != 0
    assert "no model profile 'gpt-5' (known: gpt-oss-20b, gpt-oss-120b, qwen3-8b)" in unknown.stderr


def test_machine_problem_by_devices() -> None:
    small, big, qwen = (profile_for(n) for n in ("gpt-oss-20b", "gpt-oss-120b", "qwen3-8b"))
    assert small and big and qwen
    assert machine_problem(small, [("NVIDIA H100 80GB HBM3", 79)]) == ""
    assert "has NVIDIA A10 (24 GB)" in machine_problem(qwen, [("NVIDIA A10", 24)])
    assert machine_problem(qwen, [("NVIDIA A100", 40)]) == ""
    assert "needs 8 GPUs with 80 GB" in machine_problem(big, [("H100", 80)] * 4)
    # enough devices, but the 120b's weights need sharding, which the worker does not do yet
    assert "FSDP" in machine_problem(big, [("H100", 80)] * 8)


def test_a_profile_gives_the_gpu_defaults_under_the_jobs_settings(tmp_path: Path) -> None:
    job = TrainJob(
        job_id="p",
        algorithm="grpo",
        trainer="sia_rl_grpo.objective:make_objective",
        task_dir=str(TINY),
        scaffold=str(TINY / "reference/reference_target_agent.py"),
        base_model="openai/gpt-oss-20b",
        out_dir=str(tmp_path / "out"),
        settings={"steps": 3},
    )
    settings = settings_of(job)
    assert settings["lora_rank"] == 32 and settings["learning_rate"] == 4e-5
    assert settings["dtype"] == "bfloat16" and settings["gradient_checkpointing"] is True
    assert settings["lora_target_modules"] == ("q_proj", "k_proj", "v_proj", "o_proj")
    assert settings["steps"] == 3  # the job's own settings win
    if machine_problem(PROFILES[0]):
        result = LocalExecutor().run(job, lambda e: None)
        assert result.status == "failed"
        assert "gpt-oss-20b needs 1 GPU with 80 GB" in result.error
        assert "Traceback" not in result.error


def test_a_profile_as_the_local_task_model_is_one_line_where_the_machine_cannot(
    tmp_path: Path,
) -> None:
    if not machine_problem(PROFILES[2]):
        return  # a machine with a 40 GB GPU: the local backend goes on to fetch the model
    proc = sia(
        "--task", "tiny-add", "--backend", "local", "--task_model", "qwen3-8b", "--max_gen", "1",
        "--runs-dir", str(tmp_path),
    )  # fmt: skip
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if line.startswith("sia: error:")]
    assert len(errors) == 1
    assert "--task_model 'qwen3-8b': qwen3-8b needs 1 GPU with 40 GB" in errors[0]
    assert "vllm serve Qwen/Qwen3-8B" in errors[0] and "Traceback" not in proc.stderr
