"""A short soak (benchmarks/bench_soak.py): 24 scaffold runs, every hostile kind once, through
the bwrap sandbox and the real runner, in this one process. Files outside the run folder are
looked for by name where the hostile scaffolds write them (the benchmark also snapshots all of
/tmp, $HOME and the repo); the task folder and the run's records are compared exactly."""

from __future__ import annotations

import importlib.util
import statistics
import sys
from pathlib import Path

import pytest

from .harness import SANDBOXES

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
