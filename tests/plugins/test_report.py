"""sia-report: the report of a real run of the loop (scripted backend, a weights generation
through a fake executor at the plugin boundary), read back from HTML and in a real headless
browser (Debian's chromium driven by Playwright): no console error, no network request, the
expected generations, levers and scores. The screenshot is kept as a test artifact."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from sia_core import hookimpl
from sia_core.contracts.records import AlgorithmFit, AlgorithmSpec, ExecutorSpec, TrainResult
from sia_core.loop import Loop
from sia_core.machinery.plugins import new_plugin_manager
from sia_core.machinery.runstore import RunStore
from sia_core.testing.fixtures import tiny_task_source
from sia_report import plugin as report_plugin
from sia_report.data import read_run
from sia_report.html import render

from ..core.test_loop import make_config, write_script

#: LLM-written text reaches the page; it must show as text and load nothing
HOSTILE = '<img src="http://127.0.0.1:9/x.png"><script>document.title="owned"</script>'
TRAIN_STEPS = 4


class LoggingExecutor:
    """'Trains' by writing an adapter folder and a ``train_log.jsonl`` in sia-train's format."""

    name = "fake"

    def available(self) -> tuple[bool, str]:
        return True, "in-process test executor"

    def run(self, job: Any, on_progress: Any) -> TrainResult:
        out = Path(job.out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "adapter_config.json").write_text(json.dumps({"algorithm": job.algorithm}))
        log = out / "train_log.jsonl"
        with open(log, "w") as f:
            for step in range(1, TRAIN_STEPS + 1):
                line = {
                    "step": step,
                    "reward_mean": 0.2 * step,
                    "reward_std": 0.1,
                    "reward_min": 0.0,
                    "reward_max": 1.0,
                    "kl": 0.01 * step,
                    "loss": 1.0 / step,
                    "tokens": 100,
                    "seconds": 0.5,
                }
                f.write(json.dumps(line) + "\n")
                on_progress({"event": "step", "step": step, "steps": TRAIN_STEPS})
        return TrainResult(
            status="ok",
            adapter=str(out),
            log=str(log),
            metrics={"reward_first": 0.2, "reward_last": 0.8, "seconds": 2.0, "steps": 4},
        )


def fit(stats: Any) -> AlgorithmFit:
    return AlgorithmFit(name="grpo", score=0.9, reason="binary episode rewards")


def fit_ppo(stats: Any) -> AlgorithmFit:
    return AlgorithmFit(name="ppo", score=0.4, reason="no per-step rewards")


class TrainingPlugins:
    @hookimpl
    def sia_rl_algorithms(self) -> Any:
        yield AlgorithmSpec(name="grpo", fit=f"{__name__}:fit", trainer="x:y")
        yield AlgorithmSpec(name="ppo", fit=f"{__name__}:fit_ppo", trainer="x:y")

    @hookimpl
    def sia_executors(self) -> Any:
        yield ExecutorSpec(name="fake", factory=f"{__name__}:LoggingExecutor")


#: harness (model says "no idea": dev 0) -> weights (the adapter makes it name the numbers:
#: dev 1, incumbent) -> both (trains again, scaffold answers 0: rejected) -> stop
SCRIPT = {
    "meta": {"scaffold": "llm_calc_scaffold.py"},
    "feedback": {
        "2": {"lever": "weights", "rationale": "the model cannot read the numbers"},
        "3": {"lever": "both", "scaffold": "zero_scaffold.py", "rationale": HOSTILE},
        "4": {"lever": "stop", "rationale": "good enough"},
    },
    "task_model": {
        "trainable": True,
        "default": "no idea",
        "adapter_rules": [{"match": r"(\d+) \+ (\d+)", "reply": r"\1 and \2"}],
    },
}
LEVERS = ["harness", "weights", "both", "stop"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real 4-generation run of the loop with the report plugin registered as an observer."""
    tmp = tmp_path_factory.mktemp("report")
    task_dir = tmp / "tiny-task"
    shutil.copytree(tiny_task_source(), task_dir, ignore=shutil.ignore_patterns("__pycache__"))
    pm = new_plugin_manager(entrypoints=False)
    pm.register_object(TrainingPlugins(), "training")
    pm.register_object(report_plugin, "report")
    store = RunStore.open(tmp / "runs", "1", create=True)
    config = make_config(task_dir, write_script(tmp, SCRIPT), max_gen=4)
    rows = Loop(config, store, pm).run()
    assert [r.lever for r in rows] == LEVERS  # the run itself is what the report must show
    return store.root


def test_the_observer_wrote_the_report_and_figures_during_the_run(run_dir: Path) -> None:
    html = (run_dir / "report.html").read_text()
    assert 'data-status="stopped"' in html  # written at run_finished, after the stop
    assert (run_dir / "report/score.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (run_dir / "report/training.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_read_run_matches_the_artifacts(run_dir: Path) -> None:
    run = read_run(run_dir)
    assert [g.lever for g in run.gens] == LEVERS
    assert [g.dev for g in run.gens] == [0.0, 1.0, 0.0, None]
    assert [g.status for g in run.gens] == ["done", "done", "done", "stopped"]
    assert run.incumbent == 2 and run.status == "stopped"
    assert [g.incumbent_after for g in run.gens[:3]] == [1, 2, 2]
    tests = [g.test for g in run.gens[:3]]
    assert all(t is not None for t in tests)
    g2 = run.gens[1]
    assert g2.rl_algorithm == "grpo" and g2.reward_stats and g2.reward_stats["n_rewards"] > 0
    assert {f["name"] for f in g2.algorithm_fits} == {"grpo", "ppo"}
    assert g2.train and g2.train.status == "ok" and len(g2.train.steps) == TRAIN_STEPS
    assert g2.train.executor == "fake" and g2.step_seconds["train"] >= 0
    assert run.gens[2].diff and "-    reply" in run.gens[2].diff  # the scaffold changed
    assert run.gens[0].llm_calls and run.gens[0].llm_calls > 0


def test_run_text_is_escaped(run_dir: Path) -> None:
    html = (run_dir / "report.html").read_text()
    assert HOSTILE not in html and "<script" not in html
    assert "&lt;script&gt;document.title=&quot;owned&quot;&lt;/script&gt;" in html
    # everything the page could load: nothing outside the page itself
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", html)


def test_sia_report_command_writes_html_and_pngs(run_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "runs" / "run_1"
    shutil.copytree(run_dir, copy)
    shutil.rmtree(copy / "report")
    (copy / "report.html").unlink()
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "sia_core.surface.cli",
            "report",
            "1",
            "--runs-dir",
            str(tmp_path / "runs"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    printed = out.stdout.split()
    assert printed[0] == str((copy / "report.html").resolve())
    assert {Path(p).name for p in printed[1:]} == {"score.png", "training.png"}
    assert (copy / "report.html").stat().st_size > 5000
    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "sia_core.surface.cli",
            "report",
            "7",
            "--runs-dir",
            str(tmp_path / "runs"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 1 and bad.stderr.count("\n") == 1
    assert "no run '7'" in bad.stderr and "Traceback" not in bad.stderr


def test_a_killed_run_shows_its_half_written_generation(run_dir: Path, tmp_path: Path) -> None:
    """Cut the run as a SIGKILL during gen 3 would: events after gen 3's run step are gone, the
    last line is cut short, run.json still says running with a dead pid."""
    copy = tmp_path / "run_1"
    shutil.copytree(run_dir, copy)
    lines = (copy / "events.jsonl").read_text().splitlines()
    keep = []
    for line in lines:
        e = json.loads(line)
        keep.append(line)
        if e["type"] == "step_finished" and e["gen"] == 3 and e["data"]["step"] == "run":
            break
    (copy / "events.jsonl").write_text("\n".join(keep) + '\n{"type": "step_fin')
    for name in ("metrics.json", "sealed"):
        p = copy / "gen_3" / name
        shutil.rmtree(p) if p.is_dir() else p.unlink()
    shutil.rmtree(copy / "gen_4")
    info = json.loads((copy / "run.json").read_text())
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    info.update(status="running", pid=dead.pid)
    (copy / "run.json").write_text(json.dumps(info))
    (copy / "gen_1" / "decision.json").write_text("{not json")
    execution = json.loads((copy / "gen_2/agent_execution.json").read_text())
    for call in execution["calls"]:  # as when the served adapter could not load
        call.update(status="error", error="task model failed: <no adapter>", completion=None)
    (copy / "gen_2/agent_execution.json").write_text(json.dumps(execution))
    info.pop("cost", None)  # a run from before the cost ledger: the report says so
    (copy / "run.json").write_text(json.dumps(info))
    for p in copy.glob("gen_*/cost.json"):
        p.unlink()

    run = read_run(copy)
    assert run.status == "interrupted"
    assert [g.status for g in run.gens] == ["done", "done", "incomplete"]
    assert run.gens[2].dev is None and set(run.gens[2].step_seconds) == {"propose", "train", "run"}
    assert any("gen_1/decision.json" in p for p in run.problems)
    html = render(run)
    assert "half-written (the run stopped here)" in html and "sia resume" in html
    assert "unreadable artifacts" in html
    assert "No cost ledger in this run" in html
    n = len(execution["calls"])
    assert n > 0 and run.gens[1].failed_calls == n and run.gens[0].failed_calls == 0
    assert f"{n} of {n} task-model calls failed" in html and "&lt;no adapter&gt;" in html


def test_cost_and_time_per_generation(run_dir: Path) -> None:
    """The cost table shows the ledger's per-generation totals where the run has a ledger,
    else the dev run's metrics; step times come from events.jsonl."""
    html = (run_dir / "report.html").read_text()
    table = html[html.index('<table class="cost">') :]
    table = table[: table.index("</table>")]
    rows = re.findall(r"<tr>(.*?)</tr>", table.split("<tbody>")[1])
    assert len(rows) == 4
    cells = [re.findall(r"<td[^>]*>(.*?)</td>", r) for r in rows]
    gen1 = json.loads((run_dir / "gen_1/metrics.json").read_text())
    ledger = run_dir / "gen_1/cost.json"
    calls = json.loads(ledger.read_text())["llm_calls"] if ledger.exists() else gen1["llm_calls"]
    assert calls > 0 and f">{calls:,}<" in "".join(f">{c}<" for c in cells[0])
    assert ("cost ledger: every LLM call" in html) == ledger.exists()


def test_a_failing_report_never_stops_the_run(tmp_path: Path, tiny_task_dir: Path) -> None:
    pm = new_plugin_manager(entrypoints=False)
    pm.register_object(report_plugin, "report")
    store = RunStore.open(tmp_path / "runs", "1", create=True)
    (store.root / "report.html").mkdir()  # the report cannot be written
    script = write_script(tmp_path, {"meta": {"scaffold": "reference"}})
    rows = Loop(make_config(tiny_task_dir, script, max_gen=2), store, pm).run()
    assert [r.status for r in rows] == ["done", "done"]
    assert json.loads((store.root / "run.json").read_text())["status"] == "finished"


def test_sia_help_imports_no_matplotlib() -> None:
    code = (
        "import sys; from sia_core.surface.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "print('matplotlib' in sys.modules, 'report' in sys.argv)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "  report " in out.stdout  # the plugin's command is listed
    assert out.stdout.strip().endswith("False False")


# -- in a real browser -------------------------------------------------------------------------


def _chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    raise AssertionError("chromium is not installed: scripts/setup-system installs it (as root)")


def test_report_in_a_headless_browser(run_dir: Path, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    page_url = (run_dir / "report.html").resolve().as_uri()
    requests: list[str] = []
    console: list[str] = []
    errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=_chromium(), headless=True, args=["--no-sandbox"]
        )
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.on("request", lambda r: requests.append(r.url))
            page.on(
                "console",
                lambda m: console.append(f"{m.type}: {m.text}") if m.type == "error" else None,
            )
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(page_url, wait_until="load")
            page.wait_for_timeout(300)
            shot = tmp_path / "report.png"
            page.screenshot(path=str(shot), full_page=True)

            title = page.title()
            levers = page.eval_on_selector_all(".tl", "els => els.map(e => e.dataset.lever)")
            dev = page.eval_on_selector_all(
                "svg.score-chart .pt.dev", "els => els.map(e => [e.dataset.gen, e.dataset.dev])"
            )
            test = page.eval_on_selector_all("svg.score-chart .pt.test", "els => els.length")
            incumbent = page.eval_on_selector_all(
                "svg.score-chart .pt.incumbent", "els => els.map(e => e.dataset.gen)"
            )
            rows = page.eval_on_selector_all("table.scores tbody tr", "els => els.length")
            nodes = page.eval_on_selector_all(
                "svg.lineage .node", "els => els.map(e => [e.dataset.gen, e.dataset.parent])"
            )
            reward_pts = page.eval_on_selector_all(
                ".train-charts svg.train-reward .pt", "els => els.length"
            )
            train_gens = page.eval_on_selector_all(
                ".train-charts", "els => els.map(e => e.dataset.gen)"
            )
            body = page.inner_text("body")
        finally:
            browser.close()

    artifacts = os.environ.get("SIA_TEST_ARTIFACTS")
    if artifacts:
        Path(artifacts).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(artifacts) / "report-screenshot.png")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000

    assert requests == [page_url]  # the page itself, nothing else
    assert console == [] and errors == []
    assert title == "sia run 1 — tiny-add"  # the hostile rationale did not run
    assert levers == LEVERS
    assert dev == [["1", "0.000000"], ["2", "1.000000"], ["3", "0.000000"]]
    assert test == 3 and incumbent == ["2"] and rows == 4
    assert nodes == [["1", ""], ["2", "1"], ["3", "2"], ["4", "2"]]
    assert train_gens == ["2", "3"] and reward_pts == 2 * TRAIN_STEPS
    assert '<script>document.title="owned"</script>' in body  # shown as text
