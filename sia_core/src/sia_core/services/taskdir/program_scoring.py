"""Program scoring (SIA's convention): harvest a program's output files, run
``evaluate.py --gen-dir GEN_DIR`` sandboxed, and turn ``results.json`` into dev/test scores
(:class:`ProgramScoring`)."""

from __future__ import annotations

import json
import math
import os
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sia_core.contracts.errors import TaskError
from sia_core.contracts.records import ScoreResult
from sia_core.contracts.sandbox import Limits, Sandbox
from sia_core.services.process_sandbox import run
from sia_core.services.taskdir.layout import EVAL_SPLITS
from sia_core.services.taskdir.redaction import LabelRedaction
from sia_core.services.taskdir.splitting import program_split_of
from sia_core.services.untrusted import UntrustedFileError, harvest, read_bounded

UNANSWERED_STATUSES: frozenset[str] = frozenset(
    {"missing", "unanswered", "no_answer", "skipped", "not_attempted"}
)
MAX_RESULTS_BYTES = 16 * 1024 * 1024  # results.json is read up to this size
MAX_ITEM_SCORE = 1e12  # a per-item score in results.json beyond this is taken as the worst


class ProgramScoring(LabelRedaction):
    """Scoring a ``program`` task by its whole-run ``evaluate.py``; failures are redacted."""

    def harvest_outputs(self, work_dir: str | Path, dest: str | Path) -> dict[str, Any]:
        """Copy the files the output contract (``[program] outputs``) names from a program's
        work dir into the fresh folder ``dest``, as regular files only (links, folders, fifos,
        devices refused, sizes capped); what was taken and refused, for the record."""
        limit = int(self.config.max_output_mb * 1024 * 1024)
        report = harvest(
            Path(work_dir),
            Path(dest),
            self.config.outputs,
            max_file_bytes=limit,
            max_total_bytes=4 * limit,
        )
        return {"taken": list(report.taken), "refused": list(report.refused)}

    def score_program_output(
        self, outputs_dir: str | Path, *, sandbox: Sandbox | None = None
    ) -> dict[str, ScoreResult]:
        """SIA-style scoring: run ``evaluate.py --gen-dir GEN_DIR`` and read ``results.json``.

        ``outputs_dir`` holds what the program left (best: what :meth:`harvest_outputs` took).
        Its contract files are copied again, as regular files only, into a fresh temporary
        ``GEN_DIR``; evaluate.py runs in ``sandbox`` (default: process) with that folder as its
        only writable place and the task folder read-only, and ``results.json`` is read from it
        without following links, size-capped, then the folder is removed (its bytes may hold
        labels). With per-item ``items[]`` each id goes to dev or test by a seeded hash of the
        id (about half each), so an id's split never changes between generations; scores are
        computed per split from the item statuses (a pass status = 1). Without ``items[]`` dev
        and test both get the whole-run metric (the same items) and ``extra["note"]`` says so.
        A failure (no script, non-zero exit, timeout, missing or bad ``results.json``) gives
        score 0 (``inf`` for a ``minimize`` task) with ``extra["error"]``; it never raises for
        such failures.
        """
        if self.config.kind != "program":
            raise TaskError(self.name, ["this task is scored per item: use score()"])
        with tempfile.TemporaryDirectory(prefix="sia-evaluate-") as tmp:
            gen_dir = Path(tmp) / "gen"
            harvested = self.harvest_outputs(outputs_dir, gen_dir)
            scores = self._evaluate(gen_dir, sandbox)
        if harvested["refused"]:
            for result in scores.values():
                result.extra["outputs_refused"] = harvested["refused"][:20]
        return scores

    def _evaluate(self, gen_dir: Path, sandbox: Sandbox | None) -> dict[str, ScoreResult]:
        script = (self.root / self.config.evaluate).resolve()
        root = self.root.resolve()
        ro = [root, Path(sys.prefix), Path(sys.base_prefix)]
        if self.private_dir.is_dir():
            ro.append(self.private_dir.resolve())  # never hidden from the task's own scorer
        env = {
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', os.defpath)}",
            "HOME": str(gen_dir),
            "LANG": os.environ.get("LANG") or "C.UTF-8",
            "PYTHONDONTWRITEBYTECODE": "1",
            "HF_HUB_OFFLINE": "1",
        }
        try:
            done = run(
                [sys.executable, str(script), "--gen-dir", str(gen_dir)],
                cwd=gen_dir,
                env=env,
                limits=Limits(wall_s=self.config.eval_timeout_s, memory_mb=None),
                sandbox=sandbox,
                ro_paths=tuple(ro),
                rw_paths=(gen_dir,),
                max_capture_bytes=20_000,
            )
        except OSError as exc:
            return self._program_failure(f"could not run {self.config.evaluate}: {exc}")
        if done.timed_out:
            return self._program_failure(
                f"{self.config.evaluate} ran past {self.config.eval_timeout_s:g} s"
            )
        if done.rc != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-5:]
            message = f"{self.config.evaluate} exited with status {done.rc}: " + " | ".join(tail)
            return self._program_failure(self.redact(message))
        try:
            raw = read_bounded(gen_dir / "results.json", MAX_RESULTS_BYTES)
            results = json.loads(raw.decode("utf-8"))
        except FileNotFoundError:
            return self._program_failure(f"{self.config.evaluate} wrote no results.json")
        except UntrustedFileError as exc:
            return self._program_failure(f"results.json refused: {exc}")
        except (OSError, ValueError) as exc:
            return self._program_failure(f"results.json is not valid JSON: {exc}")
        if not isinstance(results, dict):
            return self._program_failure("results.json is not a JSON object")
        return self._program_scores(results)

    def _program_failure(self, error: str) -> dict[str, ScoreResult]:
        bad = math.inf if self.config.direction == "minimize" else 0.0
        return {
            split: ScoreResult(
                split=split,
                score=bad,
                n_items=0,
                n_answered=0,
                extra={"error": error, "metric": self.config.metric},
            )
            for split in EVAL_SPLITS
        }

    def _program_scores(self, results: dict[str, Any]) -> dict[str, ScoreResult]:
        picked = pick_metric(results, self.config.metric)
        metric, overall = picked if picked else (None, None)
        if overall is not None and not math.isfinite(overall):
            return self._program_failure(
                f"results.json: {metric} is {overall}, not a finite number"
            )
        items = results.get("items")
        per_item_rows = (
            [it for it in items if isinstance(it, dict) and "id" in it]
            if isinstance(items, list)
            else []
        )
        if not per_item_rows:
            if overall is None:  # the task's own scorer says nothing sia can read: stop
                seen = ", ".join(sorted(results)[:12]) or "none"
                raise TaskError(
                    self.name,
                    [
                        f"{self.config.evaluate} wrote a results.json with no number sia can use "
                        f"as the metric ({self.config.metric!r} or any other) and no items[] "
                        f"(top-level keys: {seen}); make it write one, e.g. "
                        f'{{"{self.config.metric}": 0.5}}, or name its metric in task.toml'
                    ],
                )
            note = (
                "results.json has no per-item items[]: decisions and reported scores use the same "
                "items (dev score == test score)"
            )
            if note not in self.notes:
                self.notes = (*self.notes, note)
            extra: dict[str, Any] = {"metric": metric, "overall": overall, "note": note}
            honest = all_items_share(results, str(metric), overall)
            if honest is not None:  # the task's figure divides by fewer items than it has
                extra["task_figure"] = {metric: overall}
                extra["rule"] = (
                    f"{metric} divides by the items answered ({overall:.4f}); sia divides by all "
                    f"{honest[1]} items ({honest[0]:.4f}) and decides on that"
                )
                overall = extra["overall"] = honest[0]
            return {
                split: ScoreResult(
                    split=split,
                    score=overall,
                    n_items=honest[1] if honest else 0,
                    n_answered=0,
                    extra=extra,
                )
                for split in EVAL_SPLITS
            }
        passing = {s.lower() for s in self.config.pass_statuses}
        values: dict[str, float] = {}
        answered: set[str] = set()
        for row in per_item_rows:
            item_id = str(row["id"])
            status = str(row.get("status", "") or "").lower()
            raw = row.get("score")
            if isinstance(raw, int | float) and not isinstance(raw, bool):
                # a non-finite or absurd score would poison (or overflow) the mean: it counts
                # as the worst value
                sane = math.isfinite(raw) and abs(raw) <= MAX_ITEM_SCORE
                values[item_id] = float(raw) if sane else self._worst()
            else:
                values[item_id] = 1.0 if status in passing else 0.0
            if status and status not in UNANSWERED_STATUSES:
                answered.add(item_id)
        out: dict[str, ScoreResult] = {}
        for split in EVAL_SPLITS:
            ids = [
                i
                for i in values
                if program_split_of(i, self.config.program_dev_fraction, self.config.program_seed)
                == split
            ]
            per_item = {i: values[i] for i in ids}
            extra = {"metric": metric or self.config.metric, "split_by": "id hash"}
            if overall is not None and split == "test":
                # the whole-run metric includes test items: never put it where decisions read
                extra["overall"] = overall
            out[split] = ScoreResult(
                split=split,
                score=math.fsum(per_item.values()) / len(ids) if ids else 0.0,
                n_items=len(ids),
                n_answered=sum(1 for i in ids if i in answered),
                per_item=per_item,
                extra=extra,
            )
        return out


def numeric_scalars(results: Mapping[str, Any]) -> list[tuple[str, float]]:
    """Every number in ``results.json`` outside lists, as ``(dotted path, value)``, shallowest
    first (SIA's evaluators nest theirs, e.g. ``summary.accuracy``)."""
    found: list[tuple[str, float]] = []
    level: list[tuple[str, Mapping[str, Any]]] = [("", results)]
    while level:
        deeper: list[tuple[str, Mapping[str, Any]]] = []
        for prefix, node in level:
            for key, value in node.items():
                path = f"{prefix}{key}"
                if isinstance(value, int | float) and not isinstance(value, bool):
                    found.append((path, float(value)))
                elif isinstance(value, Mapping):
                    deeper.append((f"{path}.", value))
        level = deeper
    return found


_CORRECT = ("correct", "n_correct", "num_correct")
_TOTAL = ("total_questions", "total", "n_total", "n_items", "num_questions")


def all_items_share(
    results: Mapping[str, Any], metric: str, value: float
) -> tuple[float, int] | None:
    """``(correct / all items, all items)`` when ``results.json`` counts both beside ``metric``
    and the task's own figure is another ratio (e.g. correct / attempted); else None."""
    node: Any = results
    for key in metric.split(".")[:-1]:
        node = node.get(key) if isinstance(node, Mapping) else None
    if not isinstance(node, Mapping) or not 0.0 <= value <= 1.0:
        return None
    counts = [
        next((node[k] for k in keys if isinstance(node.get(k), int) and node[k] >= 0), None)
        for keys in (_CORRECT, _TOTAL)
    ]
    correct, total = counts
    if correct is None or not total or correct > total or abs(value - correct / total) < 1e-9:
        return None
    return correct / total, total


def pick_metric(results: Mapping[str, Any], preferred: str) -> tuple[str, float] | None:
    """The run's metric in ``results.json``: the one the task names (``preferred``), else
    ``accuracy``, else ``score``, at any depth (the shallowest); else the first number; None when
    there is no number at all."""
    scalars = numeric_scalars(results)
    for name in (preferred, "accuracy", "score"):
        hit = next((s for s in scalars if s[0].rsplit(".", 1)[-1] == name), None)
        if hit is not None:
            return hit
    return scalars[0] if scalars else None
