"""Items per second: the local worker pool against the ``ray`` runner on one and on two nodes.

Two scaffolds over the same items, each arm measured in the same run:

- model-bound: each item makes one call through the run's gateway to a task model that takes
  ``--latency`` seconds per call and serves calls side by side (an API or a batching server);
- no-op: each item returns at once (what is left is the runner's own cost per item).

Arms, with two workers per node in each (the local pool ``parallel=2``; Ray batches of
``--batch`` items with one worker each, one CPU per batch, two CPUs per node):

- local: the core's pool on this machine;
- ray x1: a one-node Ray cluster on this machine;
- ray x2: two nodes, the second in its own network namespace across a veth pair (needs root).

Prints a markdown table (items/s per arm and scaffold) and Ray's cost per item against the
local pool (no-op scaffold). Asserts nothing.

    .venv/bin/python benchmarks/bench_scale.py [--items 48] [--latency 0.5] [--batch 6]
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import secrets
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

from sia_core.contracts.backend import TaskModel
from sia_core.contracts.records import Item
from sia_core.services.gateway import Gateway
from sia_core.services.process_sandbox import ProcessSandbox
from sia_core.services.runner import LocalRunner, RunnerOptions, RunSpec

MODEL_BOUND = textwrap.dedent(
    """
    def solve(item, ctx):
        return ctx.llm([{"role": "user", "content": str(item.input)}])
    """
)
NO_OP = "def solve(item, ctx):\n    return item.input\n"


class SlowModel(TaskModel):
    """Answers after ``latency`` seconds; calls run side by side (each in its gateway thread)."""

    free = True

    def __init__(self, latency: float) -> None:
        self.name = "slow-echo"
        self.latency = latency

    def chat(self, body: dict[str, Any]) -> dict[str, Any]:
        time.sleep(self.latency)
        text = str(body["messages"][-1]["content"])
        return {
            "id": "x",
            "object": "chat.completion",
            "created": 1,
            "model": self.name,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        }


def spec(root: Path, scaffold: str, parallel: int) -> RunSpec:
    root.mkdir(parents=True)
    (root / "public").mkdir()
    (root / "target_agent.py").write_text(scaffold)
    return RunSpec(
        scaffold_path=root / "target_agent.py",
        work_dir=root / "work",
        public_dir=root / "public",
        model_name="slow-echo",
        parallel=parallel,
        item_timeout_s=600,
    )


def measure(runner: Any, parallel: int, args: argparse.Namespace, tmp: Path) -> dict[str, float]:
    items = [Item(id=f"i{k}", input=str(k)) for k in range(args.items)]
    out = {}
    for name, scaffold in (("model-bound", MODEL_BOUND), ("no-op", NO_OP)):
        with Gateway(SlowModel(args.latency), host=runner.gateway_host()) as gw:
            gw.begin(1)
            root = tmp / f"{runner.name}-{name}-{secrets.token_hex(3)}"
            t0 = time.perf_counter()
            results = runner.run_items(
                spec(root, scaffold, parallel), items, sandbox=ProcessSandbox(), gateway=gw
            )
            seconds = time.perf_counter() - t0
        bad = [r for r in results if r.status != "ok"]
        if bad:
            raise SystemExit(f"{len(bad)} items failed, e.g. {bad[0].error}")
        out[name] = seconds
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=48)
    parser.add_argument("--latency", type=float, default=0.5)
    parser.add_argument("--batch", type=int, default=6)
    args = parser.parse_args()
    from sia_runner_ray.runner import RayRunner
    from sia_runner_ray.testing import TwoNodeCluster, can_make_namespaces

    tmp = Path(tempfile.mkdtemp(prefix="sia-bench-scale-"))
    token = tmp / "ray_token"
    token.write_text(secrets.token_hex(32))
    os.environ.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token))
    ray_settings = {"batch_size": args.batch, "cpus_per_batch": 1}
    rows: dict[str, dict[str, float]] = {}
    rows["local pool"] = measure(LocalRunner(), 2, args, tmp)

    one = RayRunner(RunnerOptions(settings=ray_settings))
    one.start()
    try:
        rows["ray, 1 node"] = measure(one, 1, args, tmp)
    finally:
        one.close()
    why = can_make_namespaces()
    if not why:
        cluster = TwoNodeCluster(tmp / "cluster", token)
        cluster.up()
        two = RayRunner(RunnerOptions(settings={**ray_settings, "address": cluster.address}))
        try:
            two.start()
            rows["ray, 2 nodes"] = measure(two, 1, args, tmp)
        finally:
            two.close()
            cluster.down()
    stamp = datetime.date.today().isoformat()
    print(f"\n{stamp}, {platform.node()}, {os.cpu_count()} CPUs; {args.items} items, model")
    print(f"latency {args.latency:g} s per call, Ray batches of {args.batch}\n")
    print("| arm | model-bound items/s | no-op items/s |")
    print("|---|---|---|")
    for arm, t in rows.items():
        print(f"| {arm} | {args.items / t['model-bound']:.2f} | {args.items / t['no-op']:.2f} |")
    base = rows["local pool"]["no-op"]
    for arm, t in rows.items():
        if arm != "local pool":
            extra = (t["no-op"] - base) / args.items * 1000
            print(f"\n{arm}: {extra:+.0f} ms per item against the local pool (no-op scaffold)")
    if why:
        print(f"\nray, 2 nodes: not measured ({why})")


if __name__ == "__main__":
    main()
