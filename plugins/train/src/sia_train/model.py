"""The policy being trained: the base causal LM for ``job.base_model`` wrapped in a peft LoRA
(and, for PPO, a linear value head on its final hidden states).

``job.base_model`` is one of:

- a ``.gguf`` file (the local backend's SmolLM2): dequantized once by transformers into an fp32
  HF folder cached under ``$SIA_CACHE_DIR/models/<key>/`` (default ``~/.cache/sia/models/``),
  ``<key>`` being a sha256 of the file's size and first 16 MiB. transformers keeps a gguf
  quantizer marker on such a model that makes ``save_pretrained`` and training refuse it; the
  weights are plain fp32 already, so the marker is cleared before saving. The folder is written
  under a temporary name and renamed into place, so a killed conversion never leaves half a model;
  a lock file serialises concurrent conversions;
- an HF model folder (``config.json`` + weights);
- an HF hub id, only where a hub is reachable (offline it fails with one clear line).

Imports torch/transformers/peft inside the functions: importing this module is cheap.
"""

from __future__ import annotations

import hashlib
import inspect
import os
import shutil
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sia_core.contracts.errors import SiaError
from sia_core.machinery.fs import locked

from .profiles import machine_problem, profile_for

if TYPE_CHECKING:
    import torch

#: bytes of a GGUF file hashed (with its size) into its cache key
HASH_PREFIX_BYTES = 16 * 1024 * 1024
#: marker file written last into a finished conversion
DONE_MARKER = "sia_conversion.json"


def cache_root() -> Path:
    """Where converted models live: ``$SIA_CACHE_DIR/models`` or ``~/.cache/sia/models``."""
    base = os.environ.get("SIA_CACHE_DIR")
    root = Path(base).expanduser() if base else Path.home() / ".cache" / "sia"
    return root / "models"


def gguf_key(path: Path) -> str:
    """sha256 of the file size and its first :data:`HASH_PREFIX_BYTES` bytes (hex, 32 chars)."""
    h = hashlib.sha256()
    h.update(str(path.stat().st_size).encode())
    with open(path, "rb") as f:
        h.update(f.read(HASH_PREFIX_BYTES))
    return h.hexdigest()[:32]


def converted_folder(gguf: Path, cache: Path | None = None) -> Path:
    """The cached HF folder of ``gguf`` (it may not exist yet)."""
    return (cache or cache_root()) / gguf_key(gguf)


def gguf_to_hf(gguf: str | Path, cache: Path | None = None) -> Path:
    """Convert ``gguf`` to an fp32 HF folder once; later calls return the cached folder."""
    gguf = Path(gguf).expanduser().resolve()
    if not gguf.is_file():
        raise SiaError(f"base model {str(gguf)!r} does not exist")
    out = converted_folder(gguf, cache)
    if (out / DONE_MARKER).is_file():
        return out
    with locked(out.with_name(out.name + ".lock")):
        if (out / DONE_MARKER).is_file():  # another process converted it while we waited
            return out
        for stale in out.parent.glob(out.name + ".tmp-*"):  # a killed earlier conversion
            shutil.rmtree(stale, ignore_errors=True)
        if out.exists():  # a folder without the marker: not ours to trust
            shutil.rmtree(out)
        tmp = out.with_name(f"{out.name}.tmp-{os.getpid()}")
        # a one-off conversion can take minutes: say so (stderr, one line each way)
        print(f"sia: converting {gguf.name} to an HF folder once ({out}) ...", file=sys.stderr)
        started = time.monotonic()
        try:
            _convert(gguf, tmp)
            os.rename(tmp, out)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        seconds = time.monotonic() - started
        print(f"sia: converted {gguf.name} to an HF folder in {seconds:.0f} s", file=sys.stderr)
    return out


def _convert(gguf: Path, dest: Path) -> None:
    import json

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    start = time.monotonic()
    folder, name = str(gguf.parent), gguf.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model: Any = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    # the weights are dequantized fp32 already; the marker only blocks saving and training
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    dest.mkdir(parents=True)
    model.save_pretrained(dest)
    tokenizer.save_pretrained(dest)
    info = {"source": str(gguf), "seconds": round(time.monotonic() - start, 1)}
    (dest / DONE_MARKER).write_text(json.dumps(info), encoding="utf-8")


def _hub_offline() -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return True
    try:
        from huggingface_hub import constants

        return bool(constants.HF_HUB_OFFLINE)
    except ImportError:  # pragma: no cover - transformers depends on it
        return False


def resolve_base_model(base_model: str, cache: Path | None = None) -> str:
    """A local HF folder (converting a ``.gguf`` once) or, with a reachable hub, the HF id."""
    if not base_model:
        raise SiaError("the training job names no base model (the task model has no weights)")
    profile = profile_for(base_model)
    if profile is not None:  # SIA's base models: by profile name or hub id
        problem = machine_problem(profile)
        if problem:
            raise SiaError(problem)
        base_model = profile.hub_id
    path = Path(base_model).expanduser()
    if path.suffix == ".gguf":
        return str(gguf_to_hf(path, cache))
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise SiaError(f"base model folder {base_model!r} has no config.json")
        return str(path.resolve())
    if path.exists() or base_model.startswith((".", "/", "~")):
        raise SiaError(f"base model {base_model!r} is not a .gguf file or an HF model folder")
    if _hub_offline():
        raise SiaError(
            f"base model {base_model!r} is not a local .gguf file or model folder, and the model "
            "hub is off (HF_HUB_OFFLINE=1): pass a path, or allow hub access"
        )
    return base_model


def pick_device(settings: Mapping[str, Any]) -> str:
    """``settings["device"]``, or ``cuda`` when available, else ``cpu``."""
    import torch

    wanted = str(settings.get("device") or "auto")
    if wanted != "auto":
        return wanted
    return "cuda" if torch.cuda.is_available() else "cpu"


def load_base(base_model: str, settings: Mapping[str, Any], device: str) -> tuple[Any, Any]:
    """``(model, tokenizer)`` of the base model, on ``device``, in ``settings["dtype"]``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = resolve_base_model(base_model)
    dtype = getattr(torch, str(settings.get("dtype") or "float32"))
    model: Any
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
        model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype)
    except OSError as exc:  # hub unreachable, missing files
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SiaError(f"cannot load base model {base_model!r}: {first}") from exc
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model.to(device), tokenizer


def lora_config(settings: Mapping[str, Any]) -> Any:
    """The peft ``LoraConfig`` of a job: rank, alpha, dropout, target modules."""
    from peft import LoraConfig

    targets = settings.get("lora_target_modules", "all-linear")
    return LoraConfig(
        r=int(settings.get("lora_rank", 32)),
        lora_alpha=int(settings.get("lora_alpha", 64)),
        lora_dropout=float(settings.get("lora_dropout", 0.0)),
        target_modules=targets if isinstance(targets, str) else list(targets),
        task_type="CAUSAL_LM",
    )


def load_policy(
    base_model: str,
    settings: Mapping[str, Any],
    init_adapter: str | None = None,
    device: str | None = None,
) -> tuple[Any, Any]:
    """``(peft model, tokenizer)``: a fresh LoRA, or ``init_adapter`` loaded trainable.

    A continued adapter keeps its own LoRA config (rank, targets); the job's are ignored then.
    """
    from peft import PeftModel, get_peft_model

    device = device or pick_device(settings)
    model, tokenizer = load_base(base_model, settings, device)
    if init_adapter:
        if not (Path(init_adapter) / "adapter_config.json").is_file():
            raise SiaError(f"init adapter {init_adapter!r} is not a peft adapter folder")
        policy = PeftModel.from_pretrained(model, init_adapter, is_trainable=True)
    else:
        policy = get_peft_model(model, lora_config(settings))
    if settings.get("gradient_checkpointing"):  # GPU profiles: activations recomputed
        policy.gradient_checkpointing_enable()
        policy.enable_input_require_grads()
    return policy.to(device), tokenizer


def make_value_head(hidden_size: int, device: str) -> Any:
    """A linear value head on the final hidden states, zero-initialised (V = 0 at start)."""
    import torch

    head = torch.nn.Linear(hidden_size, 1)
    torch.nn.init.zeros_(head.weight)
    torch.nn.init.zeros_(head.bias)
    return head.to(device)


def cache_kwarg(model: Any) -> str:
    """The name of the KV-cache argument of ``model`` (or of the base model a peft one wraps):
    transformers renamed ``past_key_values`` to ``cache`` (5.x; ``generate`` follows
    ``forward``)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"


def trainable_state(model: Any) -> dict[str, torch.Tensor]:
    """Copies of the trainable (LoRA) tensors, by name: to compare before and after training."""
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
