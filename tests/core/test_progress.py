"""The progress display: live on a terminal, plain lines otherwise."""

from __future__ import annotations

import io

from rich.console import Console

from sia_core.contracts.records import Event
from sia_core.surface.builtin.progress import LiveProgress, PlainProgress


def events() -> list[Event]:
    node = {"gen": 1, "dev_score": 0.25}
    return [
        Event(type="gen_started", run_id="1", gen=1),
        Event(type="step_started", run_id="1", gen=1, data={"step": "run"}),
        Event(
            type="item_finished",
            run_id="1",
            gen=1,
            data={"done": 37, "total": 120, "split": "dev", "status": "ok"},
        ),
        Event(
            type="step_finished",
            run_id="1",
            gen=1,
            data={"step": "score", "seconds": 0.1, "dev_score": 0.25},
        ),
        Event(
            type="step_finished",
            run_id="1",
            gen=1,
            data={"step": "gate", "seconds": 0.0, "incumbent": 1, "node": node, "reason": "first"},
        ),
    ]


def test_live_view_shows_step_progress_and_scores() -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=100, color_system=None)
    live = LiveProgress(console, refresh_per_second=50)
    evs = events()
    for e in evs[:3]:
        live.sia_on_event(e)
    live.live.refresh()
    assert "running the scaffold dev 37/120" in out.getvalue()
    for e in evs[3:]:
        live.sia_on_event(e)
    live.live.refresh()
    text = out.getvalue()
    assert "0.2500 (gen 1)" in text  # best dev so far
    assert "gen 1: score done in 0.1s dev=0.2500" in text  # a plain line above the panel
    live.sia_on_event(Event(type="run_finished", run_id="1", data={"status": "finished"}))
    assert not live.live.is_started


def test_plain_lines_when_not_a_terminal() -> None:
    out = io.StringIO()
    plain = PlainProgress(out, every_s=3600)
    for e in events():
        plain.sia_on_event(e)
    lines = out.getvalue().splitlines()
    assert len(lines) == 3  # item progress is not printed line by line
    assert lines[0].endswith("gen 1: running the scaffold ...")
    assert "incumbent=gen 1" in lines[-1]


def test_plain_items_lines_with_an_eta_during_a_long_step() -> None:
    out = io.StringIO()
    plain = PlainProgress(out, every_s=0)
    for e in events()[:3]:
        plain.sia_on_event(e)
    line = out.getvalue().splitlines()[-1]
    assert "gen 1: dev 37/120 items, " in line and "s elapsed, ETA " in line


def test_a_plain_log_shows_progress_during_the_sealed_test(tmp_path) -> None:
    """A run's plain log says how far the final test has got (every item here; every 30 s by
    default)."""
    import os
    import subprocess
    import sys

    from .test_loop import write_script

    args = ["--task", "tiny-add", "--max_gen", "1", "--backend", "scripted"]
    args += ["--backend-opt", f"script={write_script(tmp_path)}", "--runs-dir", str(tmp_path)]
    proc = subprocess.run(
        [sys.executable, "-m", "sia_core.surface.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "SIA_PROGRESS_EVERY_S": "0"},
    )
    assert proc.returncode == 0, proc.stderr
    log = proc.stderr[proc.stderr.index("scoring the sealed test split ...") :]
    test_lines = [ln for ln in log.splitlines() if "gen 1: test " in ln and " items, " in ln]
    assert test_lines and test_lines[-1].split("gen 1: test ")[1].startswith("12/12 items")


def test_the_train_line_says_a_failed_update_and_why() -> None:
    from sia_core.surface.builtin.progress import describe

    data = {"step": "train", "seconds": 2.0, "status": "failed", "error": "trained on 0 tokens"}
    line = describe(Event(type="step_finished", run_id="1", gen=2, data=data))
    assert line == "gen 2: train done in 2.0s status=failed: trained on 0 tokens"
