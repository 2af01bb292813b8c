"""How ``llama_cpp.server`` is configured: its thread counts and the environment it is given.

Standard library only.
"""

from __future__ import annotations

import os

__all__ = ["SERVER_SETTING_NAMES", "cpu_count", "default_threads", "server_environment"]

#: environment names llama_cpp.server 0.3.36 reads as settings (pydantic-settings, no prefix,
#: case-insensitive; ``HOST``, ``PORT`` and ``CONFIG_FILE`` even override its command line): a
#: stray ``PORT`` or ``API_KEY`` in the orchestrator's environment would reconfigure the server,
#: so these are dropped from its environment.
SERVER_SETTING_NAMES = frozenset(
    (
        "host",
        "port",
        "ssl_keyfile",
        "ssl_certfile",
        "api_key",
        "interrupt_requests",
        "disable_ping_events",
        "root_path",
        "model",
        "model_alias",
        "n_gpu_layers",
        "split_mode",
        "main_gpu",
        "tensor_split",
        "vocab_only",
        "use_mmap",
        "use_mlock",
        "kv_overrides",
        "rpc_servers",
        "seed",
        "n_ctx",
        "n_batch",
        "n_ubatch",
        "n_threads",
        "n_threads_batch",
        "rope_scaling_type",
        "rope_freq_base",
        "rope_freq_scale",
        "yarn_ext_factor",
        "yarn_attn_factor",
        "yarn_beta_fast",
        "yarn_beta_slow",
        "yarn_orig_ctx",
        "mul_mat_q",
        "logits_all",
        "embedding",
        "offload_kqv",
        "flash_attn",
        "last_n_tokens_size",
        "lora_base",
        "lora_path",
        "numa",
        "chat_format",
        "chat_template_kwargs",
        "clip_model_path",
        "cache",
        "cache_type",
        "cache_size",
        "hf_tokenizer_config_path",
        "hf_pretrained_model_name_or_path",
        "hf_model_repo_id",
        "draft_model",
        "draft_model_num_pred_tokens",
        "type_k",
        "type_v",
        "verbose",
        "models",
        "config_file",
    )
)


def server_environment() -> dict[str, str]:
    """This process's environment without :data:`SERVER_SETTING_NAMES`, offline and unbuffered."""
    env = {k: v for k, v in os.environ.items() if k.lower() not in SERVER_SETTING_NAMES}
    env["HF_HUB_OFFLINE"] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    return env


def cpu_count() -> int:
    """The CPUs this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def default_threads() -> tuple[int, int]:
    """``(n_threads, n_threads_batch)`` for llama.cpp: half the CPUs (at least 1) for both.

    llama.cpp's worker threads busy-wait for each other, so they collapse when anything else
    (the gateway, sandboxed scaffolds, other jobs) needs a core. Measured on 2 cores
    (benchmarks/bench_llama_threads.py, a 722-token prompt): 1 thread 6.0 s idle and 6.5 s beside
    a busy process; 2 threads for the prompt 3.4 s idle but 17.1 s beside it. Generation: 1
    thread kept 126 tok/s beside a busy process, 2 fell to 3-13 tok/s. The local backend reads
    prompts on every CPU all the same (:func:`prompt_threads`): in a run the scaffolds wait on
    the model, so the cores are free.
    """
    n = max(1, cpu_count() // 2)
    return n, n


def prompt_threads() -> int:
    """Threads the local backend reads prompts with: every CPU (see :func:`default_threads`)."""
    return cpu_count()
