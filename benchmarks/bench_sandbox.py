"""Start-up overhead per run: the bwrap sandbox vs the process sandbox, measured in one run.

Two figures per sandbox, in alternating rounds so drift hits both alike:

- bare: spawn ``python -I -B -c pass``, wait, ``kill_tree`` (the sandbox's own cost);
- worker: ``run_items`` with a trivial per-item scaffold on one item, through a real gateway
  (one scaffold worker's whole life: spawn, host import, setup, one solve with one model call
  through the gateway, exit, kill).

The first bwrap spawn of a process also scans the interpreter's prefixes for ``data/private``
folders to hide; that one-off cost is reported apart. Prints a markdown table;
asserts nothing.

    .venv/bin/python benchmarks/bench_sandbox.py [--runs 30]
"""

from __future__ import annotations

import argparse
import datetime
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sia_core.contracts.records import Item
from sia_core.contracts.sandbox import Limits, Sandbox
from sia_core.services.gateway import Gateway
from sia_core.services.process_sandbox import ProcessSandbox
from sia_core.services.runner import RunSpec, run_items
from sia_core.surface.builtin.scripted import ScriptedTaskModel
from sia_sandbox_bwrap.sandbox import BwrapSandbox, _private_dirs

SCAFFOLD = "def solve(item, ctx):\n    return ctx.llm('ping')\n"


def bare(sandbox: Sandbox, work: Path) -> float:
    t0 = time.perf_counter()
    proc = sandbox.spawn(
        [sys.executable, "-I", "-B", "-c", "pass"],
        cwd=work,
        env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
        limits=Limits(wall_s=30),
        rw_paths=(work,),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    rc = proc.wait(timeout=30)
    proc.kill_tree()
    if rc != 0:
        raise SystemExit(f"{type(sandbox).__name__}: trivial command exited {rc}")
    return time.perf_counter() - t0


def worker(sandbox: Sandbox, root: Path, gateway: Gateway, n: int) -> float:
    run = root / f"run-{type(sandbox).__name__}-{n}"
    (run / "public").mkdir(parents=True)
    scaffold = run / "target_agent.py"
    scaffold.write_text(SCAFFOLD)
    spec = RunSpec(
        scaffold_path=scaffold,
        work_dir=run / "work",
        public_dir=run / "public",
        parallel=1,
        limits=Limits(wall_s=60),
    )
    t0 = time.perf_counter()
    (result,) = run_items(spec, [Item(id="i", input="x")], sandbox=sandbox, gateway=gateway)
    elapsed = time.perf_counter() - t0
    if result.status != "ok" or result.answer != "pong":
        raise SystemExit(f"{type(sandbox).__name__}: worker failed: {result.error}")
    return elapsed


def _stats(samples: list[float]) -> tuple[float, float, float]:
    ordered = sorted(samples)
    p90 = ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]
    return 1000 * statistics.median(samples), 1000 * statistics.mean(samples), 1000 * p90


def main() -> None:
    """Run the benchmark and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30, help="timed runs per sandbox and figure")
    args = parser.parse_args()

    bwrap = BwrapSandbox()
    ok, why = bwrap.available()
    if not ok:
        raise SystemExit(f"bwrap is not available here: {why}")
    sandboxes: dict[str, Sandbox] = {"process": ProcessSandbox(), "bwrap": bwrap}
    samples: dict[tuple[str, str], list[float]] = {
        (name, kind): [] for name in sandboxes for kind in ("bare", "worker")
    }
    model = ScriptedTaskModel({"default": "pong"})
    with tempfile.TemporaryDirectory(prefix="sia-bench-sandbox-") as tmp, Gateway(model) as gw:
        gw.begin(1)
        root = Path(tmp)
        work = root / "work"
        work.mkdir()
        _private_dirs.cache_clear()
        t0 = time.perf_counter()
        for prefix in {Path(sys.prefix).resolve(), Path(sys.base_prefix).resolve()}:
            _private_dirs(prefix)
        scan = time.perf_counter() - t0
        for box in sandboxes.values():  # warm-up, untimed
            bare(box, work)
            worker(box, root, gw, -1)
        jobs = [(name, kind) for name in sandboxes for kind in ("bare", "worker")]
        for n in range(args.runs):
            for name, kind in jobs if n % 2 == 0 else reversed(jobs):
                box = sandboxes[name]
                took = bare(box, work) if kind == "bare" else worker(box, root, gw, n)
                samples[(name, kind)].append(took)

    print(
        f"sandbox start-up, {datetime.date.today().isoformat()}: {args.runs} runs each, "
        f"alternating (Python {platform.python_version()}, {platform.machine()}, "
        f"bwrap: {why})\n"
    )
    print("| figure | sandbox | median ms | mean ms | p90 ms |")
    print("|---|---|---:|---:|---:|")
    for kind, label in (("bare", "bare spawn→exit"), ("worker", "one worker, one item")):
        for name in sandboxes:
            med, mean, p90 = _stats(samples[(name, kind)])
            print(f"| {label} | {name} | {med:.1f} | {mean:.1f} | {p90:.1f} |")
        added = _stats(samples[("bwrap", kind)])[0] - _stats(samples[("process", kind)])[0]
        print(f"| {label} | added by bwrap | {added:+.1f} | | |")
    print(f"\nonce per process, at the first bwrap spawn: data/private scan {scan * 1000:.0f} ms")


if __name__ == "__main__":
    main()
