"""Peft adapter folder -> GGUF LoRA that llama.cpp serves (llama.cpp's convert_lora_to_gguf.py).

The converter ships only in llama-cpp-python's sdist; ``scripts/setup`` extracts it (with its
``conversion/`` package and ``gguf-py``) to ``.venv/share/llama.cpp-convert``. Set
``SIA_LLAMA_CONVERT_DIR`` to use another copy. The base model's HF folder comes from sia-train's
GGUF -> HF conversion cache.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from sia_core.errors import SiaError

SCRIPT = "convert_lora_to_gguf.py"


def converter_dir() -> Path:
    """Where convert_lora_to_gguf.py is."""
    env = os.environ.get("SIA_LLAMA_CONVERT_DIR")
    folder = Path(env) if env else Path(sys.prefix) / "share" / "llama.cpp-convert"
    if not (folder / SCRIPT).is_file():
        raise SiaError(
            f"llama.cpp's {SCRIPT} is not in {folder}: rerun scripts/setup, or point "
            "SIA_LLAMA_CONVERT_DIR at a llama.cpp checkout"
        )
    return folder


def convert_peft_to_gguf(adapter_dir: Path, base_gguf: Path) -> Path:
    """Convert ``adapter_dir`` once; the GGUF LoRA is cached beside it as ``adapter.gguf``."""
    out = adapter_dir / "adapter.gguf"
    if out.is_file():
        return out
    if not (adapter_dir / "adapter_config.json").is_file():
        raise SiaError(f"{adapter_dir} is not a peft adapter folder (no adapter_config.json)")
    try:
        from sia_train.model import gguf_to_hf
    except ImportError as exc:
        raise SiaError("serving a trained adapter needs sia-train (pip install sia-train)") from exc
    base_hf = gguf_to_hf(base_gguf)
    folder = converter_dir()
    tmp = out.with_name(f".adapter.gguf.{os.getpid()}.tmp")
    env = {**os.environ, "PYTHONPATH": str(folder / "gguf-py"), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [
            sys.executable,
            str(folder / SCRIPT),
            "--base",
            str(base_hf),
            "--outfile",
            str(tmp),
            "--outtype",
            "f32",
            str(adapter_dir),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=folder,
        timeout=600,
    )
    if proc.returncode != 0 or not tmp.is_file():
        tmp.unlink(missing_ok=True)
        tail = (proc.stderr or proc.stdout)[-1500:]
        raise SiaError(f"converting the adapter {adapter_dir} to GGUF failed:\n{tail}")
    os.replace(tmp, out)
    return out
