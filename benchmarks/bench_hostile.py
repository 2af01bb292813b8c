"""What hostile program-style scaffolds achieve, case by case, through the real loop.

For each case of tests/hostile/test_hostile_program.py (a link to the private labels or a host
path where ``submission.csv`` belongs, a dangling link, a folder, a fifo, a huge file, a hard
link, a file swapped for a link while it is read, a log replaced by a link) and each sandbox, it
runs two generations (honest, then hostile) and prints what the attack got: generation 2's dev
score (the honest baseline is 0.000), how many files of the run folder hold private label bytes,
how many paths it created outside the run folder, whether the run finished and whether
``sia resume`` then ran one more generation. Only public APIs are used, so the same script
measures an older checkout too (put its sources first on ``PYTHONPATH``)::

    .venv/bin/python benchmarks/bench_hostile.py
    PYTHONPATH=/tmp/old/sia_core/src:/tmp/old/plugins/sandbox-bwrap/src \\
        .venv/bin/python benchmarks/bench_hostile.py
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(1, str(ROOT))  # after PYTHONPATH: tests/ for the task and the scaffolds

from sia_core.loop import Loop  # noqa: E402
from sia_core.machinery.plugins import get_plugin_manager  # noqa: E402
from sia_core.machinery.runstore import RunStore  # noqa: E402
from sia_core.surface.cli import running  # noqa: E402
from tests.hostile.harness import scripted_config, source  # noqa: E402
from tests.hostile.test_hostile_program import (  # noqa: E402
    CASES,
    HONEST,
    HOSTILE,
    LABELS,
    make_task,
)


def label_files(root: Path) -> int:
    n = 0
    for folder, _dirs, files in os.walk(root):
        for name in files:
            path = Path(folder) / name
            try:
                if not stat.S_ISREG(path.lstat().st_mode):
                    continue
                data = path.read_bytes()
            except OSError:
                continue
            n += any(v.encode() in data for v in LABELS.values())
    return n


def one(case: str, sandbox: str, tmp: Path, timeout_s: float) -> dict[str, Any]:
    """Run the case (in a child process); the run's outcome."""
    task_dir = make_task(tmp / "labels-task")
    private = str((task_dir / "data/private/answers.csv").resolve())
    outside_dir = tmp / "outside"
    outside_dir.mkdir()
    hostile = source(HOSTILE, private=private, outside=str(outside_dir / "x"), case=case)
    honest = HONEST.replace("ANSWER", "no")
    config = scripted_config(tmp, task_dir, sandbox, [honest, hostile, honest], max_gen=2)
    runs_dir = tmp / "runs"
    pm = get_plugin_manager()
    row: dict[str, Any] = {"case": case, "sandbox": sandbox, "finished": False, "resumed": False}
    try:
        Loop(config, RunStore.open(runs_dir, "1", create=True), pm).run()
        row["finished"] = True
        running.resume_run(pm, runs_dir, "1", max_gen=3)
        row["resumed"] = True
    except BaseException as exc:  # what the attack did to the orchestrator
        row["note"] = f"{type(exc).__name__}: {str(exc)[:80]}"
    return row


def measure(tmp: Path, row: dict[str, Any]) -> dict[str, Any]:
    root = RunStore.path_for((tmp / "runs").resolve(), "1")
    try:
        dev = json.loads((root / "gen_2/metrics.json").read_text())["dev"]["score"]
    except (OSError, ValueError, KeyError):
        dev = None
    outside = tmp / "outside"
    return {
        **row,
        "dev": dev,
        "label_files": label_files(root),
        "outside": len(list(outside.iterdir())) if outside.is_dir() else 0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--sandbox", action="append", choices=["process", "bwrap"])
    parser.add_argument("--timeout", type=float, default=120.0, help="per case, seconds")
    parser.add_argument("--case", action="append", choices=CASES, help="only these cases")
    parser.add_argument(
        "--one", nargs=3, metavar=("CASE", "SANDBOX", "DIR"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.one:  # a child: one case, its row as JSON on the last line
        case, sandbox, tmp = args.one
        print(json.dumps(one(case, sandbox, Path(tmp), args.timeout)))
        return
    import sia_core

    print(f"sia_core from {Path(sia_core.__file__).parent}")
    print(
        f"{'case':<18}{'sandbox':<9}{'dev':>6}{'label files':>12}{'outside':>8}"
        f"{'finished':>9}{'resumed':>8}{'s':>6}  note"
    )
    for sandbox in args.sandbox or ["bwrap", "process"]:
        for case in args.case or CASES:
            with tempfile.TemporaryDirectory(prefix="sia-bench-hostile-") as tmp:
                t0 = time.monotonic()
                argv = [sys.executable, __file__, "--one", case, sandbox, tmp]
                proc = subprocess.Popen(
                    argv,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.DEVNULL,  # the runs' progress lines
                    text=True,
                    start_new_session=True,
                )
                try:
                    out, _ = proc.communicate(timeout=args.timeout)
                    row = json.loads(out.strip().splitlines()[-1])
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.communicate()
                    row = {"case": case, "sandbox": sandbox, "finished": False, "resumed": False}
                    row["note"] = f"hung: killed after {args.timeout:g} s"
                except (ValueError, IndexError):
                    row = {"case": case, "sandbox": sandbox, "finished": False, "resumed": False}
                    row["note"] = f"crashed (exit {proc.returncode})"
                r = measure(Path(tmp), row)
                seconds = time.monotonic() - t0
            dev = "-" if r["dev"] is None else f"{r['dev']:.3f}"
            print(
                f"{r['case']:<18}{r['sandbox']:<9}{dev:>6}{r['label_files']:>12}{r['outside']:>8}"
                f"{'yes' if r['finished'] else 'NO':>9}{'yes' if r['resumed'] else 'NO':>8}"
                f"{seconds:>6.1f}  {r.get('note', '')}",
                flush=True,
            )


if __name__ == "__main__":
    main()
