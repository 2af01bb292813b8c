"""The ``modal`` executor, everything but the remote call (Modal cannot be reached here).

The image is built as a real ``modal.Image`` (construction is lazy and offline) and through a
recording stand-in to check its steps; jobs are packed and unpacked as the container would;
``remote.run_job`` runs here with a stand-in worker; results are unpacked from fake messages.
"""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path, PurePosixPath
from typing import Any

import pytest

from sia_core.contracts.records import TrainJob, TrainResult, from_json, to_json
from sia_core.services.taskdir import load_task
from sia_executor_modal import executor as ex
from sia_executor_modal import jobpack, remote
from sia_executor_modal.executor import NO_TOKEN, ModalExecutor, build_image, image_spec

TINY = Path(__file__).resolve().parents[2] / "sia_core/src/sia_core/testing/tiny_task"
TRAINER = "sia_rl_grpo.objective:make_objective"


@pytest.fixture
def no_token(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for var in ("MODAL_TOKEN_ID", "MODAL_TOKEN_SECRET", "MODAL_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("MODAL_CONFIG_PATH", str(tmp_path / "no-such-modal.toml"))


@pytest.fixture
def container(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """The container's /tmp/sia-job and /sia Volume, as folders under tmp_path."""
    monkeypatch.setattr(jobpack, "JOB_ROOT", PurePosixPath(tmp_path / "container-job"))
    monkeypatch.setattr(jobpack, "VOLUME_ROOT", PurePosixPath(tmp_path / "volume"))
    return tmp_path


def make_job(tmp_path: Path, base_model: str, init_adapter: str | None = None) -> TrainJob:
    return TrainJob(
        job_id="run_x-gen_3",
        algorithm="grpo",
        trainer=TRAINER,
        task_dir=str(TINY),
        scaffold=str(TINY / "reference" / "reference_target_agent.py"),
        base_model=base_model,
        out_dir=str(tmp_path / "local-out"),
        init_adapter=init_adapter,
        seed=7,
        settings={"steps": 2, "group_size": 4},
    )


class Recorder:
    """Stands in for the modal module: records every call of the image-building chain."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []
        self.Image = self

    def __getattr__(self, name: str) -> Any:
        def call(*args: Any, **kwargs: Any) -> Recorder:
            self.calls.append((name, args, kwargs))
            return self

        return call


# --------------------------------------------------------------------------------------------
# Image
# --------------------------------------------------------------------------------------------


def test_image_installs_the_worker_stack_and_mounts_sia() -> None:
    import importlib.metadata

    spec = image_spec(TRAINER, extra_pip=["rapidfuzz"])
    torch_version = importlib.metadata.version("torch").split("+")[0]
    assert f"torch=={torch_version}" in spec.pip  # the CPU tag dropped: PyPI's CUDA build
    names = [p.split("=")[0].split(">")[0].split("<")[0] for p in spec.pip]
    for needed in ("transformers", "peft", "gguf", "safetensors", "pluggy", "attrs", "cattrs"):
        assert needed in names, needed
    assert {"numpy", "scikit-learn", "rapidfuzz"} <= set(names)
    assert not [n for n in names if n.startswith("sia")]  # sia's packages are mounted instead
    assert len(names) == len(set(names))
    assert spec.local_modules == ("sia_core", "sia_train", "sia_executor_modal", "sia_rl_grpo")
    assert "trl" not in names

    fake = Recorder()
    build_image(spec, fake)
    assert [c[0] for c in fake.calls] == [
        "debian_slim",
        "pip_install",
        "env",
        "add_local_python_source",
    ]
    assert fake.calls[0][2] == {"python_version": "3.11"}
    assert fake.calls[1][1] == spec.pip
    assert fake.calls[2][1][0]["PYTHONPATH"] == "/root"
    assert fake.calls[3][1] == spec.local_modules
    commands = spec.install_commands()
    assert commands[1].startswith("pip install torch==") and "peft" in commands[1]

    import modal

    image = build_image(spec, modal)
    assert isinstance(image, modal.Image)
    app = modal.App("sia-train-test")
    function = app.function(image=image, gpu="H100", timeout=60, serialized=True)(remote.run_job)
    assert function is not None


def test_plugin_module_imports_neither_modal_nor_torch() -> None:
    probe = textwrap.dedent(
        """
        import json, sys
        from sia_core.machinery.plugins import get_plugin_manager, resolve
        spec = get_plugin_manager().executors().get("modal")
        executor = resolve(spec.factory)()
        executor.available()
        print(json.dumps([m for m in ("modal", "torch", "trl") if m in sys.modules]))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []


# --------------------------------------------------------------------------------------------
# Token
# --------------------------------------------------------------------------------------------


def test_available_asks_for_a_token(no_token: None, tmp_path: Path) -> None:
    assert ModalExecutor().available() == (False, NO_TOKEN)
    result = ModalExecutor().run(make_job(tmp_path, "HuggingFaceTB/x"), lambda e: None)
    assert result.status == "failed" and "modal token new" in result.error


def test_token_from_config_file_or_env(no_token: None, tmp_path: Path) -> None:
    config = tmp_path / "modal.toml"
    config.write_text(
        '[other]\ntoken_id = "ak-1"\n[me]\ntoken_id = "ak-2"\ntoken_secret = "as-2"\n'
    )
    env = {"MODAL_CONFIG_PATH": str(config)}
    assert not ex.modal_token(env)  # no profile is active and the first has no secret
    assert ex.modal_token({**env, "MODAL_PROFILE": "me"})
    config.write_text('[me]\ntoken_id = "ak"\ntoken_secret = "as"\nactive = true\n')
    assert ex.modal_token(env)
    assert ex.modal_token({"MODAL_TOKEN_ID": "ak", "MODAL_TOKEN_SECRET": "as"})
    os.environ["MODAL_CONFIG_PATH"] = str(config)  # restored by the no_token fixture
    ok, why = ModalExecutor(gpu="A100").available()
    assert ok and "A100" in why


# --------------------------------------------------------------------------------------------
# Job round trip
# --------------------------------------------------------------------------------------------


def test_job_round_trips_into_the_container(container: Path) -> None:
    gguf = container / "model.gguf"
    gguf.write_bytes(b"GGUF" + os.urandom(4096))
    adapter = container / "parent-adapter"
    (adapter / "checkpoint").mkdir(parents=True)
    (adapter / "adapter_config.json").write_text('{"r": 8}')
    (adapter / "adapter_model.safetensors").write_bytes(b"\0" * 64)
    (adapter / "optimizer.pt").write_bytes(b"\0" * 64)
    job = make_job(container, str(gguf), str(adapter))

    packed = ModalExecutor().prepare(job)[0]
    assert from_json(TrainJob, to_json(packed.job)) == packed.job
    rjob = packed.job
    assert rjob.seed == job.seed and rjob.settings == job.settings and rjob.trainer == TRAINER
    assert rjob.base_model == str(jobpack.VOLUME_ROOT / packed.upload.remote)
    assert packed.upload.local == gguf and packed.upload.remote.endswith("/model.gguf")
    assert rjob.out_dir == packed.remote_out and rjob.out_dir.startswith(str(jobpack.VOLUME_ROOT))
    assert pack_again_is_same_place(job, packed)

    unpacked = jobpack.unpack_job(to_json(packed.job), packed.payload)
    assert unpacked == rjob
    task = load_task(unpacked.task_dir)
    assert task.name == "tiny-add" and len(task.train_examples()) == 24
    assert Path(unpacked.scaffold).read_text() == Path(job.scaffold).read_text()
    shipped = {p.name for p in Path(unpacked.init_adapter or "").iterdir()}
    assert shipped == {"adapter_config.json", "adapter_model.safetensors"}

    hub = jobpack.pack_job(make_job(container, "HuggingFaceTB/SmolLM2-135M-Instruct"))
    assert hub.upload is None and hub.job.base_model == "HuggingFaceTB/SmolLM2-135M-Instruct"


def pack_again_is_same_place(job: TrainJob, packed: jobpack.PackedJob) -> bool:
    """The same job lands in the same remote out_dir (so a rerun finds its checkpoint)."""
    return jobpack.pack_job(job).remote_out == packed.remote_out


def test_tar_members_cannot_escape(tmp_path: Path) -> None:
    import io
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo("../evil.txt")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    with pytest.raises(ValueError, match="refusing"):
        jobpack.unpack_into(buf.getvalue(), tmp_path / "dest")
    assert not (tmp_path / "evil.txt").exists()


# --------------------------------------------------------------------------------------------
# The container side and the result
# --------------------------------------------------------------------------------------------

FAKE_WORKER = """\
import json, sys
from pathlib import Path
job = json.loads(Path(sys.argv[-1]).read_text())
out = Path(job["out_dir"])
print(json.dumps({"event": "start", "pid": 1, "steps": 2, "resumed_from": 0}), flush=True)
print("some warning on the way", flush=True)
print(json.dumps({"event": "step", "step": 1, "steps": 2}), flush=True)
(out / "adapter_config.json").write_text('{"r": 8}')
(out / "adapter_model.safetensors").write_bytes(b"lora")
(out / "optimizer.pt").write_bytes(b"big")
(out / "checkpoint").mkdir(exist_ok=True)
(out / "checkpoint" / "state.json").write_text("{}")
(out / "train_log.jsonl").write_text('{"step": 1}\\n')
ok = Path(job["scaffold"]).exists() and Path(job["task_dir"], "task.toml").exists()
result = {"status": "ok" if ok else "failed", "adapter": str(out),
          "log": str(out / "train_log.jsonl"), "metrics": {"steps": 1}, "error": ""}
(out / "result.json").write_text(json.dumps(result))
"""


def test_run_job_streams_progress_and_returns_the_adapter(container: Path) -> None:
    fake = container / "fake_python"
    (container / "fake_worker.py").write_text(FAKE_WORKER)
    fake.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{container / "fake_worker.py"}" "$@"\n')
    fake.chmod(0o755)
    job = make_job(container, "HuggingFaceTB/x")
    packed = jobpack.pack_job(job)
    messages = list(remote.run_job(to_json(packed.job), packed.payload, python=str(fake)))
    progress = [m["progress"]["event"] for m in messages if "progress" in m]
    assert progress == ["start", "step"]
    final = messages[-1]["final"]
    assert final["returncode"] == 0 and final["remote_out"] == packed.remote_out

    result = jobpack.unpack_result(job, final)
    out = Path(job.out_dir)
    assert result.status == "ok", result.error
    assert result.adapter == str(out) and result.log == str(out / "train_log.jsonl")
    assert result.metrics == {"steps": 1, "executor": "modal", "remote_out": packed.remote_out}
    names = {p.name for p in out.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "worker.log"} <= names
    assert not names & {"optimizer.pt", "checkpoint"}  # stays on the Volume
    assert "some warning on the way" in (out / "worker.log").read_text()


def test_failed_remote_results(tmp_path: Path) -> None:
    job = make_job(tmp_path, "HuggingFaceTB/x")
    failed = TrainResult(status="failed", error="step 1: all 4 rollouts failed")
    message = {"result": to_json(failed), "returncode": 1, "log_tail": "Traceback ..."}
    result = jobpack.unpack_result(job, message)
    assert result.status == "failed" and result.adapter is None
    assert "all 4 rollouts failed" in result.error and "Traceback ..." in result.error

    killed = jobpack.unpack_result(job, {"result": None, "returncode": -9, "log_tail": ""})
    assert killed.status == "failed" and "code -9" in killed.error

    events: list[dict[str, Any]] = []
    lines = ['{"event": "step", "step": 1}', "noise", '{"no_event": 1}', "{broken"]
    jobpack.progress_events(lines, events.append)
    assert events == [{"event": "step", "step": 1}]


def test_the_gpu_request_follows_the_base_models_profile() -> None:
    """What `app.function(gpu=...)` gets, parsed by the installed modal client itself."""
    from modal._utils.function_utils import parse_gpu_config

    def job(base: str, **settings: object) -> TrainJob:
        return TrainJob(
            job_id="g", algorithm="grpo", trainer="x:y", task_dir="/t", scaffold="/t/s.py",
            base_model=base, out_dir="/o", settings=dict(settings),
        )  # fmt: skip

    cases = {
        ("openai/gpt-oss-120b", ()): ("H100", 8),
        ("gpt-oss-20b", ()): ("H100", 1),
        ("Qwen/Qwen3-8B", ()): ("L40S", 1),
        ("/models/SmolLM2.gguf", ()): ("H100", 1),  # no profile: the executor's default
        ("qwen3-8b", (("modal_gpu", "A100-80GB:2"),)): ("A100-80GB", 2),
    }
    for (base, settings), (kind, count) in cases.items():
        request = ex.gpu_request(job(base, **dict(settings)))
        parsed = parse_gpu_config(request)
        assert (parsed.gpu_type, parsed.count) == (kind, count), base
    assert "gpu" in inspect.signature(__import__("modal").App.function).parameters
