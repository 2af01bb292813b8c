"""Progress of a run on the terminal: a live view on a TTY, plain lines otherwise.

The live view shows the generation, the current step (``running scaffold on dev 37/120``),
the current and best dev score, and the elapsed time. Both forms are ``sia_on_event`` observers.
"""

from __future__ import annotations

import os
import time
from typing import Any, TextIO

from rich.console import Console
from rich.live import Live
from rich.table import Table

from sia_core import hookimpl
from sia_core.contracts.records import Event
from sia_core.machinery.runstate import RunState

STEP_LABELS = {
    "propose": "proposing the next scaffold",
    "train": "training the task model",
    "run": "running the scaffold",
    "score": "scoring",
    "gate": "gating",
    "test": "scoring the sealed test split",
}


class PlainProgress:
    """One line per step on stderr (for logs, CI and pipes), and during a long step a line of
    items done, elapsed time and ETA at most every ``every_s`` seconds (``SIA_PROGRESS_EVERY_S``,
    default 30)."""

    def __init__(self, stream: TextIO | None = None, every_s: float | None = None) -> None:
        self.console = Console(file=stream, stderr=stream is None, highlight=False, soft_wrap=True)
        self.t0 = self.step_t0 = self.last = time.monotonic()
        if every_s is None:
            every_s = float(os.environ.get("SIA_PROGRESS_EVERY_S") or 30)
        self.every_s = every_s

    @hookimpl
    def sia_on_event(self, event: Event) -> None:
        now = time.monotonic()
        if event.type == "step_started":
            self.step_t0 = self.last = now
        line = describe(event)
        if event.type == "item_finished" and now - self.last >= self.every_s:
            self.last = now
            line = items_line(event, now - self.step_t0)
        if line:
            self.console.print(f"[{now - self.t0:7.1f}s] {line}", markup=False)


def items_line(event: Event, elapsed: float) -> str:
    """``gen 1: test 120/913 items, 95s elapsed, ETA 628s``."""
    d = event.data
    done, total = int(d["done"]), int(d["total"])
    eta = f", ETA {elapsed / done * (total - done):.0f}s" if 0 < done < total else ""
    return f"gen {event.gen}: {d['split']} {done}/{total} items, {elapsed:.0f}s elapsed{eta}"


def describe(event: Event) -> str:
    """A one-line description of an event, or "" for events not worth a line."""
    d, g = event.data, event.gen
    if event.type == "step_started":
        return f"gen {g}: {STEP_LABELS.get(d['step'], d['step'])} ..."
    if event.type == "step_finished":
        step = d["step"]
        extra = ""
        if step == "propose":
            extra = f" lever={d['lever']}"
            if d.get("rl_algorithm"):
                extra += f" rl={d['rl_algorithm']}"
        elif step == "train":
            extra = f" status={d.get('status')}"
            if d.get("status") != "ok":
                extra += f": {d.get('error')}"
        elif step == "run" and d.get("kind") == "program":
            extra = (
                f" program errors={d['errors']} timeouts={d['timeouts']} "
                f"exit_status={d.get('exit_status')} llm_calls={d['llm_calls']}"
            )
        elif step == "run":
            extra = (
                f" items={d['items']} errors={d['errors']} timeouts={d['timeouts']} "
                f"llm_calls={d['llm_calls']}"
            )
        elif step == "score":
            extra = f" dev={d['dev_score']:.4f}"
        elif step == "gate":
            extra = f" incumbent=gen {d['incumbent']} ({d['reason']})"
        return f"gen {g}: {step} done in {d['seconds']:.1f}s{extra}"
    if event.type in ("run_started", "run_resumed"):
        verb = "resumed" if event.type == "run_resumed" else "started"
        trainable = "trainable" if d.get("trainable") else "not trainable"
        return (
            f"run {verb}: task {d['task']}, task model {d.get('task_model')} ({trainable}), "
            f"backend {d['backend']}, sandbox {d['sandbox']}"
        )
    if event.type == "run_failed" and str(d.get("error", "")).startswith("KeyboardInterrupt"):
        return "run interrupted (Ctrl-C): every finished step is kept"
    if event.type in ("run_stopped", "run_failed"):
        return f"{event.type.replace('_', ' ')}: {d.get('reason') or d.get('error')}"
    return ""


class LiveProgress:
    """A live status panel on a terminal; plain lines are printed above it as steps finish."""

    def __init__(self, console: Console | None = None, refresh_per_second: float = 4) -> None:
        self.console = console or Console(stderr=True)
        self.t0 = time.monotonic()
        self.state: dict[str, Any] = {"gen": None, "step": "starting", "done": 0, "total": 0}
        self.dev: float | None = None
        self.run = RunState()  # the incumbent, as the run's gate events say
        self.live = Live(
            self._render(),
            console=self.console,
            refresh_per_second=refresh_per_second,
            transient=True,
        )
        self.live.start()

    def _render(self) -> Table:
        s = self.state
        table = Table.grid(padding=(0, 2))
        table.add_column(style="bold")
        table.add_column()
        step = STEP_LABELS.get(s["step"], s["step"])
        if s["total"]:
            step += f" {s['split']} {s['done']}/{s['total']}"
        table.add_row("generation", str(s["gen"] or "-"))
        table.add_row("step", step)
        table.add_row("dev (this gen)", "-" if self.dev is None else f"{self.dev:.4f}")
        best_dev = self.run.incumbent_dev()
        best = "-" if best_dev is None else f"{best_dev:.4f} (gen {self.run.incumbent})"
        table.add_row("best dev", best)
        table.add_row("elapsed", f"{time.monotonic() - self.t0:.0f}s")
        return table

    @hookimpl
    def sia_on_event(self, event: Event) -> None:
        d = event.data
        self.run.add(event)
        if event.type == "gen_started":
            self.state.update(gen=event.gen, done=0, total=0)
            self.dev = None
        elif event.type == "step_started":
            self.state.update(gen=event.gen, step=d["step"], done=0, total=0)
        elif event.type == "item_finished":
            self.state.update(done=d["done"], total=d["total"], split=d.get("split", ""))
        elif event.type == "step_finished" and d["step"] == "score":
            self.dev = d["dev_score"]
        line = describe(event)
        if line:
            self.live.console.print(f"[{time.monotonic() - self.t0:7.1f}s] {line}", markup=False)
        if event.type in ("run_finished", "run_failed"):
            self.close()
        else:
            self.live.update(self._render())

    def close(self) -> None:
        if self.live.is_started:
            self.live.stop()


def make_progress() -> PlainProgress | LiveProgress:
    """The live view on a terminal, plain lines otherwise."""
    console = Console(stderr=True)
    if console.is_terminal:
        return LiveProgress(console)
    return PlainProgress()
