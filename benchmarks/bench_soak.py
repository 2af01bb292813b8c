"""Soak: many scaffold runs, hostile and normal mixed, through the bwrap sandbox and the real runner.

Every other run is a normal scaffold (one model call through the gateway, then the sum); the
others cycle through the hostile scaffolds of tests/hostile (reading the labels by walking the
file system or via /proc, a loopback connection, a fork bomb, allocating until killed, an
infinite loop, filling the disk, a daemon left behind, signalling its parent, writing outside
its folder, a giant answer, a fake score line). One orchestrator (this process) drives them all
with one gateway, as a long run would. Afterwards it reports and checks:

- no stray process: after every run, nothing started by it is alive (descendants of this
  process, or anything whose command line, cwd or environment names the soak folder);
- no file outside the run folder: the task folder is unchanged (exactly), and no file named
  with the soak's marker (what the hostile scaffolds try to write) exists in /tmp, $HOME or the
  repo; other changes there (other processes on the machine) are counted, not blamed;
- the orchestrator's RSS at run 1, N/4, N/2 and N, and its least-squares slope after warm-up;
- sandbox start-up overhead: every normal bwrap run is paired with the same run in the process
  sandbox (alternating order), so both are measured in this one process.

    .venv/bin/python benchmarks/bench_soak.py [--runs 200]

Exit status 1 if a check fails. ``soak()`` is what tests/hostile/test_soak.py runs, shorter.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import socketserver
import statistics
import string
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # the hostile scaffolds live in the test suite

from sia_core.contracts.records import ItemResult  # noqa: E402
from sia_core.contracts.sandbox import Limits, Sandbox  # noqa: E402
from sia_core.services.gateway import Gateway  # noqa: E402
from sia_core.services.process_sandbox import ProcessSandbox  # noqa: E402
from sia_core.services.runner import RunSpec, run_items  # noqa: E402
from sia_core.surface.builtin.scripted import ScriptedTaskModel  # noqa: E402
from sia_sandbox_bwrap.sandbox import BwrapSandbox, pids_cgroup_parent  # noqa: E402
from tests.hostile import test_hostile_loop as loop_cases  # noqa: E402
from tests.hostile import test_hostile_runner as runner_cases  # noqa: E402
from tests.hostile.harness import ITEMS, LABELS, kill_all, running, source  # noqa: E402

NORMAL = (
    "import re\n\n\ndef solve(item, ctx):\n"
    "    reply = ctx.llm([{'role': 'user', 'content': item['input']}], max_tokens=16)\n"
    "    return sum(int(x) for x in re.findall(r'\\d+', reply)[:2])\n"
)
EXPECTED_NORMAL = [2 * k for k in range(len(ITEMS))]  # "What is k + k?"

WRITE_FILES = """
def solve(item, ctx):
    wrote = []
    for path in $targets:
        try:
            with open(path, "a") as f:
                f.write("# HOSTILE was here\\n")
            wrote.append(path)
        except OSError:
            pass
    return wrote  # inside bwrap only its private /tmp takes it; the soak checks the host side
"""


@dataclass
class Arena:
    """The soak's task folder and run folder, under one root named with the marker."""

    root: Path
    marker: str
    task: Path = field(init=False)
    run: Path = field(init=False)

    def __post_init__(self) -> None:
        self.task = self.root / "task"
        self.run = self.root / "run"
        public = self.task / "data/public"
        public.mkdir(parents=True)
        (self.task / "data/private").mkdir()
        (public / "task.md").write_text("Add two numbers.\n")
        rows = "".join(json.dumps({"id": i.id, "input": i.input}) + "\n" for i in ITEMS)
        (public / "dev.jsonl").write_text(rows)
        (self.labels).write_text(
            "".join(json.dumps({"id": k, "label": v}) + "\n" for k, v in LABELS.items())
        )
        (self.task / "scorer.py").write_text("def score_item(answer, label, item):\n    return 0\n")
        (self.run / "gen_0").mkdir(parents=True)
        (self.run / "gen_0/target_agent.py").write_text(NORMAL)
        (self.run / "events.jsonl").write_text('{"type": "run_started"}\n')

    @property
    def public(self) -> Path:
        return self.task / "data/public"

    @property
    def labels(self) -> Path:
        return self.task / "data/private/dev_labels.jsonl"

    def escape_targets(self) -> list[str]:
        """Where a hostile scaffold tries to write: nothing of it may appear there."""
        name = f"{self.marker}-escaped"
        return [
            str(self.run / "events.jsonl"),
            str(self.run / "gen_0/target_agent.py"),
            str(self.task / "scorer.py"),
            str(self.labels),
            str(self.public / "dev.jsonl"),
            f"/tmp/{name}",
            str(Path.home() / name),
            str(REPO / name),
            str(self.task / name),
        ]


class Canary(socketserver.ThreadingTCPServer):
    """A loopback service a scaffold must not reach."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                self.request.sendall(b"canary")

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()


def hostile_kinds(arena: Arena, canary_port: int, capped: bool) -> dict[str, tuple[str, Any]]:
    """kind -> (scaffold source, the statuses the bwrap sandbox must record for the 2 items, or
    a set of such tuples where either is containment)."""
    return {
        "walk_for_labels": (
            source(runner_cases.WALK, ids=list(LABELS)),
            ("error", "error"),
        ),
        "labels_via_proc": (
            source(runner_cases.PROC, labels=str(arena.labels)),
            ("error", "error"),
        ),
        "connect_loopback": (
            source(runner_cases.CONNECT, host="127.0.0.1", port=canary_port),
            ("error", "error"),
        ),
        "fork_bomb": (
            source(runner_cases.BOMB, bounded=not capped),
            ("timeout", "ok") if capped else ("ok", "ok"),
        ),
        # MemoryError at the memory limit; on a loaded machine the 2 s item limit may come first
        "allocate": (runner_cases.HOG, {("error", "ok"), ("timeout", "ok")}),
        "infinite_loop": (runner_cases.LOOP, ("timeout", "ok")),
        "fill_disk": (source(runner_cases.FILL, marker=arena.marker), ("error", "error")),
        "daemon_left": (runner_cases.BACKGROUND, ("ok", "ok")),
        "signal_parent": (runner_cases.KILL_PARENT, ("error", "ok")),
        "write_outside": (
            string.Template(WRITE_FILES).substitute(targets=repr(arena.escape_targets())),
            ("ok", "ok"),
        ),
        "giant_answer": (loop_cases.GIANT, ("error", "error")),
        "fake_score": (loop_cases.FAKE_SCORE, ("ok", "ok")),
    }


def rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def snapshot(top: Path, skip: Path) -> dict[str, tuple[int, int]]:
    """``path -> (size, mtime_ns)`` of every file under ``top`` (not under ``skip`` or .git)."""
    out: dict[str, tuple[int, int]] = {}
    for root, dirs, files in os.walk(top):
        dirs[:] = [
            d for d in dirs if d != ".git" and not Path(root, d).resolve().is_relative_to(skip)
        ]
        for name in files:
            p = os.path.join(root, name)
            try:
                st = os.lstat(p)
            except OSError:
                continue
            out[p] = (st.st_size, st.st_mtime_ns)
    return out


def changed(before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]]) -> list[str]:
    return sorted(p for p, v in after.items() if before.get(p) != v) + sorted(
        p for p in before if p not in after
    )


@dataclass
class Run:
    n: int
    kind: str
    sandbox: str
    statuses: tuple[str, ...]
    errors: tuple[str, ...]
    answers: tuple[Any, ...]
    seconds: float
    strays: dict[int, str]


@dataclass
class SoakResult:
    runs: list[Run]
    rss: dict[int, int]  # run number -> RSS in kB after it
    rss_slope_kb: float  # per run, least squares from run 10 on
    paired_s: dict[str, list[float]]  # "bwrap"/"process" -> normal run wall times
    task_changes: list[str]
    marker_files: list[str]
    other_changes: int
    problems: list[str]


def _slope(points: list[tuple[int, int]]) -> float:
    if len(points) < 2:
        return 0.0
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / den if den else 0.0


def _one(
    arena: Arena,
    n: int,
    kind: str,
    text: str,
    box: Sandbox,
    gateway: Gateway,
    limits: Limits,
) -> tuple[list[ItemResult], float]:
    gdir = arena.run / f"gen_{n}-{type(box).__name__}"
    gdir.mkdir()
    (gdir / "target_agent.py").write_text(text)
    spec = RunSpec(
        scaffold_path=gdir / "target_agent.py",
        work_dir=gdir / "work",
        public_dir=arena.public,
        parallel=1,
        item_timeout_s=2.0,
        setup_timeout_s=30.0,
        limits=limits,
    )
    gateway.begin(n)
    t0 = time.perf_counter()
    results = run_items(spec, ITEMS, sandbox=box, gateway=gateway)
    elapsed = time.perf_counter() - t0
    # the fill scaffold leaves 16+ MB per run in its work dir; the soak keeps only the record
    for big in (gdir / "work").glob("worker-*/fill-*"):
        big.unlink()
    for big in (gdir / "work").glob("worker-*/one-big-file"):
        big.unlink()
    return results, elapsed


def soak(
    n_runs: int,
    root: Path,
    *,
    sandbox: str = "bwrap",
    full_scan: bool = True,
    progress: bool = False,
) -> SoakResult:
    """Run ``n_runs`` scaffold runs under ``root`` and check what they left behind.

    ``sandbox="process"`` runs the hostile scaffolds in the process sandbox instead, to show
    what it lets through (the checks then report problems; files it wrote are removed).
    ``full_scan=False`` skips the before/after snapshot of all of /tmp, $HOME and the repo (tens
    of seconds on a busy machine) and looks only where the hostile scaffolds write, by name.
    """
    marker = f"sia-soak-{os.getpid()}-{int(time.time())}"
    arena = Arena(root / marker, marker)
    watched = {"tmp": Path("/tmp"), "home": Path.home(), "repo": REPO} if full_scan else {}
    before = {k: snapshot(p, arena.root) for k, p in watched.items()}
    task_before = snapshot(arena.task, arena.run)
    records = {
        p: p.read_bytes() for p in (arena.run / "events.jsonl", arena.run / "gen_0/target_agent.py")
    }
    capped = os.geteuid() != 0 or pids_cgroup_parent() is not None
    bwrap, process = BwrapSandbox(), ProcessSandbox()
    ok, why = bwrap.available()
    if not ok:
        raise SystemExit(f"bwrap is not available here: {why}")
    hostile_box: Sandbox = bwrap if sandbox == "bwrap" else ProcessSandbox()
    if sandbox != "bwrap":
        capped = False  # only a bounded bomb is safe outside bwrap
    canary = Canary()
    kinds = hostile_kinds(arena, canary.server_address[1], capped)
    names = list(kinds)
    limits = Limits(wall_s=60, memory_mb=512, max_procs=16, file_size_mb=4)
    special = {
        "fork_bomb": Limits(wall_s=60, memory_mb=512, max_procs=8, file_size_mb=4),
        "allocate": Limits(wall_s=60, memory_mb=256, max_procs=16, file_size_mb=4),
    }
    model = ScriptedTaskModel({"rules": [{"match": "hello", "reply": "hi from the gateway"}]})
    runs: list[Run] = []
    rss: dict[int, int] = {}
    rss_points: list[tuple[int, int]] = []
    paired: dict[str, list[float]] = {"bwrap": [], "process": []}
    problems: list[str] = []
    samples = {1, max(1, n_runs // 4), max(1, n_runs // 2), n_runs}
    try:
        with Gateway(model) as gateway:
            for n in range(1, n_runs + 1):
                kind = "normal" if n % 2 == 1 else names[(n // 2 - 1) % len(names)]
                text, expected = (NORMAL, ("ok", "ok")) if kind == "normal" else kinds[kind]
                order = [bwrap, process] if n % 4 == 1 else [process, bwrap]
                boxes = order if kind == "normal" else [hostile_box]
                for box in boxes:
                    name = "bwrap" if box is bwrap or box is hostile_box else "process"
                    results, took = _one(
                        arena,
                        n,
                        kind,
                        text,
                        box,
                        gateway,
                        special.get(kind, limits),
                    )
                    time.sleep(0.02)  # a SIGKILLed process may take a moment to leave /proc
                    strays = running(str(arena.root))
                    kill_all(list(strays))
                    run = Run(
                        n=n,
                        kind=kind,
                        sandbox=name,
                        statuses=tuple(r.status for r in results),
                        errors=tuple(r.error.split("\n")[0][:160] for r in results),
                        answers=tuple(r.answer for r in results),
                        seconds=took,
                        strays=strays,
                    )
                    runs.append(run)
                    if kind == "normal":
                        paired[name].append(took)
                    if name == "bwrap":
                        problems += _check(run, expected)
                gc.collect()
                kb = rss_kb()
                if n in samples:
                    rss[n] = kb
                if n >= 10:
                    rss_points.append((n, kb))
                if progress and (n in samples or n % 10 == 0):
                    print(f"  run {n}/{n_runs}: {kind}, RSS {kb / 1024:.1f} MB", file=sys.stderr)
    finally:
        canary.shutdown()
        canary.server_close()
    after = {k: snapshot(p, arena.root) for k, p in watched.items()}
    diffs = {k: changed(before[k], after[k]) for k in watched}
    marker_files = [p for paths in diffs.values() for p in paths if marker in p]
    for top in (Path("/tmp"), Path.home(), REPO):
        marker_files += [str(p) for p in top.glob(f"{marker}*")]
    marker_files = sorted(set(marker_files))
    for path in marker_files:
        Path(path).unlink(missing_ok=True)  # what escaped (only outside bwrap)
    task_changes = changed(task_before, snapshot(arena.task, arena.run))
    task_changes += [str(p) for p, data in records.items() if p.read_bytes() != data]
    if marker_files:
        problems.append(f"files written outside the run folder: {marker_files}")
    if task_changes:
        problems.append(f"the task folder or the run's records changed: {task_changes}")
    left = running(str(arena.root))
    if left:
        kill_all(list(left))
        problems.append(f"left running at the end: {left}")
    return SoakResult(
        runs=runs,
        rss=rss,
        rss_slope_kb=_slope(rss_points),
        paired_s=paired,
        task_changes=task_changes,
        marker_files=marker_files,
        other_changes=sum(len(v) for v in diffs.values()) - len(marker_files),
        problems=problems,
    )


def _check(run: Run, expected: Any) -> list[str]:
    out = []
    if run.statuses not in (expected if isinstance(expected, set) else {expected}):
        out.append(f"run {run.n} ({run.kind}): statuses {run.statuses} != {expected}: {run.errors}")
    if any(a == LABELS[i.id] for a, i in zip(run.answers, ITEMS, strict=True)):
        out.append(f"run {run.n} ({run.kind}): answered a private label")
    if run.kind == "write_outside":
        wrote = {w for a in run.answers for w in a or () if not w.startswith("/tmp/")}
        if wrote:
            out.append(f"run {run.n} (write_outside): wrote {sorted(wrote)}")
    if run.kind == "normal" and list(run.answers) != EXPECTED_NORMAL:
        out.append(f"run {run.n} (normal): answers {run.answers}")
    if run.strays:
        out.append(f"run {run.n} ({run.kind}): left running {run.strays}")
    return out


def report(result: SoakResult, n_runs: int) -> Iterator[str]:
    """The markdown lines of the soak's figures."""
    bwrap_runs = [r for r in result.runs if r.sandbox == "bwrap"]
    hostile = [r for r in bwrap_runs if r.kind != "normal"]
    yield (
        f"{n_runs} scaffold runs through bwrap ({len(bwrap_runs) - len(hostile)} normal, "
        f"{len(hostile)} hostile, 2 items each) + {len(result.paired_s['process'])} paired "
        "normal runs in the process sandbox, one orchestrator process"
    )
    yield ""
    yield "| kind | runs | statuses (bwrap) | max s |"
    yield "|---|---:|---|---:|"
    kinds: dict[str, list[Run]] = {}
    for r in bwrap_runs:
        kinds.setdefault(r.kind, []).append(r)
    for kind, rs in kinds.items():
        statuses = sorted({"/".join(r.statuses) for r in rs})
        yield f"| {kind} | {len(rs)} | {', '.join(statuses)} | {max(r.seconds for r in rs):.2f} |"
    yield ""
    strays = sum(len(r.strays) for r in result.runs)
    yield f"- stray processes after a run: {strays}"
    yield (
        f"- files outside the run folder: {len(result.marker_files)} with the soak's marker; "
        f"changes to the task folder or the run's records: {len(result.task_changes)}; other changes in /tmp, $HOME and the "
        f"repo during the soak (other processes): {result.other_changes}"
    )
    points = ", ".join(f"run {n}: {kb / 1024:.1f} MB" for n, kb in sorted(result.rss.items()))
    yield f"- orchestrator RSS: {points}; slope after run 10: {result.rss_slope_kb:+.2f} kB/run"
    b, p = (statistics.median(result.paired_s[k]) * 1000 for k in ("bwrap", "process"))
    yield (
        f"- one normal run (worker start, setup, 2 items with a model call each, exit): median "
        f"bwrap {b:.0f} ms, process {p:.0f} ms; bwrap adds {b - p:+.0f} ms per run "
        f"(ratio {b / p:.2f})"
    )
    yield f"- problems: {len(result.problems)}"
    for problem in result.problems:
        yield f"  - {problem}"


def main() -> None:
    """Run the soak and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--keep", action="store_true", help="keep the soak folder")
    parser.add_argument(
        "--sandbox",
        choices=["bwrap", "process"],
        default="bwrap",
        help="where the hostile scaffolds run; process shows what it lets through",
    )
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="sia-bench-soak-"))
    t0 = time.perf_counter()
    try:
        result = soak(args.runs, root, sandbox=args.sandbox, progress=True)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    for line in report(result, args.runs):
        print(line)
    print(f"\n(took {time.perf_counter() - t0:.0f} s)")
    sys.exit(1 if result.problems else 0)


if __name__ == "__main__":
    main()
