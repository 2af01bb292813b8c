"""``--task_model`` for the local backend: what it accepts, and one clear line for the rest.

Nothing here starts a model server (the served HF folder is tested in test_weights_e2e.py).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sia_backend_local.backend import MODEL_NAME, LocalBackend
from sia_backend_local.convert import (
    ADAPTER_GGUF,
    check_hf_folder,
    convert_peft_to_gguf,
    hf_folder_key,
    looks_like_hf_id,
)
from sia_backend_local.smollm2 import smollm2_gguf
from sia_core.contracts.backend import BackendOptions
from sia_core.contracts.errors import SiaError


def backend(task_model: str | None) -> LocalBackend:
    return LocalBackend(BackendOptions(task_model=task_model))


def test_a_gguf_file_is_served_as_it_is(tmp_path: Path) -> None:
    copy = tmp_path / "mine.gguf"
    copy.symlink_to(smollm2_gguf())
    model = backend(str(copy)).task_model()
    assert model.name == "mine" and model.base_model == str(copy.resolve())
    assert model.gguf == copy.resolve()


def _file_type(path: Path) -> int:
    import gguf

    field = gguf.GGUFReader(path).fields["general.file_type"]
    return int(field.parts[field.data[0]][0])


def test_the_bundled_model_is_served_as_q4_0_written_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SIA_CACHE_DIR", str(tmp_path / "cache"))
    served = set()
    for wanted in (None, "smollm2", MODEL_NAME):
        model = backend(wanted).task_model()
        assert model.name == MODEL_NAME and model.trainable
        assert model.base_model == str(model.gguf)  # training converts what is served
        served.add(model.gguf)
    (gguf_path,) = served
    assert gguf_path.parent == tmp_path / "cache" / "gguf" and gguf_path.name.endswith(".q4_0.gguf")
    assert _file_type(smollm2_gguf()) == 3 and _file_type(gguf_path) == 2  # Q4_1 -> Q4_0
    said = capfd.readouterr().err
    assert said.count(f"sia: storing {smollm2_gguf().name} as q4_0 once") == 1
    assert f"sia: storing {smollm2_gguf().name} as q4_0: done in " in said
    written = gguf_path.stat().st_mtime_ns
    assert backend(None).task_model().gguf.stat().st_mtime_ns == written  # cached, not redone
    assert capfd.readouterr().err == ""

    shipped = LocalBackend(BackendOptions(settings={"serve_type": "q4_1"})).task_model()
    assert shipped.gguf == smollm2_gguf() and shipped.base_model == str(smollm2_gguf())
    f32 = LocalBackend(BackendOptions(settings={"serve_type": "F32"})).task_model()
    assert _file_type(f32.gguf) == 0
    q8 = LocalBackend(BackendOptions(settings={"serve_type": "q8_0"})).task_model()
    assert _file_type(q8.gguf) == 7 and q8.base_model == str(q8.gguf)


def test_the_served_model_reads_prompts_with_flash_attention(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SIA_CACHE_DIR", str(tmp_path / "cache"))
    for flash, line in (
        ("1", "flash_attn            = enabled"),
        ("0", "flash_attn            = disabled"),
    ):
        run_dir = tmp_path / f"run-{flash}"
        run_dir.mkdir()
        local = LocalBackend(BackendOptions(run_dir=str(run_dir), settings={"flash_attn": flash}))
        try:
            reply = local.task_model().chat(
                {"messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 4}
            )
            assert reply["choices"][0]["message"]["content"]
        finally:
            local.close()
        log = (run_dir / "local_model_server.log").read_text(encoding="utf-8")
        assert "file type   = Q4_0" in log and line in log


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"serve_type": "q2_k"}, "serve_type=q2_k: use one of q4_0, q8_0, iq4_nl, f16, f32, q4_1"),
        ({"flash_attn": "maybe"}, "flash_attn='maybe': use 1 or 0"),
    ],
)
def test_a_bad_serving_setting_is_one_line(settings: dict[str, str], message: str) -> None:
    with pytest.raises(SiaError, match=message) as info:
        LocalBackend(BackendOptions(settings=settings))
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("wanted", "message"),
    [
        ("HuggingFaceTB/SmolLM2-135M-Instruct", "HF_HUB_OFFLINE=1"),
        ("./no/such/model", "a .gguf file, an HF model folder or an HF hub id"),
        ("model.gguf", "a .gguf file, an HF model folder or an HF hub id"),
    ],
)
def test_what_cannot_be_served_is_one_line(wanted: str, message: str) -> None:
    with pytest.raises(SiaError, match=message.replace(".", r"\.")) as info:
        backend(wanted).task_model()
    assert "\n" not in str(info.value) and repr(wanted) in str(info.value)


def test_hf_folder_without_weights_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SiaError, match=r"needs a config\.json"):
        backend(str(tmp_path)).task_model()
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(SiaError, match="has no weights"):
        check_hf_folder(tmp_path)


def test_hf_folder_key_follows_the_weights(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "model.safetensors").write_bytes(b"0" * 10)
    key = hf_folder_key(tmp_path, "q8_0")
    assert hf_folder_key(tmp_path, "q8_0") == key and hf_folder_key(tmp_path, "f16") != key
    time.sleep(0.01)
    (tmp_path / "model.safetensors").write_bytes(b"1" * 10)
    assert hf_folder_key(tmp_path, "q8_0") != key


def test_hub_ids_are_told_from_paths() -> None:
    assert looks_like_hf_id("HuggingFaceTB/SmolLM2-135M-Instruct") and looks_like_hf_id("gpt2")
    for not_id in ("./x", "/abs/path", "a/b/c", "x.gguf", "~/m", ""):
        assert not looks_like_hf_id(not_id)


def test_cached_adapter_gguf_is_reused_until_the_adapter_changes(tmp_path: Path) -> None:
    """A GGUF LoRA newer than the adapter is served as it is (no converter is needed for that);
    one older than the adapter's weights (the folder was trained again) is converted anew."""
    (tmp_path / "adapter_config.json").write_text("{}")
    (tmp_path / "adapter_model.safetensors").write_bytes(b"w")
    time.sleep(0.01)
    (tmp_path / ADAPTER_GGUF).write_bytes(b"gguf")
    os.environ["SIA_LLAMA_CONVERT_DIR"] = str(tmp_path / "no-converter")
    try:
        assert convert_peft_to_gguf(tmp_path, tmp_path) == tmp_path / ADAPTER_GGUF
        time.sleep(0.01)
        (tmp_path / "adapter_model.safetensors").write_bytes(b"w2")
        with pytest.raises(SiaError, match=r"convert_lora_to_gguf\.py is not in"):
            convert_peft_to_gguf(tmp_path, tmp_path)
    finally:
        del os.environ["SIA_LLAMA_CONVERT_DIR"]
    with pytest.raises(SiaError, match="not a peft adapter folder"):
        convert_peft_to_gguf(tmp_path / "nothing", tmp_path)


def test_cli_hub_id_offline_is_one_line(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "sia_core.surface.cli",
            "--task",
            "tiny-add",
            "--backend",
            "local",
            "--task_model",
            "HuggingFaceTB/SmolLM2-135M-Instruct",
            "--max_gen",
            "1",
            "--runs-dir",
            str(tmp_path / "runs"),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        timeout=120,
    )
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if line.startswith("sia: error:")]
    assert len(errors) == 1 and "HF_HUB_OFFLINE=1" in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_conversion_says_it_starts_and_ends(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """A one-off conversion prints a line before and after (it can take minutes); a cached one
    prints nothing. The converter here is a stand-in script run as the real one is."""
    conv = tmp_path / "convert"
    (conv / "gguf-py").mkdir(parents=True)
    (conv / "convert_lora_to_gguf.py").write_text(
        "import sys\nout = sys.argv[sys.argv.index('--outfile') + 1]\n"
        "open(out, 'wb').write(b'GGUF')\n"
    )
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    (adapter / "adapter_model.safetensors").write_bytes(b"w")
    os.environ["SIA_LLAMA_CONVERT_DIR"] = str(conv)
    try:
        out = convert_peft_to_gguf(adapter, tmp_path)
        first = capfd.readouterr().err
        assert out.read_bytes() == b"GGUF"
        assert convert_peft_to_gguf(adapter, tmp_path) == out
        again = capfd.readouterr().err
    finally:
        del os.environ["SIA_LLAMA_CONVERT_DIR"]
    assert f"sia: converting the adapter {adapter} to GGUF once" in first
    assert f"sia: converting the adapter {adapter} to GGUF: done in " in first
    assert again == ""
