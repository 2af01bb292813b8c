"""A short soak (benchmarks/bench_soak.py): 24 scaffold runs, every hostile kind once, through
the bwrap sandbox and the real runner, in this one process. Files outside the run folder are
looked for by name where the hostile scaffolds write them (the benchmark also snapshots all of
/tmp, $HOME and the repo); the task folder and the run's records are compared exactly."""

from __future__ import annotations

import importlib.util
import json
import statistics
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from sia_core.contracts.sandbox import Limits
from sia_core.services.gateway import Gateway
from sia_core.services.runner import RunSpec, run_items
from sia_core.surface.builtin.scripted import ScriptedTaskModel

from .harness import ITEMS, SANDBOXES, Arena, make_sandbox

BENCH = Path(__file__).parents[2] / "benchmarks/bench_soak.py"


def load_bench():
    spec = importlib.util.spec_from_file_location("bench_soak", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_soak"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
@pytest.mark.parametrize("sandbox", [p for p in SANDBOXES if p.values == ("bwrap",)])
def test_short_soak_leaves_nothing_behind(sandbox: str, tmp_path: Path) -> None:
    bench = load_bench()
    n_runs = 24  # 12 normal + each of the 12 hostile kinds once
    result = bench.soak(n_runs, tmp_path, full_scan=False)
    print("\n".join(bench.report(result, n_runs)))
    kinds = {r.kind for r in result.runs}
    assert len(kinds) == 13, kinds
    assert result.problems == []  # statuses as expected, no label answered, nothing left
    assert all(not r.strays for r in result.runs)
    assert result.marker_files == [] and result.task_changes == []
    # the orchestrator's memory stays flat: no per-run growth beyond noise
    assert result.rss[n_runs] - result.rss[1] < 16 * 1024
    assert abs(result.rss_slope_kb) < 256
    # both sandboxes measured in this process, paired run for run
    assert len(result.paired_s["bwrap"]) == len(result.paired_s["process"]) == n_runs // 2
    assert statistics.median(result.paired_s["bwrap"]) > 0


LEAK_TOKEN = """
import os

def solve(item, ctx):
    ctx.llm("hello")
    return os.environ["OPENAI_API_KEY"]  # a scaffold could also hand it to a process it left
"""


@pytest.mark.parametrize("sandbox", SANDBOXES)
def test_a_dead_workers_gateway_token_stops_working(sandbox: str, arena: Arena) -> None:
    """The gateway forgets each worker's key when the worker is gone: the orchestrator's memory
    does not grow with the workers of a long run, and a leaked key is worthless afterwards."""
    results, calls = arena.run_scaffold(sandbox, LEAK_TOKEN, items=ITEMS[:1])
    (result,) = results
    assert result.status == "ok" and result.answer.startswith("sia-") and len(calls) == 1
    with Gateway(ScriptedTaskModel()) as gateway:
        gateway.begin(1)
        spec = RunSpec(
            scaffold_path=arena.gen / "target_agent.py",
            work_dir=arena.root / "work-2",
            public_dir=arena.public,
            parallel=1,
            limits=Limits(wall_s=60),
        )
        (leaked,) = run_items(spec, ITEMS[:1], sandbox=make_sandbox(sandbox), gateway=gateway)
        body = json.dumps({"messages": [{"role": "user", "content": "hi"}]}).encode()
        request = urllib.request.Request(
            gateway.url + "/chat/completions",
            data=body,
            headers={
                "Authorization": f"Bearer {leaked.answer}",
                "Content-Type": "application/json",
            },
        )
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=10)
        assert refused.value.code == 401 and b"unknown API key" in refused.value.read()
        assert gateway._tokens == {}  # nothing kept per worker
