"""The loop's own overhead per generation: scripted backend, a no-op scaffold, the tiny task.

Every generation still does its real work (Feedback step, sandboxed workers, gateway, scoring
of 12 dev + 12 test items, gate, atomic artifact writes, fsynced events), but the scaffold
returns at once and no model is called, so what is measured is sia itself. Prints a markdown
table of seconds per generation and per step; asserts nothing.

    .venv/bin/python benchmarks/bench_loop.py [--gens 6] [--parallel 2]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

from sia_core.contracts.config import RunConfig
from sia_core.loop import Loop
from sia_core.machinery.plugins import new_plugin_manager
from sia_core.machinery.runstore import RunStore
from sia_core.testing.fixtures import tiny_task_source

NOOP = "def solve(item, ctx):\n    return None\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--gens", type=int, default=6)
    ap.add_argument("--parallel", type=int, default=2)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "script.json"
        script.write_text(json.dumps({"meta": {"scaffold": {"text": NOOP}}}))
        config = RunConfig(
            task="tiny-add",
            task_dir=str(tiny_task_source()),
            max_gen=args.gens,
            backend="scripted",
            backend_settings={"script": str(script)},
            sandbox="process",
            parallel=args.parallel,
        )
        store = RunStore.open(Path(tmp) / "runs", "bench", create=True)
        t0 = time.perf_counter()
        Loop(config, store, new_plugin_manager(entrypoints=False)).run()
        total = time.perf_counter() - t0
        per_step: dict[str, list[float]] = {}
        for e in store.events:
            if e.type == "step_finished":
                per_step.setdefault(e.data["step"], []).append(e.data["seconds"])
    print(
        f"loop overhead: {args.gens} generations, no-op scaffold, 24 items/gen, "
        f"parallel {args.parallel} (Python {platform.python_version()}, {platform.machine()})\n"
    )
    print("| what | median s | max s |\n|---|---:|---:|")
    for step, values in per_step.items():
        print(f"| step `{step}` | {statistics.median(values):.3f} | {max(values):.3f} |")
    print(f"| **whole generation** (total / gens) | {total / args.gens:.3f} | |")
    print(f"\ntotal {total:.2f} s for {args.gens} generations")


if __name__ == "__main__":
    main()
