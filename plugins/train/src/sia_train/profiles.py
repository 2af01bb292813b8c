"""Base-model profiles: what training SIA's base models takes, and whether this machine has it.

A :class:`ModelProfile` names a model (``--task_model`` / a job's ``base_model`` may give the
profile's name or its hub id), the devices its LoRA update needs, the LoRA targets and training
defaults for it (SIA's: rank 32, learning rate 4e-5, bf16) and how it is served for rollouts.
:func:`machine_problem` says in one line what this machine lacks for a profile, or ``""``.
``sia models`` lists them (``--check NAME`` exits 1 with that line).

The memory figures are estimates for a LoRA update in bf16 (weights + activations of one micro
batch + LoRA optimizer state), not measured here: no GPU was lent to the project machine.

Standard library only (torch is asked about devices only inside :func:`visible_gpus`).
"""

from __future__ import annotations

import importlib.util
from typing import Any

import attrs

__all__ = ["GPU_TRAIN_DEFAULTS", "PROFILES", "ModelProfile", "machine_problem", "profile_for"]

#: SIA's GPU settings for a LoRA update (the CPU defaults stay DEFAULT_TRAIN_SETTINGS)
GPU_TRAIN_DEFAULTS: dict[str, Any] = {
    "lora_rank": 32,
    "lora_alpha": 64,
    "learning_rate": 4e-5,
    "dtype": "bfloat16",
    "device": "cuda",
    "gradient_checkpointing": True,
    "steps": 50,
    "group_size": 8,
}


@attrs.frozen(kw_only=True)
class ModelProfile:
    """One base model: its hub id, what training it needs, how it is trained and served."""

    name: str
    hub_id: str
    params_b: float  # parameters, billions (all experts for a mixture of experts)
    gpus: int  # devices the LoRA update needs
    gpu_memory_gb: int  # on each of them
    lora_targets: tuple[str, ...] | str
    parallel: str  # "single device", "FSDP across the GPUs"
    serving: str  # how rollouts and the loop serve it (base + the current adapter)
    settings: dict[str, Any] = attrs.field(factory=dict)  # over GPU_TRAIN_DEFAULTS
    #: the weights must be sharded across the GPUs (FSDP), which the worker does not do yet
    needs_sharding: bool = False

    def train_settings(self) -> dict[str, Any]:
        """GPU_TRAIN_DEFAULTS with this profile's own settings and LoRA targets."""
        return {**GPU_TRAIN_DEFAULTS, "lora_target_modules": self.lora_targets, **self.settings}


_ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")

PROFILES: tuple[ModelProfile, ...] = (
    ModelProfile(
        name="gpt-oss-20b",
        hub_id="openai/gpt-oss-20b",
        params_b=21.0,
        gpus=1,
        gpu_memory_gb=80,
        # the experts are fused 3-D parameters, not Linear modules: LoRA on attention
        lora_targets=_ATTENTION,
        parallel="single device",
        serving="vLLM: `vllm serve openai/gpt-oss-20b --enable-lora --max-lora-rank 32`",
    ),
    ModelProfile(
        name="gpt-oss-120b",
        hub_id="openai/gpt-oss-120b",
        params_b=117.0,
        gpus=8,
        gpu_memory_gb=80,
        lora_targets=_ATTENTION,
        parallel="FSDP across the GPUs (the bf16 weights alone are ~234 GB)",
        needs_sharding=True,
        serving="vLLM: `vllm serve openai/gpt-oss-120b --tensor-parallel-size 8 --enable-lora "
        "--max-lora-rank 32`",
    ),
    ModelProfile(
        name="qwen3-8b",
        hub_id="Qwen/Qwen3-8B",
        params_b=8.2,
        gpus=1,
        gpu_memory_gb=40,
        lora_targets="all-linear",
        parallel="single device",
        serving="vLLM: `vllm serve Qwen/Qwen3-8B --enable-lora --max-lora-rank 32`",
    ),
)


def profile_for(model: str) -> ModelProfile | None:
    """The profile named ``model`` (by name or hub id, any case), or ``None``."""
    key = model.strip().lower()
    for profile in PROFILES:
        if key in (profile.name, profile.hub_id.lower()):
            return profile
    return None


def visible_gpus() -> list[tuple[str, int]]:
    """``(name, memory in GB)`` of each CUDA device torch sees (none without torch)."""
    if importlib.util.find_spec("torch") is None:
        return []
    import torch

    if not torch.cuda.is_available():
        return []
    out = []
    for i in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(i)
        out.append((props.name, int(props.total_memory / 1e9)))
    return out


def machine_problem(profile: ModelProfile, gpus: list[tuple[str, int]] | None = None) -> str:
    """What this machine lacks to train ``profile`` (one line), or ``""``."""
    gpus = visible_gpus() if gpus is None else gpus
    need = f"{profile.gpus} GPU{'s' if profile.gpus > 1 else ''} with {profile.gpu_memory_gb} GB"
    fits = [g for g in gpus if g[1] >= profile.gpu_memory_gb * 0.95]  # "80 GB" cards: 79.x
    if len(fits) >= profile.gpus:
        if profile.needs_sharding:
            return (
                f"{profile.name} needs its weights sharded across {profile.gpus} GPUs (FSDP), "
                "which sia-train's worker does not do yet (it trains data parallel, a full copy "
                "per GPU)"
            )
        return ""
    have = "no CUDA GPU" if not gpus else ", ".join(f"{name} ({gb} GB)" for name, gb in gpus)
    return (
        f"{profile.name} needs {need} each for a LoRA update ({profile.parallel}); this machine "
        f"has {have}: train it with --executor modal (or ray on a GPU cluster)"
    )
