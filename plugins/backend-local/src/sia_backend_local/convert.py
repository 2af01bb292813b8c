"""Conversions to GGUF with llama.cpp's own scripts: a peft adapter, and an HF model folder.

- :func:`convert_peft_to_gguf`: a peft LoRA folder -> the GGUF LoRA that ``llama_cpp.server
  --lora_path`` serves (``convert_lora_to_gguf.py``; needs the base model's HF folder).
- :func:`hf_to_gguf`: an HF causal-LM folder -> a GGUF the server loads
  (``convert_hf_to_gguf.py``), cached under ``$SIA_CACHE_DIR/gguf/`` (default
  ``~/.cache/sia/gguf/``).
- :func:`hf_id_folder`: an HF hub id -> its downloaded folder (only where a hub is reachable).
- :func:`retype_gguf`: a GGUF -> the same model stored as another type (llama.cpp's own
  ``llama_model_quantize``, in a subprocess; under a second), cached like the above.

The converters ship only in llama-cpp-python's sdist; ``scripts/setup`` extracts them (with their
``conversion/`` package and ``gguf-py``) to ``.venv/share/llama.cpp-convert``. Set
``SIA_LLAMA_CONVERT_DIR`` to use another copy. They run in a subprocess of this interpreter (they
import torch and transformers; the orchestrator does not). Every output is written under a
temporary name and renamed into place, so a killed conversion never leaves half a file.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from sia_core.contracts.errors import SiaError
from sia_core.machinery.fs import locked

LORA_SCRIPT = "convert_lora_to_gguf.py"
HF_SCRIPT = "convert_hf_to_gguf.py"
#: the GGUF LoRA written beside a peft adapter
ADAPTER_GGUF = "adapter.gguf"
#: what a served HF folder is quantized to (q8_0: 145 MB for SmolLM2-135M, near-lossless)
DEFAULT_OUTTYPE = "q8_0"
#: files of an HF folder whose change makes a new GGUF
_WEIGHT_GLOBS = ("config.json", "*.safetensors", "*.bin", "tokenizer*")
#: an HF hub id: ``name`` or ``owner/name``
_HF_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def converter_dir() -> Path:
    """Where llama.cpp's converter scripts are."""
    env = os.environ.get("SIA_LLAMA_CONVERT_DIR")
    folder = Path(env) if env else Path(sys.prefix) / "share" / "llama.cpp-convert"
    if not (folder / LORA_SCRIPT).is_file():
        raise SiaError(
            f"llama.cpp's {LORA_SCRIPT} is not in {folder}: rerun scripts/setup, or point "
            "SIA_LLAMA_CONVERT_DIR at a llama.cpp checkout"
        )
    return folder


def _run_converter(script: str, args: list[str], out: Path, what: str) -> None:
    """Run llama.cpp's converter ``script`` so that it writes ``out``."""
    folder = converter_dir()
    env = {**os.environ, "PYTHONPATH": str(folder / "gguf-py"), "HF_HUB_OFFLINE": "1"}
    _write_once(
        lambda tmp: [sys.executable, str(folder / script), "--outfile", str(tmp), *args],
        out,
        f"converting {what} to GGUF",
        env=env,
        cwd=folder,
    )


def _write_once(
    argv: Callable[[Path], list[str]],
    out: Path,
    doing: str,
    *,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> None:
    """Run ``argv(tmp)``, a command that writes the file ``tmp``, then rename it to ``out``
    (never a half-written ``out``). ``doing`` ("converting X to GGUF") names the one-off work on
    stderr, a line before and after, and in the one-line error."""
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    print(f"sia: {doing} once ({out}) ...", file=sys.stderr, flush=True)
    started = time.monotonic()
    try:
        proc = subprocess.run(
            argv(tmp), capture_output=True, text=True, env=env, cwd=cwd, timeout=1800
        )
    except subprocess.TimeoutExpired as exc:
        tmp.unlink(missing_ok=True)
        raise SiaError(f"{doing} took over {exc.timeout:g} s") from exc
    if proc.returncode != 0 or not tmp.is_file():
        tmp.unlink(missing_ok=True)
        tail = (proc.stderr or proc.stdout)[-1500:]
        raise SiaError(f"{doing} failed:\n{tail}")
    os.replace(tmp, out)
    seconds = time.monotonic() - started
    print(f"sia: {doing}: done in {seconds:.1f} s", file=sys.stderr, flush=True)


def _newer_than(out: Path, sources: list[Path]) -> bool:
    """``out`` exists and was written after every one of ``sources``."""
    try:
        mtime = out.stat().st_mtime_ns
        return all(s.stat().st_mtime_ns <= mtime for s in sources if s.exists())
    except OSError:
        return False


def convert_peft_to_gguf(adapter_dir: Path, base_hf: Path) -> Path:
    """The GGUF LoRA of the peft adapter ``adapter_dir`` (base model: the HF folder ``base_hf``).

    Converted once and cached beside the adapter as ``adapter.gguf``; a cached file older than
    the adapter's weights (the folder was trained again) is converted anew.
    """
    adapter_dir = Path(adapter_dir)
    out = adapter_dir / ADAPTER_GGUF
    config = adapter_dir / "adapter_config.json"
    if not config.is_file():
        raise SiaError(f"{adapter_dir} is not a peft adapter folder (no adapter_config.json)")
    weights = [config, *adapter_dir.glob("adapter_model.*")]
    with locked(adapter_dir / f".{ADAPTER_GGUF}.lock"):
        if not _newer_than(out, weights):
            _run_converter(
                LORA_SCRIPT,
                ["--base", str(base_hf), "--outtype", "f32", str(adapter_dir)],
                out,
                f"the adapter {adapter_dir}",
            )
    return out


def gguf_cache_root() -> Path:
    """Where served GGUFs of HF folders live: ``$SIA_CACHE_DIR/gguf`` or ``~/.cache/sia/gguf``."""
    base = os.environ.get("SIA_CACHE_DIR")
    root = Path(base).expanduser() if base else Path.home() / ".cache" / "sia"
    return root / "gguf"


def hf_folder_key(folder: Path, outtype: str) -> str:
    """sha256 of the folder's path, its weight/config/tokenizer files' names, sizes and mtimes."""
    h = hashlib.sha256(f"{folder.resolve()}\0{outtype}".encode())
    files = sorted({p for g in _WEIGHT_GLOBS for p in folder.glob(g) if p.is_file()})
    for p in files:
        st = p.stat()
        h.update(f"\0{p.name}\0{st.st_size}\0{st.st_mtime_ns}".encode())
    return h.hexdigest()[:32]


def check_hf_folder(folder: Path) -> None:
    """An HF causal-LM folder: ``config.json`` and weights (one clear line otherwise)."""
    if not (folder / "config.json").is_file():
        raise SiaError(f"--task_model {str(folder)!r}: an HF model folder needs a config.json")
    if not any(folder.glob("*.safetensors")) and not any(folder.glob("*.bin")):
        raise SiaError(
            f"--task_model {str(folder)!r}: the HF model folder has no weights "
            "(*.safetensors or *.bin)"
        )


def hf_to_gguf(folder: Path, outtype: str = DEFAULT_OUTTYPE, cache: Path | None = None) -> Path:
    """The GGUF llama.cpp serves for the HF folder ``folder`` (converted once, then cached)."""
    folder = Path(folder).expanduser().resolve()
    check_hf_folder(folder)
    root = cache or gguf_cache_root()
    out = root / f"{hf_folder_key(folder, outtype)}.gguf"
    if out.is_file():
        return out
    with locked(root / f"{out.name}.lock"):
        if not out.is_file():  # another process may have converted it while we waited
            _run_converter(
                HF_SCRIPT, ["--outtype", outtype, str(folder)], out, f"the model folder {folder}"
            )
    return out


#: the types :func:`retype_gguf` writes, by llama.cpp's ``LLAMA_FTYPE_*`` name
RETYPES = {
    "q8_0": "MOSTLY_Q8_0",
    "q4_0": "MOSTLY_Q4_0",
    "iq4_nl": "MOSTLY_IQ4_NL",
    "f16": "MOSTLY_F16",
    "f32": "ALL_F32",
}

_RETYPE_SCRIPT = """
import ctypes, sys, llama_cpp
params = llama_cpp.llama_model_quantize_default_params()
params.ftype = getattr(llama_cpp, "LLAMA_FTYPE_" + sys.argv[3])
params.allow_requantize = True
params.nthread = 2
rc = llama_cpp.llama_model_quantize(sys.argv[1].encode(), sys.argv[2].encode(), ctypes.byref(params))
sys.exit(1 if rc else 0)
"""


def retype_gguf(src: Path, outtype: str, cache: Path | None = None) -> Path:
    """``src`` stored as ``outtype`` (a key of :data:`RETYPES`), written once and cached.

    The orchestrator never imports llama_cpp: the conversion runs in a subprocess of this
    interpreter. Going to a wider type (Q4_1 -> Q8_0 or F32) keeps the weights (exactly, for F32)
    and lets llama.cpp read prompts faster on a CPU; Q4_0 and IQ4_NL quantise them again (a
    small loss) into types llama.cpp repacks for its fastest CPU kernels. The file is keyed by
    the source's size and first 16 MiB, so a changed source makes a new one.
    """
    if outtype not in RETYPES:
        raise SiaError(f"GGUF type {outtype!r} unknown: use one of {', '.join(RETYPES)}")
    src = Path(src).resolve()
    h = hashlib.sha256(f"{src.stat().st_size}\0{outtype}".encode())
    with open(src, "rb") as f:
        h.update(f.read(16 << 20))
    root = cache or gguf_cache_root()
    out = root / f"{src.stem}.{h.hexdigest()[:16]}.{outtype}.gguf"
    if out.is_file():
        return out
    root.mkdir(parents=True, exist_ok=True)
    with locked(root / f"{out.name}.lock"):
        if out.is_file():
            return out
        _write_once(
            lambda tmp: [
                sys.executable,
                "-c",
                _RETYPE_SCRIPT,
                str(src),
                str(tmp),
                RETYPES[outtype],
            ],
            out,
            f"storing {src.name} as {outtype}",
        )
    return out


def looks_like_hf_id(name: str) -> bool:
    """``owner/name`` or ``name`` (and not a path or a file name)."""
    return bool(_HF_ID.match(name)) and not name.endswith(".gguf")


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def gpu_profile_problem(model_id: str) -> str:
    """One line when ``model_id`` names a GPU base-model profile (``sia models``) this machine
    cannot train, else ``""`` (also without sia-train)."""
    try:
        from sia_train.profiles import machine_problem, profile_for
    except ImportError:
        return ""
    profile = profile_for(model_id)
    why = machine_problem(profile) if profile is not None else ""
    if profile is None or not why:
        return ""
    return (
        f"--task_model {model_id!r}: {why}; to use it as the task model, serve it on a GPU "
        f"machine ({profile.serving}) and run with --backend litellm (docs/training.md)"
    )


def hf_id_folder(model_id: str) -> Path:
    """The local folder of the hub model ``model_id`` (downloaded where a hub is reachable)."""
    problem = gpu_profile_problem(model_id)
    if problem:
        raise SiaError(problem)
    if _hub_offline():
        raise SiaError(
            f"--task_model {model_id!r} is not a local .gguf file or HF model folder, and the "
            "model hub is off (HF_HUB_OFFLINE=1): pass a path, or allow hub access"
        )
    try:
        from huggingface_hub import snapshot_download
    except ImportError as exc:
        raise SiaError(
            f"--task_model {model_id!r}: a hub id needs huggingface_hub (pip install sia-train[torch])"
        ) from exc
    patterns = ["*.json", "*.safetensors", "tokenizer*", "*.jinja", "*.model", "*.txt"]
    try:
        return Path(snapshot_download(model_id, allow_patterns=patterns))
    except Exception as exc:  # network, unknown repo, gated model
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SiaError(
            f"--task_model {model_id!r}: cannot download it from the hub: {first}"
        ) from exc
