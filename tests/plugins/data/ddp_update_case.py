"""One policy update on a tiny random Llama with LoRA, in one process or as a rank of several.

Imported by tests/plugins/test_data_parallel.py (one process) and run by torchrun as
``ddp_update_case.py OUT OBJECTIVE`` (each rank: gloo, ``policy_update(group=WORLD)``, its
parameter deltas and statistics saved to ``OUT/rank<r>.pt``).
"""

from __future__ import annotations

import random
import sys
from pathlib import Path
from typing import Any

OBJECTIVES = {
    "grpo": "sia_rl_grpo.objective:make_objective",
    "ppo": "sia_rl_ppo.objective:make_objective",
    "entropic": "sia_rl_entropic.objective:make_objective",
}


def samples(n: int = 7) -> tuple[list[Any], list[float]]:
    """``n`` rollouts of 0-2 calls each (rollout 2 made none), and their advantages."""
    from sia_train.objective import Rollout
    from sia_train.rollout_records import CallRecord, RolloutSample

    rng = random.Random(0)
    out = []
    for r in range(n):
        calls = []
        for _ in range(0 if r == 2 else rng.randint(1, 2)):
            n = rng.randint(1, 5)
            calls.append(
                CallRecord(
                    key="",
                    prompt_ids=[rng.randint(1, 49) for _ in range(rng.randint(3, 9))],
                    completion_ids=[rng.randint(1, 49) for _ in range(n)],
                    old_logp=[-rng.uniform(2.0, 6.0) for _ in range(n)],
                    text="",
                    finish_reason="length",
                )
            )
        rollout = Rollout(item_id="x", reward=rng.random())
        out.append(RolloutSample(rollout=rollout, source_id="x", status="ok", calls=calls))
    return out, [rng.uniform(-1, 1) for _ in out]


def tiny_config() -> Any:
    """A two-layer Llama of vocabulary 50: seconds to build and to train on a CPU."""
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=50,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
    )


def step(objective_name: str, group: Any = None) -> tuple[dict[str, Any], dict[str, float]]:
    """One AdamW step (micro-batches of ~one rollout): every trainable parameter's change."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaForCausalLM

    from sia_core.machinery.plugins import resolve
    from sia_train.model import make_value_head
    from sia_train.update import policy_update

    torch.manual_seed(1)
    torch.set_num_threads(1)
    lora = LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False)
    model = get_peft_model(LlamaForCausalLM(tiny_config()), lora)
    objective = resolve(OBJECTIVES[objective_name])({"kl_coef": 0.1})
    head = make_value_head(32, "cpu") if objective.needs_value_head else None
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if head is not None:
        torch.nn.init.normal_(head.weight)  # a head that is not all zeros: its update shows
        named += [(f"value_head.{n}", p) for n, p in head.named_parameters()]
    before = {n: p.detach().clone() for n, p in named}
    rows, advantages = samples()
    stats = policy_update(
        model=model,
        objective=objective,
        samples=rows,
        advantages=advantages,
        optimizer=torch.optim.AdamW([p for _, p in named], lr=1e-2),
        temperature=0.7,
        pad_token_id=0,
        value_head=head,
        micro_batch_tokens=12,
        max_grad_norm=1.0,
        group=group,
    )
    return {n: p.detach() - before[n] for n, p in named}, stats


if __name__ == "__main__":
    import torch
    import torch.distributed as dist

    out, name = Path(sys.argv[1]), sys.argv[2]
    dist.init_process_group("gloo")
    moved, stats = step(name, dist.group.WORLD)
    torch.save({"moved": moved, "stats": stats}, out / f"rank{dist.get_rank()}.pt")
    dist.destroy_process_group()
