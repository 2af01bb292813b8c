"""One tracked sia run: what is logged from the run folder as steps finish, the resume state
(``trackers/NAME.json``), and the worker thread that logs in event order."""

from __future__ import annotations

import json
import queue
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from sia_core.machinery.astguard import guard_ast_parse
from sia_core.machinery.runstore import SEALED, atomic_write_json

from .base import (
    TrackedRun,
    TrackerBackend,
    flat_params,
    numbers,
    read_events,
    read_json,
    say,
    state_path,
)

#: files of a generation folder sent as artifacts (nothing else: never sealed/ or labels)
GEN_ARTIFACTS = ("target_agent.py", "diff.patch", "improvement.md", "decision.json")
#: lever -> the number logged as the ``lever`` metric
LEVER_CODES = {"harness": 0, "weights": 1, "both": 2, "stop": 3}
#: progress-event fields that are not curve values
_NOT_CURVES = {"step", "steps", "event", "checkpoint", "status", "items", "stats"}


class TrackerSession:
    """One tracked sia run: its backend, what has been logged (saved in the run folder), and
    the worker thread that does the logging, so a slow tracker never holds the loop up.
    ``install`` (e.g. ``pip install 'sia-trackers[mlflow]'``) is named when an import fails."""

    def __init__(
        self,
        name: str,
        factory: Callable[[], TrackerBackend],
        run: TrackedRun,
        *,
        install: str = "",
    ) -> None:
        self.name, self.factory, self.run, self.install = name, factory, run, install
        self.backend: TrackerBackend | None = None
        self.state: dict[str, Any] = {}
        self.failed = False
        self.queue: queue.Queue[tuple[str, Any]] = queue.Queue()
        guard_ast_parse()  # the backend's imports parse source while the loop does
        self.thread = threading.Thread(target=self._work, name=f"sia-tracker-{name}", daemon=True)
        self.thread.start()

    def put(self, kind: str, arg: Any = None) -> None:
        """Queue ``start``, ``sync`` (up to a seq), ``live`` (gen, progress) or ``finish``."""
        self.queue.put((kind, arg))

    def _work(self) -> None:
        """Open the tracked run, then log what is queued, in order, until ``finish``."""
        while True:
            kind, arg = self.queue.get()
            if self.failed:
                if kind == "finish":
                    return
                continue
            try:
                if kind == "start":
                    self.open()
                elif kind == "sync":
                    self.sync(arg)
                elif kind == "live":
                    self.live_train(*arg)
                elif kind == "finish":
                    self.sync()
                    assert self.backend is not None
                    self.backend.finish(arg)
                    return
            except Exception as exc:
                self.failed = True
                text = str(exc).splitlines()[0][:300] if str(exc) else ""
                if isinstance(exc, ImportError) and self.install:
                    text += f"; {self.install}"
                say(
                    f"tracker {self.name} failed ({type(exc).__name__}: {text}); "
                    "it stops logging this run, the run goes on"
                )
                if self.backend is not None:
                    try:
                        self.backend.finish("failed")
                    except Exception:
                        pass

    def open(self) -> None:
        path = state_path(self.root, self.name)
        old = read_json(path) if path.exists() else None
        backend = self.factory()
        previous = old.get("backend") if isinstance(old, dict) else None
        kept, continued = backend.start(self.run, previous)
        self.backend = backend
        fresh = {"seq": 0, "train": {"offset": {}, "total": 0, "live": {}, "live_keys": {}}}
        self.state = dict(old) if continued and isinstance(old, dict) else fresh
        self.state["backend"] = kept
        self.save()
        verb = "continues" if continued else "logs to"
        say(f"tracker {self.name} {verb} {kept.get('where', kept.get('id'))}")

    @property
    def root(self) -> Path:
        return self.run.run_dir

    @property
    def tracker(self) -> TrackerBackend:
        assert self.backend is not None
        return self.backend

    def save(self) -> None:
        atomic_write_json(state_path(self.root, self.name), self.state)

    # -- catching up with events.jsonl -------------------------------------------------------

    def sync(self, upto: int | None = None) -> None:
        """Log the written events after the last one logged (up to ``upto``: the worker lags,
        and a progress event queued before a later written event is logged before it)."""
        for e in read_events(self.root):
            seq = int(e.get("seq", 0))
            if seq <= self.state["seq"] or (upto is not None and seq > upto):
                continue
            self.handle(e)
            self.state["seq"] = int(e["seq"])
            self.save()

    def handle(self, e: dict[str, Any]) -> None:
        t, gen, data = e.get("type"), e.get("gen"), e.get("data") or {}
        if t in ("run_started", "run_resumed"):
            self.log_config()
        elif t == "step_finished" and gen is not None and data.get("step") != "test":
            step = str(data.get("step"))
            handler = getattr(self, f"on_{step}", None)
            if handler is not None:
                handler(int(gen), data)
            self.tracker.log_metrics(
                {f"time/{step}_s": float(data.get("seconds") or 0.0)}, step=int(gen), axis="gen"
            )
        elif t == "gen_finished" and gen is not None:
            self.on_gen_finished(int(gen))
        elif t == "run_stopped":
            self.tracker.set_tags({"sia.stop_reason": str(data.get("reason", ""))[:4000]})
        elif t == "run_finished":
            self.on_run_finished(data)
        elif t == "run_failed":
            self.tracker.set_tags({"sia.error": str(data.get("error", ""))[:4000]})

    def log_config(self) -> None:
        info = read_json(self.root / "run.json") or {}
        config = dict(info.get("config") or {})
        mutable = {k: config.pop(k) for k in list(config) if k == "max_gen" or k.startswith("max_")}
        self.tracker.log_params(flat_params(config))
        tags = {f"sia.{k}": json.dumps(v) for k, v in mutable.items()}
        tags.update(
            {
                "sia.run_id": self.run.run_id,
                "sia.run_dir": str(self.root),
                "sia.task": self.run.task,
                "sia.version": str(info.get("sia_core_version", "")),
                "sia.status": "running",
                "sia.stop_reason": "",  # a resumed run is no longer stopped or failed
                "sia.error": "",
            }
        )
        self.tracker.set_tags(tags)

    # -- per step ----------------------------------------------------------------------------

    def gen_dir(self, gen: int) -> Path:
        return self.root / f"gen_{gen}"

    def on_propose(self, gen: int, data: dict[str, Any]) -> None:
        d = read_json(self.gen_dir(gen) / "decision.json") or {}
        lever = str(d.get("lever") or data.get("lever") or "")
        tags = {f"gen_{gen}.lever": lever, f"gen_{gen}.source": str(d.get("source", ""))}
        if d.get("parent_gen") is not None:
            tags[f"gen_{gen}.parent_gen"] = str(d["parent_gen"])
        if d.get("rl_algorithm"):
            tags[f"gen_{gen}.rl_algorithm"] = str(d["rl_algorithm"])
        self.tracker.set_tags(tags)
        if lever in LEVER_CODES:
            self.tracker.log_metrics({"lever": LEVER_CODES[lever]}, step=gen, axis="gen")
        files = [self.gen_dir(gen) / f for f in GEN_ARTIFACTS]
        self.tracker.log_files([f for f in files if f.is_file()], f"gen_{gen}")

    def on_train(self, gen: int, data: dict[str, Any]) -> None:
        result = read_json(self.gen_dir(gen) / "train_result.json") or {}
        self.tracker.set_tags({f"gen_{gen}.train_status": str(result.get("status", "?"))})
        summary = {f"train_summary/{k}": v for k, v in numbers(result.get("metrics") or {})}
        if summary:
            self.tracker.log_metrics(summary, step=gen, axis="gen")
        log = Path(result.get("log") or self.gen_dir(gen) / "adapter" / "train_log.jsonl")
        lines = []
        if log.is_file() and SEALED not in log.parts:
            for raw in log.read_text(encoding="utf-8").splitlines():
                try:
                    lines.append(json.loads(raw))
                except ValueError:
                    continue
        train = self.state["train"]
        offset = self._offset(gen)
        live_last = int(train["live"].get(str(gen), 0))
        live_keys = set(train["live_keys"].get(str(gen), []))
        last = 0
        for line in lines:
            if not isinstance(line.get("step"), int):
                continue
            local = int(line["step"])
            last = max(last, local)
            values = {k: v for k, v in numbers(line) if k.split("/")[0] not in _NOT_CURVES}
            if local <= live_last:  # logged live already: only what the progress line lacked
                values = {k: v for k, v in values.items() if k not in live_keys}
            if values:
                self._log_curve(gen, offset + local, values, first=local > live_last)
        train["total"] = max(int(train["total"]), offset + max(last, live_last))
        train["done"] = sorted({*train.get("done", []), gen})

    def _offset(self, gen: int) -> int:
        """Training steps of earlier weight generations: gen's step 1 is logged at offset + 1."""
        offsets = self.state["train"]["offset"]
        if str(gen) not in offsets:
            offsets[str(gen)] = int(self.state["train"]["total"])
        return int(offsets[str(gen)])

    def _log_curve(
        self, gen: int, step: int, values: Mapping[str, float], *, first: bool = True
    ) -> None:
        metrics = {f"train/{k}": v for k, v in values.items()}
        if first:  # which generation a training step belongs to, once per step
            metrics["train/gen"] = float(gen)
        self.tracker.log_metrics(metrics, step=step, axis="train")

    def live_train(self, gen: int, data: Mapping[str, Any]) -> None:
        """A training step as the worker reports it (curves move while a long job runs)."""
        if not isinstance(data.get("step"), int) or data.get("event", "step") != "step":
            return
        train = self.state["train"]
        local = int(data["step"])
        if gen in train.get("done", []) or local <= int(train["live"].get(str(gen), 0)):
            return  # logged from the job's log already, or this step live already
        values = {k: v for k, v in numbers(dict(data)) if k.split("/")[0] not in _NOT_CURVES}
        self._log_curve(gen, self._offset(gen) + local, values)
        train["live"][str(gen)] = local
        keys = set(train["live_keys"].get(str(gen), [])) | set(values)
        train["live_keys"][str(gen)] = sorted(keys)
        self.save()

    def on_score(self, gen: int, data: dict[str, Any]) -> None:
        m = read_json(self.gen_dir(gen) / "metrics.json") or {}
        dev = m.get("dev") or {}
        out: dict[str, float] = {}
        if isinstance(dev.get("score"), int | float):
            out["dev_score"] = float(dev["score"])
        elif isinstance(data.get("dev_score"), int | float):
            out["dev_score"] = float(data["dev_score"])
        if dev.get("n_items"):
            out["dev_answered_share"] = float(dev.get("n_answered", 0)) / float(dev["n_items"])
        out.update({f"dev/{k}": v for k, v in numbers(dev.get("extra") or {})})
        for k in ("n_errors", "n_timeouts", "llm_calls", "prompt_tokens", "completion_tokens"):
            if isinstance(m.get(k), int | float):
                out[k] = float(m[k])
        if isinstance(m.get("seconds"), int | float):
            out["item_seconds"] = float(m["seconds"])
        self.tracker.log_metrics(out, step=gen, axis="gen")

    def on_gate(self, gen: int, data: dict[str, Any]) -> None:
        node = data.get("node") or {}
        devs = self.state.setdefault("dev", {})
        if isinstance(node.get("dev_score"), int | float):
            devs[str(gen)] = float(node["dev_score"])
        incumbent = data.get("incumbent")
        out = {"accepted": float(bool(data.get("accepted")))}
        if isinstance(incumbent, int):
            out["incumbent_gen"] = float(incumbent)
            if str(incumbent) in devs:
                out["best_dev_score"] = devs[str(incumbent)]
        self.tracker.log_metrics(out, step=gen, axis="gen")

    def on_gen_finished(self, gen: int) -> None:
        seconds = sum(
            float((e.get("data") or {}).get("seconds") or 0.0)
            for e in read_events(self.root)
            if e.get("type") == "step_finished"
            and e.get("gen") == gen
            and (e.get("data") or {}).get("step") != "test"
        )
        out = {"time/gen_s": seconds}
        cost = read_json(self.gen_dir(gen) / "cost.json") or {}
        skip = ("gen", "by_role", "by_step")
        out.update({f"cost/{k}": v for k, v in numbers(cost) if k.split("/")[0] not in skip})
        self.tracker.log_metrics(out, step=gen, axis="gen")

    def on_run_finished(self, data: dict[str, Any]) -> None:
        """The run's last step is done: now the sealed test scores and the totals go out."""
        logged = set(self.state.setdefault("test_logged", []))
        last_gen = 0
        for path in sorted(self.root.glob("gen_*")):
            try:
                gen = int(path.name[4:])
            except ValueError:
                continue
            last_gen = max(last_gen, gen)
            test = read_json(path / SEALED / "metrics_test.json")
            if gen in logged or not isinstance(test, dict):
                continue
            if isinstance(test.get("score"), int | float):
                self.tracker.log_metrics({"test_score": float(test["score"])}, step=gen, axis="gen")
                logged.add(gen)
        self.state["test_logged"] = sorted(logged)
        info = read_json(self.root / "run.json") or {}
        cost = info.get("cost") or {}
        totals = {f"run/{k}": v for k, v in numbers(cost) if "/" not in k}
        if totals:
            self.tracker.log_metrics(totals, step=last_gen, axis="gen")
        tags = {"sia.status": str(data.get("status", "finished"))}
        if data.get("incumbent") is not None:
            tags["sia.incumbent_gen"] = str(data["incumbent"])
        self.tracker.set_tags(tags)
        context = self.root / "context.md"
        if context.is_file():
            self.tracker.log_files([context], "")
