"""The self-improvement loop.

Each generation ``n`` is made of steps, each writing only inside ``gen_n/`` and then appending a
``step_finished`` event::

    propose   gen 1: Meta-Agent -> target_agent.py; gen n: Feedback-Agent on the incumbent
    train     (weights / both) LoRA RL through the frozen scaffold -> adapter
    run       the scaffold on dev + sealed test in the sandbox, through the model gateway
    score     dev -> metrics.json; test -> sealed/metrics_test.json (never read by a decision)
    gate      the generation becomes the incumbent if it beats the incumbent's dev score

A killed run resumes at the first unfinished step; finished steps are never redone.
"""

from __future__ import annotations

import ast
import difflib
import fcntl
import hashlib
import json
import math
import os
import re
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs

from . import __version__, canary
from .backend import AgentOutcome, Backend, BackendOptions, FeedbackRequest, MetaRequest
from .errors import SiaError
from .gateway import Budget, Gateway
from .ledger import (
    FREE_BACKENDS,
    SPENDING_STEPS,
    Ledger,
    Pricer,
    cap_reached,
    caps_of,
    describe_cap,
    estimate,
    read_entries,
    rebuild_entries,
    run_cost,
    step_entries,
    step_seconds,
    totals,
    write_gen_cost,
)
from .plugins import SiaPluginManager, resolve
from .policy import (
    LeverContext,
    choose_algorithm,
    reward_stats,
    validate_lever,
    weights_blockers,
)
from .records import (
    Decision,
    Event,
    GenerationNode,
    Item,
    ItemResult,
    Metrics,
    ScoreResult,
    TrainJob,
    TrainResult,
    from_dict,
    to_dict,
)
from .runner import RunSpec, run_items, run_program, scaffold_kind
from .runstore import SEALED, DiskFullError, RunStore
from .sandbox import Limits, Sandbox
from .taskdir import Task, fingerprint_changes, load_task
from .training import DEFAULT_TRAIN_SETTINGS

STEPS = ("propose", "train", "run", "score", "gate")
#: hashes of the task's files when the run started, and before each generation's run (in the run
#: folder's private/: a hash of a small private file could be inverted by whoever reads it)
FINGERPRINT = "private/task_fingerprint.json"


def gen_fingerprint(gen: int) -> str:
    return f"private/task_fingerprint_gen_{gen}.json"


@attrs.frozen(kw_only=True)
class RunConfig:
    """Everything that defines a run; stored in ``run.json`` and reused by ``sia resume``."""

    task: str
    task_dir: str
    max_gen: int = 3
    backend: str = "scripted"
    backend_settings: dict[str, Any] = attrs.field(factory=dict)
    meta_model: str | None = None
    task_model: str | None = None
    lever: str = "auto"
    rl_algorithm: str = "auto"
    sandbox: str = "process"
    seed: int = 0
    gate_margin: float = 0.0
    parallel: int | None = None
    item_timeout_s: float | None = None
    max_calls_per_gen: int | None = None
    max_tokens_per_gen: int | None = None
    max_run_tokens: int | None = None  # --max-tokens: the run's LLM tokens
    max_usd: float | None = None  # --max-usd: the run's cost
    max_train_seconds: float | None = None  # --max-train-seconds: training device-seconds
    test_eval: str = "final"  # every | final | none
    executor: str = "auto"
    train_settings: dict[str, Any] = attrs.field(factory=dict)

    def identity(self) -> dict[str, Any]:
        """The fields a re-run of the same command must match (``max_gen`` and caps may change)."""
        d = to_dict(self)
        for name in ("max_gen", *CAP_FIELDS):
            d.pop(name)
        return d


#: run-level caps: a resume may raise them (see ledger.CAPS)
CAP_FIELDS = ("max_run_tokens", "max_usd", "max_train_seconds")


class CapReached(Exception):
    """A run cap was reached before a spending step: the run stops cleanly there."""

    def __init__(self, gen: int, step: str, cap: dict[str, Any]) -> None:
        super().__init__(cap["cap"])
        self.gen, self.step, self.cap = gen, step, cap


@attrs.frozen(kw_only=True)
class GenRow:
    """One line of the end-of-run summary (``test`` is shown, never used)."""

    gen: int
    parent: int | None
    lever: str
    rl_algorithm: str | None
    dev: float | None
    test: float | None
    incumbent: bool
    status: str
    seconds: float
    tokens: int = 0
    cost_usd: float = 0.0
    train_seconds: float = 0.0


class RunLock:
    """An exclusive lock on a run folder so two processes never drive the same run."""

    def __init__(self, root: Path) -> None:
        self.path = root / ".lock"
        self.fd: int | None = None

    def __enter__(self) -> RunLock:
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = os.read(self.fd, 32).decode(errors="replace").strip() or "?"
            os.close(self.fd)
            self.fd = None
            raise SiaError(
                f"run folder {self.path.parent} is in use by another sia process (pid {pid})"
            ) from None
        os.ftruncate(self.fd, 0)
        os.write(self.fd, str(os.getpid()).encode())
        return self

    def __exit__(self, *exc: object) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def unified_diff(old: str, new: str, old_name: str, new_name: str) -> str:
    return "".join(
        difflib.unified_diff(
            old.splitlines(keepends=True), new.splitlines(keepends=True), old_name, new_name
        )
    )


class Loop:
    """Drives one run from its current state to ``max_gen``, a stop decision, or a budget."""

    def __init__(
        self,
        config: RunConfig,
        store: RunStore,
        pm: SiaPluginManager,
        *,
        on_item: Callable[[ItemResult], None] | None = None,
        task: Task | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.pm = pm
        self.on_item = on_item
        self.task: Task = task or load_task(config.task_dir)
        self.backend: Backend | None = None
        self.sandbox: Sandbox | None = None
        self._canary_set: canary.CanarySet | None = None
        self.gateway: Gateway | None = None
        self.ledger: Ledger | None = None
        self.pricer: Pricer | None = None  # None: the models are free
        self.estimate: dict[str, Any] | None = None
        self._resume_seq = 0

    # -- events -------------------------------------------------------------------------------

    def emit(self, type: str, gen: int | None = None, **data: Any) -> Event:
        event = self.store.append(type, gen=gen, **data)
        self.pm.notify(event)
        return event

    def _progress(self, type: str, gen: int | None, **data: Any) -> None:
        """An event for observers only (not written to events.jsonl)."""
        self.pm.notify(Event(type=type, run_id=self.store.run_id, gen=gen, data=to_dict(data)))

    # -- run state derived from events --------------------------------------------------------

    def nodes(self) -> list[GenerationNode]:
        """The archive: one node per gated generation, incumbent flag on the current best."""
        nodes = [
            from_dict(GenerationNode, e.data["node"])
            for e in self.store.events
            if e.type == "step_finished" and e.data.get("step") == "gate"
        ]
        inc = self.incumbent_gen()
        return [attrs.evolve(n, incumbent=(n.gen == inc)) for n in nodes]

    def incumbent_gen(self) -> int | None:
        gates = [
            e
            for e in self.store.events
            if e.type == "step_finished" and e.data.get("step") == "gate"
        ]
        return gates[-1].data["incumbent"] if gates else None

    def _done(self, gen: int, step: str) -> bool:
        return (gen, step) in self.store.finished_steps()

    # -- the loop -----------------------------------------------------------------------------

    def run(self) -> list[GenRow]:
        with RunLock(self.store.root):
            self.store.remove_stale_temps()
            return self._run_locked()

    def _run_locked(self) -> list[GenRow]:
        cfg = self.config
        resumed = bool(self.store.events)
        self._open_ledger()
        self._write_run_json("running")
        # observers only (not in events.jsonl): where the run folder is, for reports and trackers
        self._progress("run_opened", None, run_dir=str(self.store.root))
        stop_reason = ""
        stopped_by_cap: dict[str, Any] | None = None
        try:
            self._open()
            assert self.backend is not None
            task_model = self.backend.task_model()
            self.emit(
                "run_resumed" if resumed else "run_started",
                task=self.task.name,
                backend=cfg.backend,
                task_model=getattr(task_model, "name", "?"),
                trainable=bool(getattr(task_model, "trainable", False)),
                sandbox=cfg.sandbox,
                max_gen=cfg.max_gen,
            )
            self._estimate()
            if not self.store.exists(FINGERPRINT):
                self.store.write_json(FINGERPRINT, self.task.fingerprint())
            self._canaries()
            for gen in range(1, cfg.max_gen + 1):
                if any(e.type == "gen_finished" and e.gen == gen for e in self.store.events):
                    continue
                # gated but killed before gen_finished: finish it now (caps: see _step)
                if not self._done(gen, "gate"):
                    if self._final_stop() is not None:
                        break
                    if not any(e.type == "gen_started" and e.gen == gen for e in self.store.events):
                        self.emit("gen_started", gen)
                    decision = self._step(gen, "propose", self._propose)
                    if decision.lever == "stop":
                        stop_reason = f"generation {gen}: the Feedback-Agent decided to stop"
                        self.emit("run_stopped", gen, reason=stop_reason)
                        break
                    if decision.lever in ("weights", "both"):
                        self._step(gen, "train", self._train)
                    self._step(gen, "run", self._run_scaffold)
                    self._step(gen, "score", self._score)
                    self._step(gen, "gate", self._gate)
                self.emit("gen_finished", gen, incumbent=self.incumbent_gen())
            for gen in self.final_test_gens():
                self._step(gen, "test", self._final_test)
        except CapReached as cap:  # before a spending step: the run stops cleanly here
            stop_reason = describe_cap(cap.cap, self.store.run_id, still=self._still_capped())
            stopped_by_cap = cap.cap
            self.emit("run_stopped", cap.gen, reason=stop_reason, step=cap.step, cap=cap.cap)
        except BaseException as exc:
            try:
                self._write_run_json("failed", error=f"{type(exc).__name__}: {exc}")
                self.emit("run_failed", error=f"{type(exc).__name__}: {exc}")
            except (OSError, SiaError):
                pass  # e.g. the disk is full: the first error is the one to report
            if isinstance(exc, DiskFullError):
                raise SiaError(
                    f"{exc}; every finished step is kept: free some space, then "
                    f"`sia resume {self.store.run_id}`"
                ) from exc
            raise
        finally:
            self._close()
        if not stop_reason:
            stopped = self._final_stop()
            stop_reason = stopped.data["reason"] if stopped else ""
        status = "stopped" if stop_reason else "finished"
        extra: dict[str, Any] = {"stopped_by_cap": stopped_by_cap} if stopped_by_cap else {}
        self._write_run_json(status, stop_reason=stop_reason, **extra)
        self.emit("run_finished", status=status, incumbent=self.incumbent_gen())
        return self.summary()

    def _step(self, gen: int, step: str, fn: Callable[[int], Any]) -> Any:
        if self._done(gen, step):
            return self._load_step(gen, step)
        if step in SPENDING_STEPS:
            self._check_caps(gen, step)
        self._progress("step_started", gen, step=step)
        t0 = time.monotonic()
        result, data = fn(gen)
        seconds = round(time.monotonic() - t0, 3)
        if step in SPENDING_STEPS:
            data = {**data, "cost": self._account(gen, step, data, seconds)}
        self.emit("step_finished", gen, step=step, seconds=seconds, **data)
        if self.ledger is not None:
            write_gen_cost(self.store, self.ledger, gen)  # now with this step's wall time
        return result

    # -- cost ledger and caps -------------------------------------------------------------------

    def _final_stop(self) -> Event | None:
        """The last ``run_stopped`` that no resume undoes (a stop decision, not a cap)."""
        for e in reversed(self.store.events):
            if e.type == "run_stopped" and not e.data.get("cap"):
                return e
        return None

    def _still_capped(self) -> bool:
        """Whether this resume stopped at a cap again before finishing any step."""
        before, now = self.store.events[: self._resume_seq], self.store.events[self._resume_seq :]
        last = [e for e in before if e.type in ("run_stopped", "step_finished")][-1:]
        capped = bool(last) and last[0].type == "run_stopped" and bool(last[0].data.get("cap"))
        return capped and not any(e.type == "step_finished" for e in now)

    def _open_ledger(self) -> None:
        """Rebuild the ledger from finished steps (a resumed run counts nothing twice)."""
        cfg = self.config
        pricer = None if cfg.backend in FREE_BACKENDS else Pricer()
        self.ledger = Ledger.open(
            self.store,
            lambda: rebuild_entries(self.store, pricer=pricer, meta_model=cfg.meta_model),
        )
        self._resume_seq = len(self.store.events)
        for gen, gdir in self.store.gen_dirs():
            if (gdir / "decision.json").exists():
                write_gen_cost(self.store, self.ledger, gen)

    def _account(self, gen: int, step: str, data: dict[str, Any], seconds: float) -> dict[str, Any]:
        """Append a finished step's ledger lines; the step's totals."""
        assert self.ledger is not None
        meta_model = self.config.meta_model or getattr(self.backend, "meta_model", None)
        entries = step_entries(
            self.store, gen, step, data, seconds, pricer=self.pricer, meta_model=meta_model
        )
        self.ledger.add(entries)
        write_gen_cost(self.store, self.ledger, gen)
        return totals(entries)

    def _check_caps(self, gen: int, step: str) -> None:
        if self.ledger is None:
            return
        cap = cap_reached(self.config, self.ledger.totals())
        if cap is not None:
            raise CapReached(gen, step, cap)

    def _estimate(self) -> None:
        """A rough cost estimate for observers and run.json, when a model has a price."""
        assert self.ledger is not None
        meta_model = self.config.meta_model or getattr(self.backend, "meta_model", None)
        self.estimate = estimate(
            self.task,
            self.config,
            self.ledger,
            pricer=self.pricer,
            task_model=self.gateway_model_name(),
            meta_model=meta_model,
            finished_gens=[n.gen for n in self.nodes()],
        )
        if self.estimate is not None:
            self._progress("cost_estimate", None, **self.estimate)

    def _load_step(self, gen: int, step: str) -> Any:
        if step == "propose":
            return from_dict(Decision, self.store.read_json(f"gen_{gen}/decision.json"))
        return None

    # -- resources ----------------------------------------------------------------------------

    def _open(self) -> None:
        cfg = self.config
        spec = self.pm.backends().get(cfg.backend)
        options = BackendOptions(
            meta_model=cfg.meta_model,
            task_model=cfg.task_model,
            seed=cfg.seed,
            run_dir=str(self.store.root),
            settings=dict(cfg.backend_settings),
        )
        self.backend = resolve(spec.factory)(options)
        self.sandbox = resolve(self.pm.sandboxes().get(cfg.sandbox).factory)()
        task_model = self.backend.task_model()
        start = getattr(task_model, "start", None)
        if callable(start):
            start()  # a model server that cannot start fails the run now, not mid-generation
        free = cfg.backend in FREE_BACKENDS or bool(getattr(task_model, "free", False))
        self.pricer = None if free else Pricer()
        if self.pricer is not None:
            self.pricer.price(getattr(task_model, "name", None))  # a bad price file fails now
        self.gateway = Gateway(task_model, pricer=self.pricer)
        self.gateway.start()

    def _close(self) -> None:
        if self.gateway is not None:
            self.gateway.stop()
        if self.backend is not None:
            try:
                self.backend.close()
            except Exception:  # closing must not hide the run's own outcome
                pass

    # -- steps --------------------------------------------------------------------------------

    def _propose(self, gen: int) -> tuple[Decision, dict[str, Any]]:
        assert self.backend is not None
        gdir = self.store.gen_dir(gen)
        gdir.mkdir(parents=True, exist_ok=True)
        reference = self.task.reference_scaffold.read_text(encoding="utf-8")
        restart: list[str] = []
        if gen > 1 and self.incumbent_gen() is None:
            restart.append(
                "no incumbent: every earlier generation was voided, so this one starts again "
                "from the task's reference scaffold (Meta-Agent)"
            )
        if gen == 1 or restart:
            parent_gen, parent_text, parent_name = None, reference, "reference_target_agent.py"
            outcome = self._call_agent(
                "meta",
                lambda: self.backend.meta(  # type: ignore[union-attr]
                    MetaRequest(
                        gen=gen,
                        gen_dir=gdir,
                        task_name=self.task.name,
                        task_md=self.task.task_md,
                        reference_scaffold=reference,
                        sample_task_descriptions=self.task.sample_task_descriptions,
                        public_dir=self.task.public_dir,
                        try_scaffold=lambda code, n: self._try_scaffold(gen, code, n),
                    )
                ),
                fallback_text=reference,
                parent_gen=None,
                fallback_why="the reference scaffold is used unchanged",
            )
        else:
            parent_gen = self.incumbent_gen()
            assert parent_gen is not None
            pdir = self.store.gen_dir(parent_gen)
            parent_text = (pdir / "target_agent.py").read_text(encoding="utf-8")
            parent_name = f"gen_{parent_gen}/target_agent.py"
            lever_ctx = self._lever_context(gen)
            request = FeedbackRequest(
                next_gen=gen,
                next_gen_dir=gdir,
                parent_gen=parent_gen,
                parent_gen_dir=pdir,
                parent_scaffold=parent_text,
                dev_metrics=self.store.read_json(pdir / "metrics.json"),
                context_md=self._read_text("context.md"),
                task_md=self.task.task_md,
                task_name=self.task.name,
                history=tuple(self.history()),
                trainable_task_model=lever_ctx.trainable,
                weights_blockers=tuple(weights_blockers(lever_ctx)),
                lever_override=None if self.config.lever == "auto" else self.config.lever,
                seed=self.config.seed,
                direction=self.task.config.direction,
                run_dir=self.store.root,
                public_dir=self.task.public_dir,
                try_scaffold=lambda code, n: self._try_scaffold(gen, code, n, parent_gen),
            )
            outcome = self._call_agent(
                "feedback",
                lambda: self.backend.feedback(request),  # type: ignore[union-attr]
                fallback_text=parent_text,
                parent_gen=parent_gen,
                fallback_why=f"generation {gen} reuses the parent's scaffold (gen {parent_gen})",
            )

        decision = self._validate(outcome.decision, gen, parent_gen)
        notes = [*restart, *decision.notes]
        text = outcome.scaffold if outcome.scaffold is not None else parent_text
        if decision.lever == "weights" and text != parent_text:
            notes.append("the scaffold stays frozen for a weights generation; its edit was dropped")
            text = parent_text
        problem = "is empty" if not text.strip() else ""
        try:
            ast.parse(text)
        except SyntaxError as exc:
            problem = problem or f"has a syntax error (line {exc.lineno}: {exc.msg})"
        except ValueError as exc:  # e.g. null bytes
            problem = f"cannot be parsed ({exc})"
        if problem:
            (gdir / "rejected_target_agent.py").write_text(text, encoding="utf-8")
            notes.append(
                f"the proposed scaffold {problem}; kept the parent's "
                "(saved as rejected_target_agent.py)"
            )
            text = parent_text
        if text == parent_text and decision.lever == "harness" and gen > 1:
            notes.append("the scaffold is unchanged from the parent")
        decision = attrs.evolve(decision, notes=tuple(notes))
        self.store.write_text(gdir / "target_agent.py", text)
        self.store.write_text(
            gdir / "diff.patch",
            unified_diff(parent_text, text, f"a/{parent_name}", f"b/gen_{gen}/target_agent.py"),
        )
        self.store.write_text(gdir / "improvement.md", self._improvement_md(outcome, decision))
        self.store.write_json(gdir / "agent_transcript.json", list(outcome.transcript))
        self.store.write_json(gdir / "decision.json", decision)
        data: dict[str, Any] = {
            "lever": decision.lever,
            "parent_gen": parent_gen,
            "rl_algorithm": decision.rl_algorithm,
            "scaffold_sha256": sha256_text(text),
        }
        if outcome.usage:
            data["agent_usage"] = dict(outcome.usage)  # the role's own calls, for the ledger
        return decision, data

    def _try_scaffold(
        self, gen: int, code: str, n_items: int, model_gen: int | None = None
    ) -> dict[str, Any]:
        """Run a candidate scaffold on the first ``n_items`` public train items (for the agents).

        Train labels are public, so the result shows them beside each answer. The calls go
        through the run's gateway and sandbox, to the task model ``model_gen`` ran on (the
        parent's weights); their usage is returned, not booked to a split.
        """
        assert self.gateway is not None and self.sandbox is not None
        if model_gen is not None:
            self._use_task_model_of(model_gen)
        train = self.task.items("train")[: max(1, n_items)]
        if not train:
            return {"error": "this task has no train items to test on; only syntax was checked"}
        trials = self.store.gen_dir(gen) / "trials"
        k = len(list(trials.glob("trial_*"))) + 1 if trials.exists() else 1
        tdir = trials / f"trial_{k}"
        (tdir / "work").mkdir(parents=True, exist_ok=True)
        scaffold = tdir / "target_agent.py"
        scaffold.write_text(code, encoding="utf-8")
        if scaffold_kind(scaffold) != "per_item":
            return {"error": "a program-style scaffold (no solve) cannot be tried on a few items"}
        self.gateway.begin(gen, Budget(max_calls=self.config.max_calls_per_gen))
        spec = RunSpec(
            scaffold_path=scaffold,
            work_dir=tdir / "work",
            public_dir=self.task.public_dir,
            train_examples=tuple(self.task.train_examples()),
            model_name=self.gateway_model_name(),
            parallel=min(len(train), self.config.parallel or self.task.config.parallel),
            item_timeout_s=self.config.item_timeout_s or self.task.config.item_timeout_s,
            limits=Limits(),
        )
        results = run_items(spec, train, sandbox=self.sandbox, gateway=self.gateway)
        labels = {e["id"]: e["label"] for e in self.task.train_examples()}
        inputs = {i.id: i.input for i in train}
        items = []
        for r in results:
            score = None
            if self.task.config.kind == "per_item":
                score = self.task.score_answer("train", r.item_id, r.answer)
            items.append(
                {
                    "id": r.item_id,
                    "input": inputs.get(r.item_id),
                    "answer": r.answer,
                    "label": labels.get(r.item_id),
                    "score": score,
                    "status": r.status,
                    "error": (r.error or "")[:1500],
                    "seconds": r.seconds,
                    "trajectory": json.dumps(to_dict(r.trajectory), default=str)[:2000],
                }
            )
        scores = [i["score"] for i in items if i["score"] is not None]
        shutil.rmtree(tdir / "work", ignore_errors=True)
        return {
            "score": sum(scores) / len(train) if scores else None,
            "n_items": len(train),
            "items": items,
            "usage": self.gateway.usage(),
        }

    def _call_agent(
        self,
        role: str,
        call: Callable[[], AgentOutcome],
        *,
        fallback_text: str,
        parent_gen: int | None,
        fallback_why: str,
    ) -> AgentOutcome:
        try:
            outcome = call()
            if not isinstance(outcome, AgentOutcome):
                raise TypeError(f"expected AgentOutcome, got {type(outcome).__name__}")
            return outcome
        except Exception as exc:
            why = f"the {role} agent failed ({type(exc).__name__}: {exc}); {fallback_why}"
            return AgentOutcome(
                decision=Decision(
                    lever="harness", source="core", rationale=why, parent_gen=parent_gen
                ),
                improvement_md=f"{why}.\n",
                scaffold=fallback_text,
                transcript=({"role": role, "error": f"{type(exc).__name__}: {exc}"},),
            )

    def _validate(self, decision: Decision, gen: int, parent_gen: int | None) -> Decision:
        assert self.backend is not None
        decision = attrs.evolve(decision, parent_gen=parent_gen)
        if parent_gen is None:  # the Meta-Agent's proposal (gen 1, or a restart)
            return decision
        algorithms = self.pm.rl_algorithms()
        decision = validate_lever(decision, self._lever_context(gen))
        if decision.lever not in ("weights", "both"):
            return attrs.evolve(decision, rl_algorithm=None)
        assert parent_gen is not None
        pdir = self.store.gen_dir(parent_gen)
        metrics = from_dict(Metrics, self.store.read_json(pdir / "metrics.json"))
        stats = reward_stats(metrics.dev.per_item)
        requested = self.config.rl_algorithm
        if requested == "auto" and decision.rl_algorithm and decision.rl_algorithm in algorithms:
            requested = decision.rl_algorithm  # the Feedback-Agent named one
        name, fits, reason = choose_algorithm(
            stats, algorithms, requested, self.history(), self.task.config.direction == "maximize"
        )
        return attrs.evolve(
            decision,
            rl_algorithm=name,
            algorithm_fits=fits,
            reward_stats=stats,
            notes=(*decision.notes, f"RL objective {name}: {reason}"),
        )

    def _lever_context(self, gen: int) -> LeverContext:
        assert self.backend is not None
        task_model = self.backend.task_model()
        return LeverContext(
            gen=gen,
            override=self.config.lever,
            trainable=bool(getattr(task_model, "trainable", False)),
            task_model_name=getattr(task_model, "name", "?"),
            n_algorithms=len(self.pm.rl_algorithms()),
            n_executors=len(self.pm.executors()),
        )

    def _train(self, gen: int) -> tuple[None, dict[str, Any]]:
        """Weight update through the frozen scaffold; a failed job leaves the parent's adapter."""
        assert self.backend is not None
        gdir = self.store.gen_dir(gen)
        decision = from_dict(Decision, self.store.read_json(gdir / "decision.json"))
        algorithm = self.pm.rl_algorithms().get(str(decision.rl_algorithm))
        executor = self._executor()
        task_model = self.backend.task_model()
        parent_adapter = self.adapter_for(decision.parent_gen)
        # an earlier attempt's folder is kept: the worker resumes from its checkpoint when the
        # job is the same, and clears anything else itself
        out = gdir / "adapter"
        job = TrainJob(
            job_id=f"run_{self.store.run_id}-gen_{gen}",
            algorithm=algorithm.name,
            trainer=algorithm.trainer,
            task_dir=str(self.task.root),
            scaffold=str(gdir / "target_agent.py"),
            base_model=str(getattr(task_model, "base_model", "")),
            out_dir=str(out),
            init_adapter=str(self.store.root / parent_adapter) if parent_adapter else None,
            seed=self.config.seed * 1000 + gen,
            settings={**DEFAULT_TRAIN_SETTINGS, **self.config.train_settings},
            sandbox=self.config.sandbox,
        )
        self.store.write_json(gdir / "train_job.json", job)
        try:
            result = executor.run(job, lambda d: self._progress("train_progress", gen, **d))
        except Exception as exc:  # an executor bug must not kill the run either
            result = TrainResult(status="failed", error=f"{type(exc).__name__}: {exc}")
        if result.status == "ok" and not (result.adapter and Path(result.adapter).exists()):
            result = attrs.evolve(
                result,
                status="failed",
                error=f"the executor reported no adapter at {result.adapter}",
            )
        self.store.write_json(gdir / "train_result.json", result)
        # the adapter this generation will serve (adapter_for(gen) only knows it once the step
        # is recorded as finished): the new one, or the parent's after a failed job
        served = parent_adapter
        if result.status == "ok" and result.adapter:
            served = str(Path(result.adapter).resolve().relative_to(self.store.root.resolve()))
        return None, {
            "status": result.status,
            "algorithm": algorithm.name,
            "executor": executor.name,
            "adapter": served,
            "error": result.error,
        }

    def _executor(self) -> Any:
        executors = self.pm.executors()
        names = [self.config.executor] if self.config.executor != "auto" else executors.names()
        reasons = []
        for name in names:
            executor = resolve(executors.get(name).factory)()
            ok, why = executor.available()
            if ok:
                return executor
            reasons.append(f"{name}: {why}")
        raise SiaError("no training executor is available: " + "; ".join(reasons))

    def adapter_for(self, gen: int | None) -> str | None:
        """The adapter (relative to the run folder) generation ``gen``'s task model serves."""
        if gen is None:
            return None
        gdir = self.store.gen_dir(gen)
        result_path = gdir / "train_result.json"
        if self._done(gen, "train") and result_path.exists():
            result = self.store.read_json(result_path)
            if result["status"] == "ok" and result.get("adapter"):
                return str(Path(result["adapter"]).resolve().relative_to(self.store.root.resolve()))
        decision_path = gdir / "decision.json"
        if not decision_path.exists():
            return None
        return self.adapter_for(self.store.read_json(decision_path).get("parent_gen"))

    def _use_task_model_of(self, gen: int) -> None:
        """Point the gateway at the task model generation ``gen`` runs on (base + adapter)."""
        assert self.backend is not None and self.gateway is not None
        base: Any = self.backend.task_model()
        adapter = self.adapter_for(gen)
        current = getattr(self.gateway.task_model, "adapter", None)
        if adapter is None:
            if current is not None:
                self.gateway.set_task_model(base)
            return
        path = str(self.store.root / adapter)
        if current != path:
            self.gateway.set_task_model(base.with_adapter(path))

    def _execute(
        self, gen: int, items: list[Item], work: Path
    ) -> tuple[list[ItemResult], Any, list[Any], dict[str, Any]]:
        """Run generation ``gen``'s scaffold on ``items``: results, program result, calls, usage."""
        assert self.gateway is not None and self.sandbox is not None
        cfg, task = self.config, self.task
        if work.exists():
            shutil.rmtree(work)  # a half-finished earlier attempt
        work.mkdir(parents=True)
        scaffold = self.store.gen_dir(gen) / "target_agent.py"
        self._use_task_model_of(gen)
        self.gateway.begin(
            gen, Budget(max_calls=cfg.max_calls_per_gen, max_tokens=cfg.max_tokens_per_gen)
        )
        spec = RunSpec(
            scaffold_path=scaffold,
            work_dir=work,
            public_dir=task.public_dir,
            train_examples=tuple(task.train_examples()),
            model_name=self.gateway_model_name(),
            parallel=cfg.parallel or task.config.parallel,
            item_timeout_s=cfg.item_timeout_s or task.config.item_timeout_s,
            limits=Limits(),
        )
        total, finished = len(items), 0

        def on_item(result: ItemResult) -> None:
            nonlocal finished
            finished += 1
            self._progress(
                "item_finished",
                gen,
                item_id=result.item_id,
                split=result.split,
                status=result.status,
                done=finished,
                total=total,
            )
            if self.on_item:
                self.on_item(result)

        # a syntax error never gets here: the propose step keeps the parent's scaffold instead
        program = None
        results: list[ItemResult] = []
        if scaffold_kind(scaffold) == "per_item":
            results = run_items(
                spec, items, sandbox=self.sandbox, gateway=self.gateway, on_item=on_item
            )
        else:
            program = run_program(spec, sandbox=self.sandbox, gateway=self.gateway)
            # nothing of the scaffold runs now: take out what the output contract names, as
            # regular files, into a folder the scaffold never saw; only that is ever scored
            outputs = work.parent / "outputs"
            if outputs.exists():
                shutil.rmtree(outputs)
            program = attrs.evolve(program, outputs=self.task.harvest_outputs(work, outputs))
        return results, program, self.gateway.calls(), self.gateway.usage()

    def _canaries(self) -> canary.CanarySet | None:
        """This run's canary items (drawn once, when the run starts), or None."""
        spec = self.task.config.canary
        if spec is None or self.task.config.kind != "per_item":
            return None
        if self._canary_set is None:
            if self.store.exists(canary.CANARY_FILE):
                self._canary_set = canary.from_json(self.store.read_json(canary.CANARY_FILE))
            else:
                sources = self.task.items(spec.inputs)
                if not sources:
                    raise SiaError(
                        f"task {self.task.name}: [canary] inputs = {spec.inputs!r}, but that "
                        "split has no items; name a split with items"
                    )
                taken = {i.id for split in self.task.splits for i in self.task.items(split)}
                self._canary_set = canary.draw(spec, self.task.items("dev"), sources, taken)
                self.store.write_json(canary.CANARY_FILE, canary.to_json(self._canary_set))
        return self._canary_set

    def _run_scaffold(self, gen: int) -> tuple[None, dict[str, Any]]:
        gdir = self.store.gen_dir(gen)
        every = self.config.test_eval == "every"
        canaries = self._canaries()
        dev_items = self.task.items("dev")
        if canaries is not None:  # shuffled in: an id shaped like the others, split "dev"
            dev_items = canaries.merge(dev_items)
        items = dev_items + (self.task.items("test") if every else [])
        self.store.write_json(gen_fingerprint(gen), self.task.fingerprint())
        results, program, calls, usage = self._execute(gen, items, gdir / "work")
        self._check_task_model(gen, calls)
        if canaries is not None:
            # their results and calls go where no agent reads: a per-item record would let a
            # Feedback-Agent learn the drawn labels from its hits
            ids = canaries.ids()
            self.store.write_json(
                gdir / canary.CANARY_EXECUTION,
                {
                    "gen": gen,
                    "items": [r for r in results if r.item_id in ids],
                    "answers": {r.item_id: r.answer for r in results if r.item_id in ids},
                    "calls": [c for c in calls if c.item_id in ids],
                },
            )
            results = [r for r in results if r.item_id not in ids]
            calls = [c for c in calls if c.item_id not in ids]
        dev = [r for r in results if r.split == "dev"]
        test = [r for r in results if r.split == "test"]
        test_ids = {r.item_id for r in test}
        self._write_execution(
            gdir / "agent_execution.json",
            gen,
            dev,
            [c for c in calls if c.item_id not in test_ids],
            usage,
            program,
        )
        if every and program is None:
            self._write_execution(
                gdir / SEALED / "agent_execution_test.json",
                gen,
                test,
                [c for c in calls if c.item_id in test_ids],
                usage,
                None,
            )
        return None, {
            "kind": "per_item" if program is None else "program",
            "items": len(results),
            "errors": sum(r.status == "error" for r in results),
            "timeouts": sum(r.status == "timeout" for r in results),
            "llm_calls": usage.get("calls", 0),
        }

    def _check_task_model(self, gen: int, calls: list[Any]) -> None:
        """Stop the run (this step unfinished) when every task-model call failed upstream.

        Unreachable, timing out, 5xx or rate-limited on every call is a broken model server, not
        a bad scaffold: scoring it would spend a generation on zeros.
        """
        upstream = re.compile(r"upstream error (?:429|5\d\d)\b")
        if calls and all(c.status == "error" and upstream.search(c.error or "") for c in calls):
            raise SiaError(
                f"generation {gen}: all {len(calls)} task-model calls failed ({calls[0].error}); "
                f"fix the task model's server, then `sia resume {self.store.run_id}`"
            )

    def _final_test(self, gen: int) -> tuple[None, dict[str, Any]]:
        """Score a generation on the sealed test split once, after the loop (report only)."""
        gdir = self.store.gen_dir(gen)
        results, _, calls, usage = self._execute(gen, self.task.items("test"), gdir / "work_test")
        self._check_task_model(gen, calls)
        self._write_execution(
            gdir / SEALED / "agent_execution_test.json", gen, results, calls, usage, None
        )
        score = self.task.score("test", {r.item_id: r.answer for r in results})
        self.store.write_json(gdir / SEALED / "metrics_test.json", score)
        return None, {"items": len(results)}

    def final_test_gens(self) -> list[int]:
        """Generations scored on test after the loop: the first one and the incumbent."""
        if self.config.test_eval != "final":
            return []
        done = {n.gen for n in self.nodes()}
        gens = {g for g in (1, self.incumbent_gen()) if g is not None and g in done}
        return sorted(
            g for g in gens if not (self.store.gen_dir(g) / SEALED / "metrics_test.json").exists()
        )

    def gateway_model_name(self) -> str:
        assert self.backend is not None
        return str(getattr(self.backend.task_model(), "name", ""))

    def _write_execution(
        self,
        path: Path,
        gen: int,
        results: list[ItemResult],
        calls: list[Any],
        usage: dict[str, Any],
        program: Any,
    ) -> None:
        # what the scaffold printed or raised reaches the Feedback-Agent: no label value in it
        redact = self.task.redact
        results = [attrs.evolve(r, error=redact(r.error)) if r.error else r for r in results]
        if program is not None and program.error:
            program = attrs.evolve(program, error=redact(program.error))
        self.store.write_json(
            path,
            {
                "gen": gen,
                "task": self.task.name,
                "model": self.gateway_model_name(),
                "items": results,
                "answers": {r.item_id: r.answer for r in results},
                "calls": calls,
                "usage": usage,
                "program": program,
            },
        )

    def _score(self, gen: int) -> tuple[None, dict[str, Any]]:
        gdir = self.store.gen_dir(gen)
        run_data = self.store.read_json(gdir / "agent_execution.json")
        test_path = gdir / SEALED / "agent_execution_test.json"
        test: ScoreResult | None = None
        items = list(run_data["items"])
        voided = self._tampered(gen)
        flagged = "" if voided else self._canary_check(gen)
        voided = voided or flagged
        if flagged:
            dev = self.task.score("dev", run_data["answers"])
            dev = attrs.evolve(
                dev, score=0.0, extra={**dev.extra, "voided": flagged, "measured": dev.score}
            )
        elif voided:
            worst = math.inf if self.task.config.direction == "minimize" else 0.0
            dev = ScoreResult(
                split="dev", score=worst, n_items=0, n_answered=0, extra={"voided": voided}
            )
        elif run_data.get("program") is not None:
            # a program handles every item at once, so its test score comes for free
            scores = self.task.score_program_output(gdir / "outputs", sandbox=self.sandbox)
            dev, test = scores["dev"], scores.get("test")
        else:
            dev = self.task.score("dev", run_data["answers"])
            if test_path.exists():
                test_data = self.store.read_json(test_path)
                test = self.task.score("test", test_data["answers"])
                items += test_data["items"]
        usage = run_data.get("usage") or {}
        metrics = Metrics(
            gen=gen,
            dev=dev,
            n_errors=sum(i["status"] == "error" for i in items),
            n_timeouts=sum(i["status"] == "timeout" for i in items),
            seconds=round(sum(i.get("seconds", 0.0) for i in items), 3),
            llm_calls=int(usage.get("calls", 0)),
            prompt_tokens=int(usage.get("prompt_tokens", 0)),
            completion_tokens=int(usage.get("completion_tokens", 0)),
            cost_usd=float(usage.get("cost_usd", 0.0)),
            voided=voided,
        )
        if voided:
            self.emit("warning", gen, message=f"generation {gen} voided: {voided}")
        self.store.write_json(gdir / "metrics.json", metrics)
        if test is not None:
            self.store.write_json(gdir / SEALED / "metrics_test.json", test)
        return None, {"dev_score": dev.score}

    def _canary_check(self, gen: int) -> str:
        """``"suspected reward hacking: ..."`` when the generation's canary hits are clearly
        above chance, else ``""``; the check is kept in ``gen_N/private/canary.json``."""
        canaries = self._canaries()
        gdir = self.store.gen_dir(gen)
        if canaries is None or not (gdir / canary.CANARY_EXECUTION).exists():
            return ""
        answers = self.store.read_json(gdir / canary.CANARY_EXECUTION).get("answers") or {}
        by_id = {i.id: i for i in canaries.items}
        hits = {
            i: self.task.canary_hit(answers.get(i), label, by_id[i])
            for i, label in canaries.labels.items()
        }
        result = canary.check(canaries, hits)
        self.store.write_json(gdir / canary.CANARY_RESULT, result)
        return result.reason() if result.suspected else ""

    def _tampered(self, gen: int) -> str:
        """Why generation ``gen`` is void because the task's files changed, or ``""``.

        Changed while it ran (before/after its run), or, for a program task whose
        ``evaluate.py`` runs from disk at every score, changed since the run started.
        """
        now = self.task.fingerprint()
        changed: set[str] = set()
        if self.store.exists(gen_fingerprint(gen)):
            before = self.store.read_json(gen_fingerprint(gen))
            changed.update(fingerprint_changes(before, now))
        if self.task.config.kind == "program" and self.store.exists(FINGERPRINT):
            changed.update(fingerprint_changes(self.store.read_json(FINGERPRINT), now))
        if not changed:
            return ""
        few = ", ".join(sorted(changed)[:5]) + (" ..." if len(changed) > 5 else "")
        return (
            f"the task's files changed while it ran ({few}): its score cannot be trusted; "
            "restore them from a clean copy of the task"
        )

    def _gate(self, gen: int) -> tuple[None, dict[str, Any]]:
        gdir = self.store.gen_dir(gen)
        decision = from_dict(Decision, self.store.read_json(gdir / "decision.json"))
        metrics = from_dict(Metrics, self.store.read_json(gdir / "metrics.json"))
        text = (gdir / "target_agent.py").read_text(encoding="utf-8")
        incumbent = self.incumbent_gen()
        nodes = {n.gen: n for n in self.nodes()}
        dev = metrics.dev.score
        if metrics.voided:
            accepted, why = False, f"voided: {metrics.voided}"
        elif incumbent is None:
            accepted, why = True, "the first generation is the first incumbent"
        else:
            inc_dev = nodes[incumbent].dev_score or 0.0
            accepted = self.task.better(dev, inc_dev, self.config.gate_margin)
            verb = "beats" if accepted else "does not beat"
            why = (
                f"dev {dev:.4f} {verb} the incumbent gen {incumbent} ({inc_dev:.4f}) "
                f"by more than {self.config.gate_margin}"
            )
        node = GenerationNode(
            gen=gen,
            parent_gen=decision.parent_gen,
            lever=decision.lever,
            scaffold_sha256=sha256_text(text),
            rl_algorithm=decision.rl_algorithm,
            adapter=self.adapter_for(gen),
            dev_score=dev,
            status="done",
        )
        new_incumbent = gen if accepted else incumbent
        all_nodes = [*nodes.values(), node]
        self.store.write_json(
            "archive.json",
            {
                "incumbent": new_incumbent,
                "nodes": [attrs.evolve(n, incumbent=n.gen == new_incumbent) for n in all_nodes],
            },
        )
        self.store.write_text("context.md", self._context_md(all_nodes, new_incumbent, gen, why))
        return None, {"node": node, "incumbent": new_incumbent, "accepted": accepted, "reason": why}

    # -- derived views ------------------------------------------------------------------------

    def history(self) -> list[dict[str, Any]]:
        """Dev-only history the Feedback-Agent and the objective choice see."""
        nodes = {n.gen: n for n in self.nodes()}
        rows = []
        for n in nodes.values():
            parent = nodes.get(n.parent_gen) if n.parent_gen is not None else None
            rows.append(
                {
                    "gen": n.gen,
                    "parent_gen": n.parent_gen,
                    "lever": n.lever,
                    "rl_algorithm": n.rl_algorithm,
                    "dev_score": n.dev_score,
                    "parent_dev_score": parent.dev_score if parent else None,
                    "incumbent": n.incumbent,
                }
            )
        return rows

    def _context_md(
        self, nodes: list[GenerationNode], incumbent: int | None, gen: int, why: str
    ) -> str:
        lines = [
            f"# Evolution log: {self.task.name}",
            "",
            f"Metric: {self.task.config.metric} on the dev split "
            f"({self.task.config.direction}). Incumbent: generation {incumbent}.",
            "",
            "| gen | parent | lever | RL objective | dev | Δ vs parent | incumbent |",
            "|---|---|---|---|---|---|---|",
        ]
        by_gen = {n.gen: n for n in nodes}
        for n in nodes:
            parent = by_gen.get(n.parent_gen) if n.parent_gen is not None else None
            delta = (
                f"{(n.dev_score or 0) - (parent.dev_score or 0):+.4f}"
                if parent is not None
                else "-"
            )
            lines.append(
                f"| {n.gen} | {n.parent_gen if n.parent_gen is not None else '-'} | {n.lever} | "
                f"{n.rl_algorithm or '-'} | {n.dev_score:.4f} | {delta} | "
                f"{'yes' if n.gen == incumbent else ''} |"
            )
        lines += ["", "## What each generation changed", ""]
        for n in nodes:
            d = self.store.read_json(self.store.gen_dir(n.gen) / "decision.json")
            lines.append(f"- gen {n.gen} ({d['lever']}, from {d.get('source')}): {d['rationale']}")
            lines.extend(f"  - {note}" for note in d.get("notes", []))
        lines += ["", f"Last gate (gen {gen}): {why}.", ""]
        return "\n".join(lines)

    @staticmethod
    def _improvement_md(outcome: AgentOutcome, decision: Decision) -> str:
        text = outcome.improvement_md.rstrip() + "\n"
        if decision.notes:
            text += "\n## Notes from sia\n\n" + "".join(f"- {n}\n" for n in decision.notes)
        return text

    def _read_text(self, rel: str) -> str:
        p = self.store.root / rel
        return p.read_text(encoding="utf-8") if p.exists() else ""

    def _write_run_json(self, status: str, **extra: Any) -> None:
        prev = self.store.read_json("run.json") if self.store.exists("run.json") else {}
        data = {
            "run_id": self.store.run_id,
            "status": status,
            "config": to_dict(self.config),
            "sia_core_version": __version__,
            "plugins": [
                {"name": i.name, "version": i.version, "distribution": i.distribution}
                for i in self.pm.plugin_infos()
                if i.error is None
            ],
            "created": prev.get("created", time.time()),
            "updated": time.time(),
            "pid": os.getpid(),
            "incumbent": self.incumbent_gen(),
            "caps": caps_of(self.config),
            **extra,
        }
        if self.ledger is not None:
            data["cost"] = run_cost(self.ledger, step_seconds(self.store))
        if self.estimate is not None:
            data["estimate"] = self.estimate
        self.store.write_json("run.json", data)

    def summary(self) -> list[GenRow]:
        """Per generation: lever, objective, dev and (sealed) test score, incumbent, time."""
        return summarize(self.store)


def summarize(store: RunStore) -> list[GenRow]:
    """The per-generation table of a run (finished, running or killed), from its artifacts."""
    gates = {
        e.gen: e.data
        for e in store.events
        if e.type == "step_finished" and e.data.get("step") == "gate"
    }
    incumbent = None
    for data in gates.values():
        incumbent = data["incumbent"]
    seconds = step_seconds(store)
    entries = read_entries(store.root, store)
    rows = []
    for gen, gdir in store.gen_dirs():
        if not (gdir / "decision.json").exists():
            continue
        d = store.read_json(gdir / "decision.json")
        dev = test = None
        if (gdir / "metrics.json").exists():
            dev = store.read_json(gdir / "metrics.json")["dev"]["score"]
        if (gdir / SEALED / "metrics_test.json").exists():
            test = store.read_json(gdir / SEALED / "metrics_test.json")["score"]
        status = "done" if gen in gates else ("stopped" if d["lever"] == "stop" else "incomplete")
        rows.append(
            GenRow(
                gen=gen,
                parent=d.get("parent_gen"),
                lever=d["lever"],
                rl_algorithm=d.get("rl_algorithm"),
                dev=dev,
                test=test,
                incumbent=gen == incumbent,
                status=status,
                seconds=round(seconds.get(gen, 0.0), 2),
                **_gen_cost(entries, gen),
            )
        )
    return rows


def _gen_cost(entries: list[dict[str, Any]], gen: int) -> dict[str, Any]:
    """A :class:`GenRow`'s cost fields from the run's ledger lines."""
    tot = totals(e for e in entries if e.get("gen") == gen)
    return {
        "tokens": tot["tokens"],
        "cost_usd": tot["cost_usd"],
        "train_seconds": tot["train_device_seconds"],
    }
