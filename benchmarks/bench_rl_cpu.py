"""RL on the CPU with the local SmolLM2: does training move the held-out reward, and how fast is it?

(a) Each objective (grpo, ppo, entropic) trains a LoRA in a real job through the ``local``
executor on a bundled task's train split, with a frozen scaffold as the rollout policy:
``--task spaceship-cryo`` (default) uses ``benchmarks/scaffolds/spaceship_llm_cryo.py`` (the
model is told only whether the passenger was in cryosleep and answers yes / no),
``--task spaceship-titanic`` ``benchmarks/scaffolds/spaceship_llm_yesno.py`` (the model sees the
passenger's whole record in one line and answers yes / no; its accuracy is the model's own),
``--task lawbench`` the task's reference scaffold (``llm_choose``: the model picks the charge
among 5 retrieved candidates). The jobs run ``--parallel`` at a time while the base model is
scored; a fixed dev subset (the first ``--dev`` dev items by id) is scored greedily before and
after. Noise: the same greedy eval twice, two sampled evals (T = 1) with different seeds, the
paired standard error of the per-item change, and the spread of the change over training seeds
(the first objective is trained with every seed in ``--seeds``). An objective "raised the dev
reward" when every seed's change exceeds max(2 × paired SE, eval seed spread, training seed
spread). Dev is only scored, never trained or selected on.

(b) Seconds per optimizer step of our GRPO (the worker: scaffold rollouts through the gateway,
batched generation, loss, AdamW) against trl's ``GRPOTrainer`` on the same model, prompts,
batch (2 prompts × 4 completions), completion length (16), LoRA (r 16, all-linear), β / KL
(0.04), learning rate and torch threads. The first step of each is warm-up and not counted.

Prints markdown tables; asserts nothing. Run it on a machine with nothing else timed on it::

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_rl_cpu.py [--skip-a | --skip-b]
        [--task spaceship-cryo] [--steps 30] [--items 8] [--group-size 4] [--lr 1e-4]
        [--dev 200] [--seeds 0,1] [--parallel 4]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

from sia_backend_local.smollm2 import smollm2_gguf
from sia_core.contracts.records import TrainJob
from sia_core.services.taskdir import load_task
from sia_train.executor import LocalExecutor

TRAINERS = {
    "grpo": "sia_rl_grpo.objective:make_objective",
    "ppo": "sia_rl_ppo.objective:make_objective",
    "entropic": "sia_rl_entropic.objective:make_objective",
}
TOPICS = (
    "the sea",
    "mountains",
    "cats",
    "coffee",
    "trains",
    "winter",
    "music",
    "rivers",
    "bread",
    "the moon",
    "forests",
    "rain",
    "bicycles",
    "libraries",
    "volcanoes",
    "gardens",
)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# (a) dev reward before / after
# --------------------------------------------------------------------------------------------


class Evaluator:
    """The base model in this process; scores the scaffold on a fixed dev subset."""

    def __init__(
        self, task_dir: Path, scaffold: Path, n_dev: int, threads: int, work: Path
    ) -> None:
        import torch

        from sia_train.model import load_base

        torch.set_num_threads(threads)
        self.task = load_task(task_dir)
        self.scaffold = scaffold
        self.items = sorted(self.task.items("dev"), key=lambda i: i.id)[:n_dev]
        self.base, self.tokenizer = load_base(str(smollm2_gguf()), {}, "cpu")
        self.work = work

    def run(
        self, adapter: str | None, tag: str, temperature: float | None = None, seed: int = 0
    ) -> Any:
        """Per-item dev scores: greedy (the scaffold's T = 0) or sampled at ``temperature``."""
        import torch
        from peft import PeftModel

        torch.manual_seed(seed)
        from sia_train.rollouts import PolicyTaskModel, RolloutCollector

        model = PeftModel.from_pretrained(self.base, adapter) if adapter else self.base
        policy = PolicyTaskModel(
            model,
            self.tokenizer,
            temperature=temperature or 1.0,
            max_tokens=8,
            sampling="policy" if temperature else "request",
        )
        try:
            with RolloutCollector(
                task=self.task,
                scaffold=self.scaffold,
                policy=policy,
                work_dir=self.work,
                parallel=8,
            ) as collector:
                sources = [{"id": i.id, "input": i.input} for i in self.items]
                pairs = collector.run(sources, 1, tag, split="dev")
        finally:
            policy.close()
            if adapter:
                self.base = model.unload()  # drop the LoRA layers again
        scores = {
            sample.source_id: self.task.score_answer("dev", sample.source_id, sample.answer)
            for sample, _ in pairs
        }
        return scores, self.summary([result for _, result in pairs])

    def summary(self, results: list[Any]) -> str:
        """How the scaffold answered (lawbench: the candidate rank picked; else the answers)."""
        if self.task.name == "lawbench":
            return picked_ranks(results)
        counts: dict[str, int] = {}
        for result in results:
            a = result.answer if result.status == "ok" else None
            how = "yes" if a is True else "no" if a is False else "other"
            counts[how] = counts.get(how, 0) + 1
        return " ".join(f"{k}:{v}" for k, v in sorted(counts.items()))


def picked_ranks(results: list[Any]) -> str:
    """How the scaffold answered: the candidate rank the model chose, or no model choice."""
    counts: dict[str, int] = {}
    for result in results:
        how = "error"
        for step in result.trajectory:
            if step.kind == "answer" and isinstance(step.content, dict):
                rank = step.content.get("rank")
                how = f"#{rank}" if rank else "no choice"
        counts[how] = counts.get(how, 0) + 1
    return " ".join(f"{k}:{v}" for k, v in sorted(counts.items()))


def paired(before: dict[str, float], after: dict[str, float]) -> tuple[float, float, int]:
    """``(mean change, paired standard error, items changed)``."""
    diffs = [after[k] - before[k] for k in before]
    se = statistics.stdev(diffs) / math.sqrt(len(diffs)) if len(diffs) > 1 else 0.0
    return statistics.fmean(diffs), se, sum(d != 0 for d in diffs)


HERE = Path(__file__).resolve().parent
TASKS = {  # task -> (package, the frozen scaffold: the benchmark's own, or the task's reference)
    "spaceship-titanic": ("sia_task_spaceship_titanic", HERE / "scaffolds/spaceship_llm_yesno.py"),
    "spaceship-cryo": ("sia_task_spaceship_titanic", HERE / "scaffolds/spaceship_llm_cryo.py"),
    "lawbench": ("sia_task_lawbench", None),
}


def train_job(
    args: argparse.Namespace, task_dir: Path, scaffold: Path, name: str, seed: int, out: Path
) -> TrainJob:
    settings = {
        "steps": args.steps,
        "group_size": args.group_size,
        "items_per_step": args.items,
        "learning_rate": args.lr,
        "lora_rank": args.rank,
        "lora_alpha": 2 * args.rank,
        "kl_coef": args.kl,
        "temperature": args.temperature,
        "max_tokens": 8,
        "torch_threads": args.threads,
        "checkpoint_every": 0,
    }
    return TrainJob(
        job_id=f"bench-{name}-{seed}",
        algorithm=name,
        trainer=TRAINERS[name],
        task_dir=str(task_dir),
        scaffold=str(scaffold),
        base_model=str(smollm2_gguf()),
        out_dir=str(out),
        seed=seed,
        settings=settings,
    )


def part_a(args: argparse.Namespace, work: Path) -> list[str]:
    package, scaffold = TASKS[args.task]
    task_dir = Path(str(resources.files(package) / "task"))
    scaffold = scaffold or task_dir / "reference" / "reference_target_agent.py"
    load_start = load()
    seeds = [int(x) for x in args.seeds.split(",")]
    names = args.objectives.split(",")
    # the first objective is trained with every seed (training-run noise), the others with one
    jobs = [
        (name, seed, train_job(args, task_dir, scaffold, name, seed, work / f"train-{name}-{seed}"))
        for name in names
        for seed in (seeds if name == names[0] else seeds[:1])
    ]
    log(f"training {len(jobs)} jobs, {args.parallel} at a time: {jobs[0][2].settings}")
    t1 = time.monotonic()
    pool = ThreadPoolExecutor(max_workers=args.parallel)
    futures = [
        pool.submit(
            LocalExecutor().run, job, lambda e, n=name, s=seed: log(f"  {n}/{s} {json.dumps(e)}")
        )
        for name, seed, job in jobs
    ]
    # the base model is scored while the jobs train (the evaluator is this process)
    t0 = time.monotonic()
    ev = Evaluator(task_dir, scaffold, args.dev, args.threads, work / "eval")
    base, base_picks = ev.run(None, "base")
    base2, _ = ev.run(None, "base-again")
    s0, _ = ev.run(None, "sampled-0", temperature=1.0, seed=0)
    s1, _ = ev.run(None, "sampled-1", temperature=1.0, seed=1)
    mean = statistics.fmean
    eval_s = (time.monotonic() - t0) / 4
    log(
        f"base greedy {mean(base.values()):.3f}, again {mean(base2.values()):.3f}; {eval_s:.0f} s/eval"
    )
    seed_spread = abs(mean(s0.values()) - mean(s1.values()))
    n = len(base)
    results = [f.result() for f in futures]
    pool.shutdown()
    train_wall = time.monotonic() - t1
    after_of: dict[tuple[str, int], dict[str, float]] = {}
    rows = []
    for (name, seed, job), result in zip(jobs, results, strict=True):
        if result.status != "ok":
            rows.append(f"| {name} | {seed} | failed: {result.error.splitlines()[0]} |" + " |" * 10)
            continue
        after, picks = ev.run(result.adapter, f"after-{name}-{seed}")
        after_of[name, seed] = after
        delta, se, changed = paired(base, after)
        lines = [
            json.loads(x) for x in (Path(job.out_dir) / "train_log.jsonl").read_text().splitlines()
        ]
        first = mean(x["reward_mean"] for x in lines[:5])
        last = mean(x["reward_mean"] for x in lines[-5:])
        m = result.metrics
        rows.append(
            f"| {name} | {seed} | {args.steps} × {args.group_size * args.items} "
            f"| {first:.2f} → {last:.2f} "
            f"| {mean(base.values()):.3f} | {mean(after.values()):.3f} | {delta:+.3f} "
            f"| {se:.3f} | {changed}/{n} | {picks} "
            f"| {m['seconds_per_step']:.1f} | {m['seconds']:.0f} |"
        )
        log(rows[-1])
    # training-run noise: the spread of Δ dev over the seeds of the first objective, applied
    # to every objective (the others are trained with one seed)
    delta_of = {key: paired(base, after)[0] for key, after in after_of.items()}
    first_runs = [delta_of[names[0], seed] for seed in seeds if (names[0], seed) in delta_of]
    train_spread = max(first_runs) - min(first_runs) if len(first_runs) > 1 else None
    verdicts = []
    for name in names:
        runs = [after_of[name, seed] for seed in seeds if (name, seed) in after_of]
        if not runs:
            continue
        deltas = [paired(base, after)[0] for after in runs]
        two_se = 2 * max(paired(base, after)[1] for after in runs)
        bar = max(two_se, seed_spread, train_spread or 0.0)
        raised = min(deltas) > bar
        verdicts.append(
            f"| {name} | {', '.join(f'{d:+.3f}' for d in deltas)} | {two_se:.3f} "
            f"| {seed_spread:.3f} | {'n/a' if train_spread is None else f'{train_spread:.3f}'} "
            f"| {bar:.3f} | {'**yes**' if raised else 'no'} |"
        )
    return [
        f"Task {args.task}, frozen scaffold `{scaffold.relative_to(HERE.parent) if scaffold.is_relative_to(HERE.parent) else scaffold.name}`. "
        f"Dev subset: first {n} dev items (by id), greedy. Base model: {mean(base.values()):.3f} "
        f"(same eval again: {mean(base2.values()):.3f}); sampled at T = 1 with two seeds: "
        f"{mean(s0.values()):.3f} / {mean(s1.values()):.3f} (spread {seed_spread:.3f}). "
        f"Base model's answers: {base_picks}. One eval of {n} items: {eval_s:.0f} s. "
        f"Load average at the start: {load_start}.",
        "",
        f"Training: lr {args.lr}, KL {args.kl}, LoRA r {args.rank}, {args.items} train items × "
        f"{args.group_size} rollouts per step, {args.parallel} job(s) at a time; all training "
        f"took {train_wall / 60:.1f} min wall.",
        "",
        "| objective | seed | steps × rollouts | train reward (first 5 → last 5 steps) "
        "| dev before | dev after | Δ dev | paired SE | items changed | answers after | s/step "
        "| train s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
        *rows,
        "",
        "Raised beyond noise? Every seed's Δ dev must exceed the bar = max(2 × paired SE, "
        f"sampled-eval seed spread, spread of Δ over the training seeds of {names[0]}).",
        "",
        "| objective | Δ dev per seed | 2 × paired SE | eval seed spread | training-seed spread "
        "| bar | raised? |",
        "|---|---|---|---|---|---|---|",
        *verdicts,
        "",
        f"Load average at the end: {load()}.",
    ]


# --------------------------------------------------------------------------------------------
# (b) our GRPO step vs trl's GRPOTrainer
# --------------------------------------------------------------------------------------------

SCAFFOLD = '''\
"""Timing scaffold: one model call per item, the completion is the answer."""


def solve(item, ctx):
    return ctx.llm([{"role": "user", "content": item.input}], max_tokens=16, temperature=1.0)
'''
SCORER = '''\
def score_item(answer, label, item):
    """1 when the completion starts with the label's letter (the reference's "starts with I")."""
    return 1.0 if str(answer).strip().startswith(str(label)) else 0.0
'''


def prompt(topic: str) -> str:
    return f"Write one short sentence about {topic}."


def timing_task(root: Path) -> Path:
    """The tiny task's folder with the timing prompts as train items and a "starts with I" scorer."""
    shutil.copytree(Path(str(resources.files("sia_core.testing") / "tiny_task")), root)
    toml = (root / "task.toml").read_text()
    (root / "task.toml").write_text(
        toml.replace('answer_type = "int"', 'answer_type = "text"').replace(
            'scorer = "exact"', 'scorer = "scorer.py:score_item"'
        )
    )
    rows = [{"id": f"t{i:02d}", "input": prompt(t), "label": "I"} for i, t in enumerate(TOPICS)]
    (root / "data" / "public" / "train.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in rows)
    )
    (root / "scorer.py").write_text(SCORER)
    (root / "reference" / "reference_target_agent.py").write_text(SCAFFOLD)
    return root


def ours(args: argparse.Namespace, task: Path, out: Path) -> tuple[list[float], dict[str, Any]]:
    settings = {
        "steps": args.timing_steps,
        "group_size": 4,
        "items_per_step": 2,
        "learning_rate": 5e-5,
        "lora_rank": 16,
        "lora_alpha": 32,
        "kl_coef": 0.04,
        "max_tokens": 16,
        "temperature": 1.0,
        "torch_threads": args.threads,
        "checkpoint_every": 0,
    }
    job = TrainJob(
        job_id="bench-timing",
        algorithm="grpo",
        trainer=TRAINERS["grpo"],
        task_dir=str(task),
        scaffold=str(task / "reference" / "reference_target_agent.py"),
        base_model=str(smollm2_gguf()),
        out_dir=str(out),
        seed=args.seed,
        settings=settings,
    )
    result = LocalExecutor().run(job, lambda e: None)
    if result.status != "ok":
        raise RuntimeError(result.error)
    lines = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]
    return [float(x["seconds"]) for x in lines], lines[-1]


def trl_steps(args: argparse.Namespace) -> list[float]:
    from sia_train.model import gguf_to_hf

    times, _ = trl_grpo_steps(
        gguf_to_hf(smollm2_gguf()),
        steps=args.timing_steps,
        tokens=16,
        learning_rate=5e-5,
        lora_rank=16,
        seed=args.seed,
        threads=args.threads,
    )
    return times


def trl_grpo_steps(
    folder: Any,
    *,
    steps: int,
    tokens: int,
    learning_rate: float,
    lora_rank: int,
    seed: int = 0,
    threads: int | None = None,
    device: str = "cpu",
    dtype: str = "float32",
) -> tuple[list[float], list[float]]:
    """trl's GRPOTrainer on the timing prompts (2 prompts x 4 completions of up to ``tokens``):
    each step's seconds and each logged step's mean completion length."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    if threads:
        torch.set_num_threads(threads)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=getattr(torch, dtype))
    data = Dataset.from_list([{"prompt": [{"role": "user", "content": prompt(t)}]} for t in TOPICS])

    def starts_with_i(completions: list[Any], **_: Any) -> list[float]:
        return [1.0 if c[0]["content"].strip().startswith("I") else 0.0 for c in completions]

    times: list[float] = []
    lengths: list[float] = []

    class Timer(TrainerCallback):
        def on_step_begin(self, *a: Any, **k: Any) -> None:
            self.t = time.perf_counter()

        def on_step_end(self, *a: Any, **k: Any) -> None:
            times.append(time.perf_counter() - self.t)

        def on_log(self, *a: Any, logs: dict[str, Any] | None = None, **k: Any) -> None:
            if logs and "completions/mean_length" in logs:
                lengths.append(float(logs["completions/mean_length"]))

    config = GRPOConfig(
        output_dir=tempfile.mkdtemp(prefix="trl-bench-"),
        per_device_train_batch_size=8,
        num_generations=4,
        max_completion_length=tokens,
        temperature=1.0,
        beta=0.04,
        learning_rate=learning_rate,
        loss_type="dapo",  # token-level mean, as our default loss_agg="token"
        max_steps=steps,
        gradient_checkpointing=False,
        use_cpu=device == "cpu",
        bf16=dtype == "bfloat16",
        report_to="none",
        save_strategy="no",
        logging_steps=1,
        seed=seed,
    )
    peft = LoraConfig(
        r=lora_rank, lora_alpha=2 * lora_rank, target_modules="all-linear", task_type="CAUSAL_LM"
    )
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=starts_with_i,
        args=config,
        train_dataset=data,
        processing_class=tokenizer,
        peft_config=peft,
        callbacks=[Timer()],
    )
    with contextlib.redirect_stdout(sys.stderr):  # trl prints its log dicts
        trainer.train()
    shutil.rmtree(config.output_dir, ignore_errors=True)
    return times, lengths


def part_b(args: argparse.Namespace, work: Path) -> list[str]:
    task = timing_task(work / "timing-task")
    our_times: list[float] = []
    trl_times: list[float] = []
    last: dict[str, Any] = {}
    # alternate the two so that load drifting on a shared machine hits both alike
    for r in range(args.timing_rounds):
        log(f"timing round {r + 1}: our GRPO worker")
        times, last = ours(args, task, work / f"timing-ours-{r}")
        our_times += times[1:]  # the first step of each run warms up
        log(f"  ours: {times}")
        log(f"timing round {r + 1}: trl GRPOTrainer")
        times = trl_steps(args)
        trl_times += times[1:]
        log(f"  trl: {times}")
    ours_s, trl_s = statistics.median(our_times), statistics.median(trl_times)
    return [
        f"{args.timing_rounds} alternating runs of each, {args.timing_steps} steps per run, "
        "the first step of every run not counted; load average before/after: "
        f"{args.load_before} / {load()}.",
        "",
        "| trainer | s/step (median) | steps timed | where the time goes (our last step) |",
        "|---|---|---|---|",
        f"| sia worker (GRPO) | {ours_s:.2f} | {len(our_times)} | "
        f"rollouts {last['rollout_seconds']:.2f} s (generate {last['generate_seconds']:.2f}), "
        f"update {last['update_seconds']:.2f} s |",
        f"| trl GRPOTrainer | {trl_s:.2f} | {len(trl_times)} | |",
        "",
        f"Ratio sia / trl: **{ours_s / trl_s:.2f}×** (target ≤ 1.2×).",
    ]


def load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=sorted(TASKS), default="spaceship-cryo")
    parser.add_argument("--objectives", default="grpo,ppo,entropic")
    parser.add_argument("--seeds", default="0,1", help="training seeds (first objective: all)")
    parser.add_argument("--parallel", type=int, default=4, help="training jobs at a time")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--group-size", type=int, default=4)
    parser.add_argument("--items", type=int, default=8, help="train items per step")
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--kl", type=float, default=0.04)
    parser.add_argument("--temperature", type=float, default=1.0, help="rollout sampling")
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--dev", type=int, default=200, help="dev items scored")
    parser.add_argument("--timing-steps", type=int, default=6)
    parser.add_argument("--timing-rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=max(1, (os.cpu_count() or 1) - 1))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-a", action="store_true")
    parser.add_argument("--skip-b", action="store_true")
    parser.add_argument("--keep", type=Path, help="keep the work folder here")
    args = parser.parse_args()
    args.load_before = load()
    work = args.keep or Path(tempfile.mkdtemp(prefix="sia-bench-rl-"))
    work.mkdir(parents=True, exist_ok=True)
    print(
        f"## RL on CPU — {time.strftime('%Y-%m-%d')}, {platform.processor() or platform.machine()}"
        f", {os.cpu_count()} cores, torch threads {args.threads}\n"
    )
    try:
        if not args.skip_b:
            print("### (b) seconds per GRPO step: sia worker vs trl\n")
            print("\n".join(part_b(args, work)) + "\n", flush=True)
        if not args.skip_a:
            print(f"### (a) {args.task} dev reward before / after training\n")
            print("\n".join(part_a(args, work)) + "\n", flush=True)
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
