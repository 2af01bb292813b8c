"""The training worker's settings beyond ``sia_core.contracts.training.DEFAULT_TRAIN_SETTINGS``.

Standard library only: the plugin's entry point declares these names (``ExecutorSpec.settings``)
so that a mistyped ``--train-opt`` key is refused before a run starts.
"""

from __future__ import annotations

from typing import Any

#: worker settings beyond sia_core.contracts.training.DEFAULT_TRAIN_SETTINGS (job.settings overrides both)
WORKER_DEFAULTS: dict[str, Any] = {
    "lora_dropout": 0.0,
    "lora_target_modules": "all-linear",
    "max_grad_norm": 1.0,
    "weight_decay": 0.0,
    "adam_betas": [0.9, 0.95],  # TTT-Discover's Adam betas
    "checkpoint_every": 5,  # steps; 0: only the final save
    "rollout_parallel": 16,  # scaffold workers per step (capped by group_size * items_per_step)
    "rollout_timeout_s": 600.0,  # one rollout (scaffold solve) at most
    # prompt + completion tokens per forward/backward: on lawbench (8 calls of ~300 tokens) 4096
    # peaked at 7.9 GB RSS, 1024 at 3.4 GB, in the same time
    "micro_batch_tokens": 1024,
    "batch_wait_s": 0.25,  # how long the policy waits for more calls to batch
    "device": "auto",
    "dtype": "float32",
    # None: all CPUs but one. On 2 shared cores, 2 OpenMP threads made a 4 x 16-token generate
    # take 24-48 s while another process was busy, 1 thread 1.5 s (spinning threads starve)
    "torch_threads": None,
    "gradient_checkpointing": False,  # True in the GPU profiles (sia_train.profiles)
    "nproc": 1,  # data-parallel worker processes (torchrun; sia_train.distributed)
    # rollouts on an inference server (vLLM's OpenAI API, adapter hot-loaded; sia_train.
    # server_policy): its /v1 URL and its name for the base model (default: the job's)
    "inference_url": None,
    "inference_model": None,
}

#: every --train-opt key the local worker reads beyond DEFAULT_TRAIN_SETTINGS
WORKER_SETTINGS: tuple[str, ...] = (*WORKER_DEFAULTS, "train_timeout_s")
