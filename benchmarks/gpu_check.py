"""GPU check: our GRPO step against trl's GRPOTrainer on the same batch, on randomly initialised
models (no download): SmolLM2-135M's shape and a ~1B Llama (Llama-3.2-1B's shape).

For each model: a folder is built from the config (random weights, saved with
``save_pretrained``) with a byte-level tokenizer made here (ChatML template, filler tokens up
to the model's vocabulary); then ``--steps`` optimizer steps of

- the sia worker (``sia_train``: the timing scaffold's rollouts through the gateway, batched
  generation, the GRPO loss, AdamW), run by the ``local`` executor, and
- trl's ``GRPOTrainer`` on the same prompts, batch (2 prompts x 4 completions), completion
  length, LoRA (r 32, all-linear), beta (0.04) and learning rate (4e-5, SIA's),

each step's seconds timed (the first is warm-up, not counted). Prints a markdown table:
seconds per step, completion tokens per second, peak GPU memory. One run, under 8 minutes on
one H200; the figures go to docs/training.md with the date.

    .venv/bin/python benchmarks/gpu_check.py                 # on a CUDA machine
    .venv/bin/python benchmarks/gpu_check.py --dry-run       # CPU, tiny config (tests run it)
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

sys.path.insert(0, str(Path(__file__).parent))
from bench_rl_cpu import timing_task, trl_grpo_steps

from sia_core.contracts.records import TrainJob
from sia_train.executor import LocalExecutor

SHAPES: dict[str, dict[str, Any]] = {
    "smollm2-135m-shape": dict(
        vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
        num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=8192,
        tie_word_embeddings=True,
    ),
    "llama-1b-shape": dict(
        vocab_size=128256, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
        num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=8192,
        tie_word_embeddings=True,
    ),
    "tiny": dict(  # --dry-run: seconds on a CPU
        vocab_size=512, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
        tie_word_embeddings=True,
    ),
}  # fmt: skip
CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIAL = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")


def tokenizer_for(vocab_size: int) -> Any:
    """A byte-level tokenizer (every text encodes, no merges) padded to ``vocab_size`` tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {ch: i for i, ch in enumerate(alphabet)}
    for token in SPECIAL:
        vocab[token] = len(vocab)
    width = 2
    while len(vocab) < vocab_size:  # filler: never produced by encoding, decodable
        for a in alphabet:
            for b in alphabet:
                if len(vocab) >= vocab_size:
                    break
                vocab.setdefault(a + b if width == 2 else a + b + a, len(vocab))
        width += 1
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=SPECIAL[1], eos_token=SPECIAL[2], pad_token=SPECIAL[0]
    )
    fast.add_special_tokens({"additional_special_tokens": list(SPECIAL)})
    fast.chat_template = CHATML
    return fast


def build_model(shape: str, root: Path) -> Path:
    """A random-weight model folder of ``shape`` (config, weights, tokenizer)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    folder = root / shape
    config = LlamaConfig(**SHAPES[shape], bos_token_id=1, eos_token_id=2, pad_token_id=0)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer_for(config.vocab_size).save_pretrained(folder)
    return folder


def ours(folder: Path, task: Path, out: Path, args: argparse.Namespace) -> dict[str, Any]:
    job = TrainJob(
        job_id=f"gpu-check-{folder.name}",
        algorithm="grpo",
        trainer="sia_rl_grpo.objective:make_objective",
        task_dir=str(task),
        scaffold=str(task / "reference" / "reference_target_agent.py"),
        base_model=str(folder),
        out_dir=str(out),
        settings={
            "steps": args.steps,
            "group_size": 4,
            "items_per_step": 2,
            "learning_rate": 4e-5,
            "lora_rank": 32,
            "lora_alpha": 64,
            "kl_coef": 0.04,
            "max_tokens": args.tokens,
            "temperature": 1.0,
            "checkpoint_every": 0,
            "dtype": args.dtype,
            "device": args.device,
        },
    )
    result = LocalExecutor().run(job, lambda e: None)
    if result.status != "ok":
        raise RuntimeError(f"sia worker: {result.error}")
    lines = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]
    return {
        "seconds": [float(x["seconds"]) for x in lines][1:],
        "tokens": statistics.mean(x["tokens"] for x in lines[1:]),
        "peak_mb": result.metrics.get("peak_device_mb"),
    }


def trl(folder: Path, args: argparse.Namespace) -> dict[str, Any]:
    import torch

    cuda = args.device != "cpu"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    times, lengths = trl_grpo_steps(
        folder,
        steps=args.steps,
        tokens=args.tokens,
        learning_rate=4e-5,
        lora_rank=32,
        device=args.device,
        dtype=args.dtype,
    )
    peak = round(torch.cuda.max_memory_allocated() / (1 << 20)) if cuda else None
    tokens = 8 * statistics.mean(lengths[1:] or lengths) if lengths else 8 * args.tokens
    return {"seconds": times[1:], "tokens": tokens, "peak_mb": peak}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny config, 2 steps")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--tokens", type=int, default=64, help="completion tokens per call")
    parser.add_argument("--shapes", default="smollm2-135m-shape,llama-1b-shape")
    args = parser.parse_args()
    if args.dry_run:
        args.steps, args.tokens, args.shapes = 2, 8, "tiny"
        args.device, args.dtype = "cpu", "float32"
    else:
        import torch

        if not torch.cuda.is_available():
            raise SystemExit("gpu_check: no CUDA device here (use --dry-run on a CPU)")
        args.device, args.dtype = "cuda", "bfloat16"
    work = Path(tempfile.mkdtemp(prefix="sia-gpu-check-"))
    rows = []
    try:
        task = timing_task(work / "task")
        for shape in args.shapes.split(","):
            t0 = time.perf_counter()
            folder = build_model(shape, work / "models")
            for name in ("sia worker (GRPO)", "trl GRPOTrainer"):
                if name.startswith("sia"):
                    got = ours(folder, task, work / f"ours-{shape}", args)
                else:
                    got = trl(folder, args)
                s = statistics.median(got["seconds"])
                rows.append((shape, name, s, got["tokens"] / s, got["peak_mb"]))
            print(f"gpu_check: {shape} done in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    device = "CPU (dry run)" if args.dry_run else _gpu_name()
    print(
        f"\n{datetime.date.today().isoformat()}, {platform.node()}, {device}, {args.dtype}; "
        f"{args.steps} steps each (first not counted), 2 prompts x 4 completions of up to "
        f"{args.tokens} tokens, LoRA r 32\n"
    )
    print("| model | trainer | s/step (median) | completion tokens/s | peak GPU memory (MB) |")
    print("|---|---|---|---|---|")
    for shape, name, s, tps, peak in rows:
        print(f"| {shape} | {name} | {s:.3f} | {tps:.0f} | {peak if peak is not None else '-'} |")


def _gpu_name() -> str:
    import torch

    return torch.cuda.get_device_name(0)


if __name__ == "__main__":
    main()
