"""Both levers against one: harness only, weights only and auto (W+H), through the real loop.

The three arms run the same task, seed and generation budget with the local backend (SmolLM2-135M
on llama.cpp, the offline Feedback-Agent), one after the other, each ``sia --task_dir VARIANT
--max_gen G --lever ARM``:

- ``harness``: every generation after the first is a parameter search step of the scaffold;
- ``weights``: every generation after the first is a LoRA RL update through the frozen scaffold;
- ``auto``: the Feedback-Agent decides (harness while the dev score improves, weights once the
  incumbent has stood for ``--stall`` generations; 1 here, so that six generations leave room
  for both levers), the RL objective chosen by reward shape (``--rl-algorithm auto``).

The task is a documented variant of spaceship-titanic (``spaceship-cryo-levers``): the first
``--dev`` dev and ``--test`` test items by id, and the scaffold
``benchmarks/scaffolds/spaceship_cryo_levers.py``, whose answers always come from the model and
whose declared parameters (instruction, question, decoding, how replies are read) can fix the
answer format but not the cryosleep rule: that only the model can learn.

Prints each arm's generations (lever, objective, dev, the gate's verdict with its noise bar),
the levers pulled and accepted, the final incumbents' paired dev difference against the harness
arm with the gate's own noise bar (1.645 x SE of the per-item differences), and ends with
``W+H vs H: +x (noise ±y)``. The sealed test subset (gen 1 and the final incumbent) is printed
for reference; no decision reads it. Asserts nothing.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_levers.py [--gens 6] [--dev 200]
        [--test 200] [--seed 0] [--steps 30] [--items 8] [--group-size 4] [--lr 1e-4]
        [--stall 1] [--arms harness,weights,auto] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from sia_core.contracts.records import Metrics, ScoreResult, from_dict
from sia_core.services.gate_rule import judge

HERE = Path(__file__).resolve().parent
SCAFFOLD = HERE / "scaffolds" / "spaceship_cryo_levers.py"
ARMS = ("harness", "weights", "auto")


def _jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def make_variant(dest: Path, n_dev: int, n_test: int) -> Path:
    """The spaceship-cryo-levers task folder: spaceship-titanic's first items, the levers scaffold."""
    source = Path(str(resources.files("sia_task_spaceship_titanic") / "task"))
    shutil.copytree(source, dest)
    for split, n in (("dev", n_dev), ("test", n_test)):
        rows = sorted(
            _jsonl(dest / "data/public" / f"{split}.jsonl"), key=lambda r: r["PassengerId"]
        )
        keep = rows[:n]
        ids = {r["PassengerId"] for r in keep}
        _write_jsonl(dest / "data/public" / f"{split}.jsonl", keep)
        labels = dest / "data/private" / f"{split}_labels.jsonl"
        _write_jsonl(labels, [r for r in _jsonl(labels) if r["PassengerId"] in ids])
    shutil.copy(SCAFFOLD, dest / "reference" / "reference_target_agent.py")
    toml = dest / "task.toml"
    text = toml.read_text(encoding="utf-8").replace(
        'name = "spaceship-titanic"', 'name = "spaceship-cryo-levers"'
    )
    toml.write_text(text, encoding="utf-8")
    return dest


def run_arm(args: argparse.Namespace, arm: str, task: Path, runs: Path) -> float:
    """Run one arm to its end; its wall seconds."""
    argv = [
        str(Path(sys.executable).with_name("sia")),
        "--task_dir", str(task),
        "--max_gen", str(args.gens),
        "--lever", arm,
        "--backend", "local",
        "--seed", str(args.seed),
        "--runs-dir", str(runs),
        "--run_id", arm,
        "--test-eval", "final",
        "--train-opt", f"steps={args.steps}",
        "--train-opt", f"items_per_step={args.items}",
        "--train-opt", f"group_size={args.group_size}",
        "--train-opt", f"learning_rate={args.lr}",
        "--backend-opt", f"stall_generations={args.stall}",
    ]  # fmt: skip
    started = time.monotonic()
    with open(runs / f"{arm}.log", "w", encoding="utf-8") as log:
        proc = subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        tail = (runs / f"{arm}.log").read_text(encoding="utf-8")[-2000:]
        raise SystemExit(f"arm {arm} failed (exit {proc.returncode}):\n{tail}")
    return time.monotonic() - started


def dev_scores(run: Path, gen: int) -> ScoreResult:
    """A generation's dev scores, read as the gate reads them."""
    metrics = json.loads((run / f"gen_{gen}" / "metrics.json").read_text(encoding="utf-8"))
    return from_dict(Metrics, metrics).dev


def read_arm(run: Path) -> dict[str, Any]:
    """Generations (lever, objective, dev, gate verdict), the incumbent and its scores."""
    archive = json.loads((run / "archive.json").read_text(encoding="utf-8"))
    gates = {}
    for event in _jsonl(run / "events.jsonl"):
        data = event.get("data") or {}
        if event.get("type") == "step_finished" and data.get("step") == "gate":
            gates[event["gen"]] = data
    gens = []
    for node in archive["nodes"]:
        sealed = run / f"gen_{node['gen']}" / "sealed" / "metrics_test.json"
        test = json.loads(sealed.read_text(encoding="utf-8"))["score"] if sealed.is_file() else None
        gate = gates.get(node["gen"], {})
        rule = gate.get("rule") or {}
        gens.append(
            {
                "gen": node["gen"],
                "lever": node["lever"],
                "rl_algorithm": node.get("rl_algorithm"),
                "status": node["status"],
                "dev": node["dev_score"],
                "test": test,
                "accepted": bool(gate.get("accepted")),
                "gain": rule.get("paired_gain"),
                "bar": rule.get("noise_bar"),
                "reason": gate.get("reason", ""),
            }
        )
    return {"gens": gens, "incumbent": archive["incumbent"]}


def _fmt(x: float | None, spec: str = ".3f") -> str:
    return "–" if x is None else format(x, spec)


def print_arm(arm: str, info: dict[str, Any], seconds: float) -> None:
    print(f"\n### arm `{arm}` ({seconds / 60:.1f} min wall; incumbent gen {info['incumbent']})\n")
    print("| gen | lever | objective | status | dev | gate | paired gain | noise bar | test |")
    print("|---|---|---|---|---|---|---|---|---|")
    for g in info["gens"]:
        verdict = "accepted" if g["accepted"] else "kept out"
        print(
            f"| {g['gen']} | {g['lever']} | {g['rl_algorithm'] or '–'} | {g['status']} | "
            f"{_fmt(g['dev'])} | {verdict} | {_fmt(g['gain'], '+.3f')} | {_fmt(g['bar'])} | "
            f"{_fmt(g['test'])} |"
        )


def levers_summary(info: dict[str, Any]) -> tuple[set[str], set[str]]:
    """Levers pulled after generation 1, and those of a generation the gate accepted."""
    later = [g for g in info["gens"] if g["gen"] > 1]
    pulled = {lever for g in later for lever in _levers(g["lever"])}
    accepted = {lever for g in later if g["accepted"] for lever in _levers(g["lever"])}
    return pulled, accepted


def _levers(lever: str) -> tuple[str, ...]:
    return ("harness", "weights") if lever == "both" else (lever,)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gens", type=int, default=6)
    ap.add_argument("--dev", type=int, default=200)
    ap.add_argument("--test", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--items", type=int, default=8)
    ap.add_argument("--group-size", type=int, default=4)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument(
        "--stall",
        type=int,
        default=1,
        help="the auto policy's stall_generations: generations without a new incumbent before "
        "it pulls the weights lever (the local backend's default is 2)",
    )
    ap.add_argument("--arms", default=",".join(ARMS))
    ap.add_argument("--keep", type=Path, help="keep the variant task and the runs in this folder")
    args = ap.parse_args()
    arms = [a for a in args.arms.split(",") if a]
    if unknown := [a for a in arms if a not in ARMS]:
        raise SystemExit(f"--arms: unknown {', '.join(unknown)}; use some of {', '.join(ARMS)}")

    root = args.keep or Path(tempfile.mkdtemp(prefix="bench-levers-"))
    root.mkdir(parents=True, exist_ok=True)
    task = root / "task"
    if not task.is_dir():
        make_variant(task, args.dev, args.test)
    runs = root / "runs"
    runs.mkdir(exist_ok=True)

    started = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    print(
        f"# bench_levers: spaceship-cryo-levers, {args.gens} generations, seed {args.seed}, "
        f"{args.dev} dev / {args.test} test items\n\nStarted {started}, load {load}, "
        f"{os.cpu_count()} CPUs. Weights steps: {args.steps} x {args.items} items x "
        f"{args.group_size} rollouts, lr {args.lr}. Auto pulls weights after {args.stall} "
        f"generation(s) without a new incumbent. Runs in {runs}."
    )
    infos = {}
    for arm in arms:
        seconds = run_arm(args, arm, task, runs)
        infos[arm] = read_arm(runs / f"run_{arm}")
        print_arm(arm, infos[arm], seconds)
        sys.stdout.flush()

    print("\n### levers\n")
    for arm, info in infos.items():
        pulled, accepted = levers_summary(info)
        print(
            f"- {arm}: pulled {', '.join(sorted(pulled)) or 'none'}; the gate accepted "
            f"{', '.join(sorted(accepted)) or 'none'}"
        )
    if "harness" not in infos:
        return
    base = runs / "run_harness"
    base_dev = dev_scores(base, infos["harness"]["incumbent"])
    print("\n### final incumbents against the harness arm (dev, paired per item)\n")
    lines = []
    for arm in (a for a in infos if a != "harness"):
        final = dev_scores(runs / f"run_{arm}", infos[arm]["incumbent"])
        verdict = judge(final, base_dev, infos["harness"]["incumbent"])
        beyond = "beyond" if verdict.accepted else "not beyond"
        print(
            f"- {arm} (dev {final.score:.3f}) vs harness (dev {base_dev.score:.3f}): "
            f"{verdict.paired_gain:+.3f}, noise bar {verdict.noise_bar:.3f} over "
            f"{verdict.n_paired} items: {beyond} noise"
        )
        label = {"auto": "W+H", "weights": "W"}[arm]
        lines.append(f"{label} vs H: {verdict.paired_gain:+.3f} (noise ±{verdict.noise_bar:.3f})")
    print()
    for line in lines:
        print(line)


if __name__ == "__main__":
    main()
