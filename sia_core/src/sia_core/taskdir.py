"""Task directories: loading, validation and scoring.

A task directory holds the task description, public inputs, private labels, a reference scaffold
and a scorer (see ``ARCHITECTURE.md``, "Task directory")::

    my-task/
      task.toml                          # optional for SIA-style folders
      data/public/task.md                # what, answer format, metric
      data/public/train.jsonl            # {"id","input","label"}: train labels are public
      data/public/dev.jsonl, test.jsonl  # {"id","input"}: inputs only
      data/private/dev_labels.jsonl, test_labels.jsonl   # {"id","label"}: only the scorer reads them
      reference/reference_target_agent.py
      reference/SAMPLE_TASK_DESCRIPTIONS.md
      scorer.py                          # optional custom per-item scorer, outside data/public

Two scoring styles are supported: ``per_item`` (sia-native: a built-in or custom per-item scorer
over declared splits) and ``program`` (SIA's convention: ``python evaluate.py --gen-dir GEN_DIR``
writes ``GEN_DIR/results.json``). A folder without ``task.toml`` is read as a SIA folder
(``program`` kind). :func:`validate_task` lists every problem; :func:`load_task` raises
:class:`~sia_core.errors.TaskError` listing them all.

Labels never leave :class:`Task` through :meth:`Task.items`; only :meth:`Task.score`,
:meth:`Task.score_answer` and :meth:`Task.private_labels` (for scorers and tests) read them.
"""

from __future__ import annotations

import ast
import csv
import hashlib
import importlib.util
import io
import json
import math
import os
import random
import re
import sys
import tempfile
import tomllib
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import attrs

from sia_core.canary import CanarySpec
from sia_core.errors import TaskError
from sia_core.params import SpaceError, read_declared
from sia_core.records import Item, ScoreResult
from sia_core.sandbox import Limits, Sandbox, run
from sia_core.untrusted import DEFAULT_OUTPUTS, UntrustedFileError, harvest, read_bounded

__all__ = [
    "ANSWER_TYPES",
    "BUILTIN_SCORERS",
    "DIRECTIONS",
    "KINDS",
    "SPLITS",
    "DevFromTrain",
    "Problem",
    "Task",
    "TaskConfig",
    "carve_dev",
    "fingerprint_changes",
    "load_task",
    "normalize",
    "program_split_of",
    "scan_public_for_labels",
    "validate_task",
]

SPLITS: tuple[str, ...] = ("train", "dev", "test")
EVAL_SPLITS: tuple[str, ...] = ("dev", "test")
ANSWER_TYPES: tuple[str, ...] = ("text", "int", "float", "choice", "json")
DIRECTIONS: tuple[str, ...] = ("maximize", "minimize")
BUILTIN_SCORERS: tuple[str, ...] = ("exact", "numeric")
KINDS: tuple[str, ...] = ("per_item", "program")
SPLIT_SUFFIXES: tuple[str, ...] = (".jsonl", ".csv", ".json")

TASK_TOML = "task.toml"
TASK_MD = "data/public/task.md"
PUBLIC_DIR = "data/public"
PRIVATE_DIR = "data/private"
REFERENCE_SCAFFOLD = "reference/reference_target_agent.py"
SAMPLE_DESCRIPTIONS = "reference/SAMPLE_TASK_DESCRIPTIONS.md"
# SIA v0 called the reference folder spec/
LEGACY_REFERENCE_DIR = "spec"
EVALUATE_CANDIDATES: tuple[str, ...] = ("data/public/evaluate.py", "evaluate.py")

FLOAT_TOLERANCE = 1e-6
DEFAULT_PASS_STATUSES: tuple[str, ...] = ("correct", "pass", "passed", "success", "solved")
UNANSWERED_STATUSES: frozenset[str] = frozenset(
    {"missing", "unanswered", "no_answer", "skipped", "not_attempted"}
)
_FIRST_FEW = 5
MAX_RESULTS_BYTES = 16 * 1024 * 1024  # results.json is read up to this size
MAX_ITEM_SCORE = 1e12  # a per-item score in results.json beyond this is taken as the worst
#: what separates the cells of a label file or of text (kept by split: it has a group)
_SEPARATORS = re.compile(r"([\s,;:\"'\[\]{}()|=<>]+)")

_KNOWN_KEYS: dict[str, frozenset[str]] = {
    "": frozenset(
        {
            "name",
            "description",
            "metric",
            "direction",
            "answer_type",
            "scorer",
            "kind",
            "tolerance",
            "allow_shared_inputs",
            "splits",
            "labels",
            "fields",
            "dev_from_train",
            "limits",
            "program",
            "canary",
        }
    ),
    "splits": frozenset(SPLITS),
    "labels": frozenset(EVAL_SPLITS),
    "fields": frozenset({"id", "input", "label"}),
    "dev_from_train": frozenset({"fraction", "seed", "stratify"}),
    "limits": frozenset({"item_timeout_s", "parallel", "eval_timeout_s"}),
    "program": frozenset({"dev_fraction", "seed", "pass_statuses", "outputs", "max_output_mb"}),
    "canary": frozenset({"n", "labels", "alpha", "inputs"}),
}


# --------------------------------------------------------------------------------------------
# Records
# --------------------------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class Problem:
    """One thing wrong with a task directory; ``file`` is relative to it (``"."`` = the dir)."""

    file: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}: {self.message}"


@attrs.frozen(kw_only=True)
class DevFromTrain:
    """How a dev split is carved from train when the task ships no dev file."""

    fraction: float = 0.1
    seed: int = 0
    stratify: bool = True


@attrs.frozen(kw_only=True)
class TaskConfig:
    """A task's settings: ``task.toml`` where there is one, defaults otherwise.

    Paths in ``splits``, ``labels`` and ``evaluate`` are relative to the task directory and are
    the ones actually used (defaults filled in). ``dev_from_train`` is set only when dev is
    carved from train.
    """

    name: str
    description: str = ""
    metric: str = "accuracy"
    direction: str = "maximize"
    answer_type: str = "text"
    scorer: str = "exact"  # "exact" | "numeric" | "path.py:function" | the evaluate.py path
    kind: str = "per_item"  # "per_item" | "program"
    item_timeout_s: float = 120.0
    parallel: int = 2
    eval_timeout_s: float = 600.0
    tolerance: float = FLOAT_TOLERANCE  # for the "numeric" scorer
    allow_shared_inputs: bool = False
    splits: dict[str, str] = attrs.field(factory=dict)
    labels: dict[str, str] = attrs.field(factory=dict)
    id_field: str = "id"
    input_fields: tuple[str, ...] = ("input",)
    label_field: str = "label"
    dev_from_train: DevFromTrain | None = None
    evaluate: str = ""  # program kind: the evaluate.py path
    program_dev_fraction: float = 0.5
    program_seed: int = 0
    pass_statuses: tuple[str, ...] = DEFAULT_PASS_STATUSES
    #: the output contract: which files of the program's work dir evaluate.py is shown
    outputs: tuple[str, ...] = DEFAULT_OUTPUTS
    max_output_mb: float = 64.0  # per output file; 4x that in all
    #: canary items (``[canary]``): per-run random labels that flag reward hacking
    canary: CanarySpec | None = None
    from_toml: bool = False


# --------------------------------------------------------------------------------------------
# Answer normalisation and built-in scorers
# --------------------------------------------------------------------------------------------

_THOUSANDS_RE = re.compile(r"(?<=\d),(?=\d{3}\b)")
_INT_RE = re.compile(r"[-+]?\d+")
_FLOAT_RE = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")
_CHOICE_RE = re.compile(r"(?<![A-Za-z])[A-Z](?![A-Za-z])")
_WS_RE = re.compile(r"\s+")


def _canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _norm_text(answer: Any) -> str:
    if isinstance(answer, str):
        text = answer
    elif isinstance(answer, dict | list):
        text = _canonical_json(answer)
    else:
        text = str(answer)
    return _WS_RE.sub(" ", text).strip()


def _norm_int(answer: Any) -> int | None:
    if isinstance(answer, bool):
        return None
    if isinstance(answer, int):
        return answer
    if isinstance(answer, float):
        return int(answer) if math.isfinite(answer) and answer.is_integer() else None
    if isinstance(answer, str):
        match = _INT_RE.search(_THOUSANDS_RE.sub("", answer))
        return int(match.group()) if match else None
    return None


def _norm_float(answer: Any) -> float | None:
    if isinstance(answer, bool):
        return None
    if isinstance(answer, int | float):
        value = float(answer)
    elif isinstance(answer, str):
        match = _FLOAT_RE.search(_THOUSANDS_RE.sub("", answer))
        if not match:
            return None
        value = float(match.group())
    else:
        return None
    return value if math.isfinite(value) else None


def _norm_choice(answer: Any) -> str | None:
    if not isinstance(answer, str):
        return None
    text = answer.strip()
    if len(text) == 1 and "a" <= text.lower() <= "z":
        return text.upper()
    match = _CHOICE_RE.search(text)
    return match.group() if match else None


def _norm_json(answer: Any) -> str | None:
    value = answer
    if isinstance(answer, str):
        try:
            value = json.loads(answer)
        except ValueError:
            value = answer  # a plain string is its own JSON value
    try:
        return _canonical_json(value)
    except (TypeError, ValueError):
        return None


_NORMALIZERS: dict[str, Callable[[Any], Any]] = {
    "text": _norm_text,
    "int": _norm_int,
    "float": _norm_float,
    "choice": _norm_choice,
    "json": _norm_json,
}


def normalize(answer: Any, answer_type: str) -> Any:
    """Normalise an answer (or a label) for exact matching; ``None`` means unparsable.

    - ``text``: stripped, runs of whitespace collapsed to one space.
    - ``int``: the first integer in a string (``"The answer is 42."`` -> 42); bools rejected.
    - ``float``: the first number in a string, as a finite float; bools rejected.
    - ``choice``: the first standalone capital letter A-Z (a lone lowercase letter is upcased).
    - ``json``: a canonical JSON dump (a string is parsed as JSON first where it is JSON).
    """
    normalizer = _NORMALIZERS.get(answer_type)
    if normalizer is None:
        raise ValueError(
            f"unknown answer_type {answer_type!r}; choose one of: {', '.join(ANSWER_TYPES)}"
        )
    return None if answer is None else normalizer(answer)


def _exact_scorer(answer_type: str) -> Callable[[Any, Any, Item], float]:
    def score_item(answer: Any, label: Any, item: Item) -> float:
        got, want = normalize(answer, answer_type), normalize(label, answer_type)
        if got is None or want is None:
            return 0.0
        if answer_type == "float":
            return 1.0 if math.isclose(got, want, rel_tol=0.0, abs_tol=FLOAT_TOLERANCE) else 0.0
        return 1.0 if got == want else 0.0

    return score_item


def _numeric_scorer(tolerance: float) -> Callable[[Any, Any, Item], float]:
    def score_item(answer: Any, label: Any, item: Item) -> float:
        got, want = normalize(answer, "float"), normalize(label, "float")
        if got is None or want is None:
            return 0.0
        return 1.0 if abs(got - want) <= tolerance else 0.0

    return score_item


# --------------------------------------------------------------------------------------------
# The task
# --------------------------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class _Row:
    id: str
    input: Any
    label: Any = None


class Task:
    """A loaded, valid task directory. Build it with :func:`load_task`."""

    root: Path
    config: TaskConfig
    name: str
    public_dir: Path
    private_dir: Path
    task_md: str
    reference_scaffold: Path
    sample_task_descriptions: str
    notes: tuple[str, ...]

    def __init__(
        self,
        *,
        root: Path,
        config: TaskConfig,
        task_md: str,
        reference_scaffold: Path,
        sample_task_descriptions: str,
        notes: Iterable[str],
        rows: Mapping[str, list[_Row]],
        labels: Mapping[str, dict[str, Any]],
        score_item: Callable[[Any, Any, Item], float] | None,
        aggregate: Callable[..., Mapping[str, Any]] | None,
    ) -> None:
        self.root = root
        self.config = config
        self.name = config.name
        self.public_dir = root / PUBLIC_DIR
        self.private_dir = root / PRIVATE_DIR
        self.task_md = task_md
        self.reference_scaffold = reference_scaffold
        self.sample_task_descriptions = sample_task_descriptions
        self.notes = tuple(notes)
        self._items = {
            split: [Item(id=r.id, input=r.input, split=split) for r in split_rows]
            for split, split_rows in rows.items()
        }
        self._index = {split: {i.id: i for i in items} for split, items in self._items.items()}
        self._train = [
            {"id": r.id, "input": r.input, "label": r.label} for r in rows.get("train", [])
        ]
        self._labels = {split: dict(split_labels) for split, split_labels in labels.items()}
        self._score_item = score_item
        self._aggregate = aggregate
        self._secrets: frozenset[str] | None = None  # built on first use by secret_values()

    def __repr__(self) -> str:
        sizes = ", ".join(f"{s}={len(v)}" for s, v in self._items.items())
        return f"Task({self.name!r}, kind={self.config.kind!r}, {sizes})"

    @property
    def splits(self) -> tuple[str, ...]:
        """The splits that have items (empty for a program-style task)."""
        return tuple(s for s in SPLITS if s in self._items)

    def _check_split(self, split: str) -> None:
        if split not in SPLITS:
            raise TaskError(
                self.name, [f"unknown split {split!r}; choose one of: train, dev, test"]
            )

    def items(self, split: str) -> list[Item]:
        """The split's items, inputs only (never labels, also for ``train``).

        A program-style task has no per-item inputs: it returns an empty list.
        """
        self._check_split(split)
        return list(self._items.get(split, []))

    def train_examples(self) -> list[dict[str, Any]]:
        """Train items with their (public) labels: ``[{"id", "input", "label"}]``."""
        return [dict(row) for row in self._train]

    def private_labels(self, split: str) -> dict[str, Any]:
        """The split's labels by id. For scorers and tests only: never hand them to a scaffold."""
        self._check_split(split)
        return dict(self._labels.get(split, {}))

    def _worst(self) -> float:
        return 1.0 if self.config.direction == "minimize" else 0.0

    def _require_per_item(self) -> Callable[[Any, Any, Item], float]:
        if self.config.kind != "per_item" or self._score_item is None:
            raise TaskError(
                self.name,
                ["this task is scored by a whole-run evaluate.py: use score_program_output()"],
            )
        return self._score_item

    def score_answer(self, split: str, item_id: str, answer: Any) -> float:
        """One item's score (e.g. an RL reward); a missing answer scores the worst value."""
        score_item = self._require_per_item()
        self._check_split(split)
        by_id = self._index.get(split, {})
        if item_id not in by_id:
            raise TaskError(self.name, [f"no item {item_id!r} in split {split!r}"])
        if _unanswered(answer):
            return self._worst()
        return float(score_item(answer, self._labels[split][item_id], by_id[item_id]))

    def canary_hit(self, answer: Any, label: str, item: Item) -> bool:
        """Whether ``answer`` is right for a canary ``item`` whose (drawn) label is ``label``."""
        score_item = self._require_per_item()
        if _unanswered(answer):
            return False
        try:
            return float(score_item(answer, label, item)) >= 1.0 - 1e-9
        except Exception:  # a scorer choking on an answer: not a hit
            return False

    def score(self, split: str, answers: Mapping[str, Any]) -> ScoreResult:
        """Score a split. Missing or ``None`` answers count wrong; divides by ALL items.

        ``per_item`` has every id of the split. Per-item values are in 0..1: 1 = correct (or, for
        a ``minimize`` task, the custom scorer's loss; a missing answer then scores 1).
        """
        score_item = self._require_per_item()
        self._check_split(split)
        items = self._items.get(split, [])
        labels = self._labels.get(split, {})
        worst = self._worst()
        per_item: dict[str, float] = {}
        n_answered = 0
        errors: list[str] = []
        for item in items:
            answer = answers.get(item.id)
            if _unanswered(answer):
                per_item[item.id] = worst
                continue
            n_answered += 1
            try:
                value = float(score_item(answer, labels[item.id], item))
                if not math.isfinite(value):  # it would turn the whole split's mean into nan
                    raise ValueError(f"the scorer returned {value}")
                per_item[item.id] = value
            except Exception as exc:  # trusted task code, but one bad item must not end a run
                per_item[item.id] = worst
                errors.append(f"{item.id}: {type(exc).__name__}: {exc}")
        n_items = len(items)
        total = math.fsum(per_item.values())
        extra: dict[str, Any] = {"metric": self.config.metric}
        unknown = [key for key in answers if key not in per_item]
        if unknown:
            extra["n_unknown_ids"] = len(unknown)
        if errors:
            extra["scorer_errors"] = len(errors)
            extra["first_scorer_error"] = errors[0]
        if self._aggregate is not None:
            try:
                extra.update(self._aggregate(dict(per_item), dict(answers), dict(labels)))
            except Exception as exc:
                extra["aggregate_error"] = f"{type(exc).__name__}: {exc}"
        return ScoreResult(
            split=split,
            score=total / n_items if n_items else 0.0,
            n_items=n_items,
            n_answered=n_answered,
            per_item=per_item,
            extra=extra,
        )

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

    # -- tamper detection ----------------------------------------------------------------------

    def fingerprint(self) -> dict[str, str]:
        """``relative path -> sha256`` of every file a score depends on: ``task.toml``, the
        scorer and ``evaluate.py`` wherever they are, and all of ``data/`` (a link is hashed as
        its target text, never followed). Compare two with :func:`fingerprint_changes`."""
        root = self.root
        paths: set[Path] = {root / TASK_TOML}
        for name in (self.config.evaluate, self.config.scorer.partition(":")[0]):
            if name and name not in BUILTIN_SCORERS:
                paths.add(root / name)
        for folder in (root / "data",):
            for dirpath, dirs, files in os.walk(folder):
                dirs[:] = [d for d in dirs if d != "__pycache__"]
                paths.update(Path(dirpath) / f for f in files)
        out: dict[str, str] = {}
        for path in sorted(paths):
            rel = path.relative_to(root).as_posix()
            try:
                if path.is_symlink():
                    out[rel] = "link:" + os.readlink(path)
                elif path.is_file():
                    digest = hashlib.sha256()
                    with open(path, "rb") as f:
                        for chunk in iter(lambda: f.read(1 << 20), b""):
                            digest.update(chunk)
                    out[rel] = digest.hexdigest()
            except OSError as exc:
                out[rel] = f"unreadable: {exc.strerror}"
        return out

    # -- redaction -----------------------------------------------------------------------------

    def secret_values(self) -> frozenset[str]:
        """Private label values long enough to recognise (4+ characters), for :meth:`redact`.

        Per-item tasks: every dev/test label. Program tasks: every cell of the files under
        ``data/private`` (split on separators; the first 32 MB).
        """
        if self._secrets is not None:
            return self._secrets
        values: set[str] = set()
        for split in EVAL_SPLITS:
            for label in self._labels.get(split, {}).values():
                text = label if isinstance(label, str) else _canonical_json(label)
                values.add(text.strip())
                values.update(_SEPARATORS.split(text)[::2])
        if self.config.kind == "program" and self.private_dir.is_dir():
            budget = 32 * 1024 * 1024
            for path in sorted(self.private_dir.rglob("*")):
                if budget <= 0:
                    break
                if not path.is_file() or path.is_symlink():
                    continue
                try:
                    with open(path, "rb") as f:
                        data = f.read(budget)
                except OSError:
                    continue
                budget -= len(data)
                for line in data.decode("utf-8", "replace").splitlines():
                    values.add(line.strip())
                    values.update(_SEPARATORS.split(line)[::2])
        secrets = frozenset(v.strip() for v in values if len(v.strip()) >= 4)
        self._secrets = secrets
        return secrets

    def redact(self, text: str) -> str:
        """``text`` with every private label value in it replaced, and a note saying so."""
        if not text:
            return text
        secrets = self.secret_values()
        if not secrets:
            return text
        pieces = _SEPARATORS.split(text)
        hits = 0
        for i, piece in enumerate(pieces):
            if i % 2 == 0 and piece in secrets:
                pieces[i] = "[redacted]"
                hits += 1
        out = "".join(pieces)
        lines = out.split("\n")
        for i, line in enumerate(lines):
            if line.strip() in secrets:
                lines[i] = "[redacted]"
                hits += 1
        if not hits:
            return text
        return "\n".join(lines) + f"\n[sia: {hits} private label value(s) redacted]"

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
        metric = _pick_metric(results, self.config.metric)
        overall = float(results[metric]) if metric else None
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
            if overall is None:
                return self._program_failure("results.json has no numeric metric and no items[]")
            note = (
                "results.json has no per-item items[]: decisions and reported scores use the same "
                "items (dev score == test score)"
            )
            if note not in self.notes:
                self.notes = (*self.notes, note)
            return {
                split: ScoreResult(
                    split=split,
                    score=overall,
                    n_items=0,
                    n_answered=0,
                    extra={"metric": metric, "overall": overall, "note": note},
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
            extra: dict[str, Any] = {"metric": metric or self.config.metric, "split_by": "id hash"}
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

    def better(self, a: float, b: float, margin: float = 0.0) -> bool:
        """Whether score ``a`` beats ``b`` by more than ``margin`` in this task's direction."""
        if self.config.direction == "minimize":
            return a < b - margin
        return a > b + margin


def fingerprint_changes(before: Mapping[str, str], after: Mapping[str, str]) -> list[str]:
    """The task files that differ between two :meth:`Task.fingerprint` results, sorted."""
    return sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))


def _unanswered(answer: Any) -> bool:
    return answer is None or (isinstance(answer, str) and not answer.strip())


def _pick_metric(results: Mapping[str, Any], preferred: str) -> str | None:
    def numeric(value: Any) -> bool:
        return isinstance(value, int | float) and not isinstance(value, bool)

    if numeric(results.get(preferred)):
        return preferred
    return next((key for key, value in results.items() if numeric(value)), None)


def _unit_hash(text: str) -> float:
    """A number in [0, 1) from ``text``, the same in every Python process (unlike ``hash``)."""
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def program_split_of(item_id: str, dev_fraction: float = 0.5, seed: int = 0) -> str:
    """Which split (``"dev"``/``"test"``) a program-style task's item id belongs to."""
    return "dev" if _unit_hash(f"{seed}:{item_id}") < dev_fraction else "test"


def carve_dev(
    rows: list[_Row], fraction: float, seed: int, stratify: bool
) -> tuple[list[_Row], list[_Row]]:
    """Split train rows into (train, dev) with a seeded ``random.Random``; deterministic.

    With ``stratify`` the dev count is spread over labels by largest remainder, ties broken in a
    seeded order, so even one-item-per-label data gets a dev split of the requested size.
    """
    n = len(rows)
    if n < 2:
        return list(rows), []
    n_dev = min(n - 1, max(1, round(fraction * n)))
    rng = random.Random(seed)
    chosen: set[str] = set()
    if stratify:
        groups: dict[str, list[str]] = {}
        for row in rows:
            groups.setdefault(_label_key(row.label), []).append(row.id)
        keys = sorted(groups)
        rng.shuffle(keys)
        quotas = {k: n_dev * len(groups[k]) / n for k in keys}
        counts = {k: int(quotas[k]) for k in keys}
        left = n_dev - sum(counts.values())
        # stable sort keeps the seeded order among equal remainders
        for k in sorted(keys, key=lambda k: quotas[k] - counts[k], reverse=True)[:left]:
            counts[k] += 1
        for k in keys:
            ids = sorted(groups[k])
            rng.shuffle(ids)
            chosen.update(ids[: counts[k]])
    else:
        ids = sorted(row.id for row in rows)
        rng.shuffle(ids)
        chosen.update(ids[:n_dev])
    return [r for r in rows if r.id not in chosen], [r for r in rows if r.id in chosen]


def _label_key(label: Any) -> str:
    try:
        return _canonical_json(label)
    except (TypeError, ValueError):
        return repr(label)


# --------------------------------------------------------------------------------------------
# Loading and validation
# --------------------------------------------------------------------------------------------


class _Loader:
    """Reads a task directory once, collecting every problem instead of stopping at the first."""

    def __init__(self, path: str | Path) -> None:
        root = Path(path).expanduser()
        if root.is_file() and root.name == TASK_TOML:
            root = root.parent
        self.root = root.resolve()
        self.problems: list[Problem] = []
        self.notes: list[str] = []
        self.rows: dict[str, list[_Row]] = {}
        self.labels: dict[str, dict[str, Any]] = {}
        self.score_item: Callable[[Any, Any, Item], float] | None = None
        self.aggregate: Callable[..., Mapping[str, Any]] | None = None
        self.config: TaskConfig | None = None
        self.task_md = ""
        self.sample_descriptions = ""
        self.reference = self.root / REFERENCE_SCAFFOLD

    # -- helpers -------------------------------------------------------------------------------

    def problem(self, file: str | Path, message: str) -> None:
        self.problems.append(Problem(file=self.rel(file), message=message))

    def rel(self, file: str | Path) -> str:
        path = Path(file)
        if path.is_absolute():
            try:
                path = path.relative_to(self.root)
            except ValueError:
                return str(path)
        text = path.as_posix()
        return text if text not in ("", ".") else "."

    # -- entry ---------------------------------------------------------------------------------

    def run(self) -> None:
        if not self.root.is_dir():
            self.problem(".", f"task directory not found: {self.root}")
            return
        raw = self.read_toml()
        self.check_documents()
        config = self.build_config(raw)
        self.config = config
        if config.kind == "per_item":
            self.load_scorer(config)
            self.load_splits(config)
        elif config.kind == "program":
            self.check_program(config)
            if "train" in config.splits:
                self.load_splits(config, only=("train",))
        self.scan_public()

    def read_toml(self) -> dict[str, Any] | None:
        path = self.root / TASK_TOML
        if not path.is_file():
            return None
        try:
            return tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            self.problem(TASK_TOML, f"not valid TOML: {exc}")
        except (OSError, UnicodeDecodeError) as exc:
            self.problem(TASK_TOML, f"cannot be read: {exc}")
        return {}

    def check_documents(self) -> None:
        task_md = self.root / TASK_MD
        if task_md.is_file():
            self.task_md = task_md.read_text(encoding="utf-8", errors="replace")
            if not self.task_md.strip():
                self.problem(TASK_MD, "is empty: describe the task, the answer format and metric")
        else:
            self.problem(TASK_MD, "missing: the task description (task, answer format, metric)")
        reference = self.root / REFERENCE_SCAFFOLD
        legacy = self.root / LEGACY_REFERENCE_DIR / Path(REFERENCE_SCAFFOLD).name
        if not reference.is_file() and legacy.is_file():
            reference = legacy
            self.notes.append(f"reference scaffold read from {self.rel(legacy)} (SIA v0 layout)")
        self.reference = reference
        if reference.is_file():
            try:
                source = reference.read_bytes()
                ast.parse(source, filename=str(reference))
            except SyntaxError as exc:
                self.problem(reference, f"syntax error at line {exc.lineno}: {exc.msg}")
            except ValueError as exc:
                self.problem(reference, f"cannot be parsed: {exc}")
            else:
                self.check_declared(reference, source.decode("utf-8", "replace"))
        else:
            self.problem(REFERENCE_SCAFFOLD, "missing: the reference scaffold (generation 1)")
        samples = self.root / SAMPLE_DESCRIPTIONS
        if not samples.is_file():
            samples = self.root / LEGACY_REFERENCE_DIR / Path(SAMPLE_DESCRIPTIONS).name
        if samples.is_file():
            self.sample_descriptions = samples.read_text(encoding="utf-8", errors="replace")
        else:
            self.notes.append(f"no {SAMPLE_DESCRIPTIONS}: the Meta-Agent gets no sample tasks")

    # -- config --------------------------------------------------------------------------------

    def table(self, raw: Mapping[str, Any], key: str) -> dict[str, Any]:
        value = raw.get(key, {})
        if not isinstance(value, dict):
            self.problem(TASK_TOML, f"[{key}] must be a table")
            return {}
        return value

    def value(
        self, table: Mapping[str, Any], key: str, kinds: tuple[type, ...], default: Any, where: str
    ) -> Any:
        if key not in table:
            return default
        value = table[key]
        ok = isinstance(value, kinds) and not (isinstance(value, bool) and bool not in kinds)
        if not ok:
            names = " or ".join(k.__name__ for k in kinds)
            self.problem(TASK_TOML, f"{where}{key} must be {names}, got {value!r}")
            return default
        return value

    def check_choice(self, key: str, value: str, choices: tuple[str, ...]) -> None:
        if value not in choices:
            self.problem(
                TASK_TOML if self.has_toml else ".",
                f"unknown {key} {value!r}; choose one of: {', '.join(choices)}",
            )

    @property
    def has_toml(self) -> bool:
        return (self.root / TASK_TOML).is_file()

    def build_config(self, raw: dict[str, Any] | None) -> TaskConfig:
        from_toml = raw is not None
        raw = raw or {}
        for section, known in _KNOWN_KEYS.items():
            table = raw if not section else raw.get(section, {})
            if not isinstance(table, dict):
                continue
            for key in table:
                if key not in known:
                    where = f"[{section}] " if section else ""
                    self.notes.append(f"task.toml: unknown key {where}{key!r} ignored")
        get = self.value
        name = get(raw, "name", (str,), self.root.name, "") or self.root.name
        scorer = get(raw, "scorer", (str,), "", "")
        kind = get(raw, "kind", (str,), "", "")
        splits_t = self.table(raw, "splits")
        if not kind:
            kind = self.infer_kind(from_toml, scorer, splits_t)
        self.check_choice("kind", kind, KINDS)
        limits = self.table(raw, "limits")
        fields = self.table(raw, "fields")
        program = self.table(raw, "program")
        input_fields = fields.get("input", ["input"])
        if isinstance(input_fields, str):
            input_fields = [input_fields]
        if (
            not isinstance(input_fields, list)
            or not input_fields
            or not all(isinstance(f, str) for f in input_fields)
        ):
            self.problem(
                TASK_TOML, f"[fields] input must be a name or a list of names, got {input_fields!r}"
            )
            input_fields = ["input"]
        pass_statuses = get(
            program, "pass_statuses", (list,), list(DEFAULT_PASS_STATUSES), "[program] "
        )
        outputs = get(program, "outputs", (list,), list(DEFAULT_OUTPUTS), "[program] ")
        if not all(
            isinstance(o, str)
            and o
            and not o.startswith("/")
            and ".." not in o.split("/")
            and o.count("/") <= 1
            for o in outputs
        ):
            self.problem(
                TASK_TOML,
                f"[program] outputs must be relative file names or patterns at most one folder "
                f'deep (e.g. ["submission.csv", "results/*.json"]), got {outputs!r}',
            )
            outputs = list(DEFAULT_OUTPUTS)
        config = TaskConfig(
            name=name,
            description=get(raw, "description", (str,), "", ""),
            metric=get(raw, "metric", (str,), "accuracy", "") or "accuracy",
            direction=get(raw, "direction", (str,), "maximize", ""),
            answer_type=get(raw, "answer_type", (str,), "text", ""),
            scorer=scorer or ("exact" if kind == "per_item" else ""),
            kind=kind,
            item_timeout_s=float(get(limits, "item_timeout_s", (int, float), 120.0, "[limits] ")),
            parallel=int(get(limits, "parallel", (int,), 2, "[limits] ")),
            eval_timeout_s=float(get(limits, "eval_timeout_s", (int, float), 600.0, "[limits] ")),
            tolerance=float(get(raw, "tolerance", (int, float), FLOAT_TOLERANCE, "")),
            allow_shared_inputs=get(raw, "allow_shared_inputs", (bool,), False, ""),
            id_field=get(fields, "id", (str,), "id", "[fields] "),
            input_fields=tuple(input_fields),
            label_field=get(fields, "label", (str,), "label", "[fields] "),
            program_dev_fraction=float(
                get(program, "dev_fraction", (int, float), 0.5, "[program] ")
            ),
            program_seed=get(program, "seed", (int,), 0, "[program] "),
            pass_statuses=tuple(str(s) for s in pass_statuses),
            outputs=tuple(outputs),
            max_output_mb=float(get(program, "max_output_mb", (int, float), 64.0, "[program] ")),
            canary=self.canary_spec(raw, kind, get(raw, "direction", (str,), "maximize", "")),
            from_toml=from_toml,
        )
        self.check_choice("direction", config.direction, DIRECTIONS)
        self.check_choice("answer_type", config.answer_type, ANSWER_TYPES)
        if config.parallel < 1:
            self.problem(TASK_TOML, f"[limits] parallel must be at least 1, got {config.parallel}")
        if config.item_timeout_s <= 0:
            self.problem(TASK_TOML, "[limits] item_timeout_s must be positive")
        if not 0.0 < config.program_dev_fraction < 1.0:
            self.problem(TASK_TOML, "[program] dev_fraction must be between 0 and 1")
        if not from_toml:
            self.notes.append(
                "no task.toml: SIA-style folder, defaults used (name = folder name, "
                "direction maximize, whole-run evaluate.py scorer)"
            )
        if kind == "per_item":
            config = self.resolve_split_paths(config, raw, splits_t)
        elif kind == "program":
            splits = {}
            if isinstance(splits_t.get("train"), str):
                splits["train"] = splits_t["train"]
            evaluate = self.find_evaluate(scorer)
            config = attrs.evolve(config, splits=splits, evaluate=evaluate, scorer=evaluate)
        return config

    def canary_spec(self, raw: dict[str, Any], kind: str, direction: str) -> CanarySpec | None:
        if "canary" not in raw:
            return None
        table = self.table(raw, "canary")
        get = self.value
        n = get(table, "n", (int,), 20, "[canary] ")
        labels = get(table, "labels", (list,), [], "[canary] ")
        alpha = float(get(table, "alpha", (int, float), 0.001, "[canary] "))
        inputs = get(table, "inputs", (str,), "dev", "[canary] ")
        bad = []
        if kind != "per_item":
            bad.append("needs a per-item task (a program task's evaluate.py owns its labels)")
        if direction != "maximize":
            bad.append('needs direction = "maximize" (a canary is answered right or not)')
        if not 1 <= n <= 10_000:
            bad.append(f"n must be 1..10000, got {n}")
        if not all(isinstance(v, str) and v for v in labels) or len(set(labels)) < 2:
            bad.append(
                f'labels must be 2 or more distinct strings (e.g. ["A", "B", "C", "D"]), '
                f"got {labels!r}"
            )
        if not 0.0 < alpha < 0.5:
            bad.append(f"alpha must be between 0 and 0.5 (e.g. 0.001), got {alpha}")
        if inputs not in ("dev", "train"):
            bad.append(f'inputs must be "dev" or "train", got {inputs!r}')
        for why in bad:
            self.problem(TASK_TOML, f"[canary] {why}")
        if bad:
            return None
        return CanarySpec(n=n, labels=tuple(str(v) for v in labels), alpha=alpha, inputs=inputs)

    def infer_kind(self, from_toml: bool, scorer: str, splits_t: Mapping[str, Any]) -> str:
        if not from_toml:
            return "program"
        if scorer and ":" not in scorer and Path(scorer).name == "evaluate.py":
            return "program"
        if (
            not scorer
            and not splits_t
            and any((self.root / c).is_file() for c in EVALUATE_CANDIDATES)
        ):
            return "program"
        return "per_item"

    def find_evaluate(self, scorer: str) -> str:
        if scorer:
            if not (self.root / scorer).is_file():
                self.problem(scorer, "missing: the whole-run scorer named by scorer")
            return scorer
        for candidate in EVALUATE_CANDIDATES:
            if (self.root / candidate).is_file():
                return candidate
        self.problem(
            EVALUATE_CANDIDATES[0],
            "missing: a program-style task needs evaluate.py in data/public/ or the task root "
            "(or a task.toml with a per-item scorer)",
        )
        return ""

    def resolve_split_paths(
        self, config: TaskConfig, raw: Mapping[str, Any], splits_t: Mapping[str, Any]
    ) -> TaskConfig:
        labels_t = self.table(raw, "labels")
        splits: dict[str, str] = {}
        for split in SPLITS:
            declared = self.value(splits_t, split, (str,), "", "[splits] ")
            path = declared or self.default_path(PUBLIC_DIR, split)
            if path:
                splits[split] = path
        dev_from_train: DevFromTrain | None = None
        dft_t = self.table(raw, "dev_from_train")
        if "dev" not in splits:
            if "train" in splits:
                dev_from_train = DevFromTrain(
                    fraction=float(
                        self.value(dft_t, "fraction", (int, float), 0.1, "[dev_from_train] ")
                    ),
                    seed=self.value(dft_t, "seed", (int,), 0, "[dev_from_train] "),
                    stratify=self.value(dft_t, "stratify", (bool,), True, "[dev_from_train] "),
                )
                if not 0.0 < dev_from_train.fraction < 1.0:
                    self.problem(TASK_TOML, "[dev_from_train] fraction must be between 0 and 1")
            else:
                self.problem(
                    f"{PUBLIC_DIR}/dev.jsonl",
                    "missing: no dev split and no train split to carve one from",
                )
        elif dft_t:
            self.notes.append("[dev_from_train] ignored: the task ships a dev file")
        if "test" not in splits:
            self.problem(
                f"{PUBLIC_DIR}/test.jsonl", "missing: no test split (declare [splits] test)"
            )
        if "train" not in splits:
            self.notes.append("no train split: nothing for the scaffold to fit on or for RL")
        labels: dict[str, str] = {}
        for split in EVAL_SPLITS:
            if split == "dev" and dev_from_train is not None:
                continue
            declared = self.value(labels_t, split, (str,), "", "[labels] ")
            suffix = Path(splits[split]).suffix if split in splits else ".jsonl"
            path = declared or self.default_path(PRIVATE_DIR, f"{split}_labels", prefer=suffix)
            labels[split] = path or f"{PRIVATE_DIR}/{split}_labels{suffix or '.jsonl'}"
        return attrs.evolve(config, splits=splits, labels=labels, dev_from_train=dev_from_train)

    def default_path(self, folder: str, stem: str, prefer: str = ".jsonl") -> str:
        suffixes = (prefer, *[s for s in SPLIT_SUFFIXES if s != prefer])
        for suffix in suffixes:
            candidate = f"{folder}/{stem}{suffix}"
            if (self.root / candidate).is_file():
                return candidate
        return ""

    # -- scorer --------------------------------------------------------------------------------

    def load_scorer(self, config: TaskConfig) -> None:
        scorer = config.scorer
        if scorer == "exact":
            self.score_item = _exact_scorer(config.answer_type)
        elif scorer == "numeric":
            self.score_item = _numeric_scorer(config.tolerance)
        elif scorer.partition(":")[0].endswith(".py"):
            self.load_custom_scorer(scorer)
        else:
            self.problem(
                TASK_TOML,
                f"unknown scorer {scorer!r}; choose one of: exact, numeric, "
                "or 'file.py:function' for a custom per-item scorer",
            )
        if config.direction == "minimize" and scorer in BUILTIN_SCORERS:
            self.problem(
                TASK_TOML,
                f"direction 'minimize' needs a custom scorer returning a per-item loss; "
                f"the built-in {scorer!r} scores 1 for a correct answer",
            )

    def load_custom_scorer(self, scorer: str) -> None:
        file, _, func = scorer.partition(":")
        func = func or "score_item"
        path = (self.root / file).resolve()
        if not path.is_file():
            self.problem(file, "missing: the custom scorer named in task.toml")
            return
        if _is_under(path, self.root / PUBLIC_DIR):
            self.problem(
                file, "the scorer must live outside data/public (the scaffold can read it)"
            )
        module = self.import_file(path)
        if module is None:
            return
        score_item = getattr(module, func, None)
        if not callable(score_item):
            self.problem(file, f"defines no function {func}(answer, label, item) -> float")
            return
        self.score_item = score_item
        aggregate = getattr(module, "aggregate", None)
        if aggregate is not None and not callable(aggregate):
            self.problem(file, "aggregate is not a function")
        else:
            self.aggregate = aggregate

    def check_declared(self, path: Path, source: str) -> None:
        """A scaffold that declares PARAMS or SEARCH_SPACE must declare them searchably."""
        if not re.search(r"^(PARAMS|SEARCH_SPACE)\s*=", source, re.M):
            return
        try:
            read_declared(source)
        except SpaceError as exc:
            self.problem(path, f"declared parameters: {exc} (see docs/scaffolds.md)")

    def import_file(self, path: Path) -> ModuleType | None:
        name = "_sia_task_scorer_" + hashlib.sha256(str(path).encode()).hexdigest()[:16]
        try:
            source = path.read_bytes()
            compile(source, str(path), "exec")
        except SyntaxError as exc:
            self.problem(path, f"syntax error at line {exc.lineno}: {exc.msg}")
            return None
        except (OSError, ValueError) as exc:
            self.problem(path, f"cannot be read: {exc}")
            return None
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            self.problem(path, "cannot be imported")
            return None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except Exception as exc:  # trusted task code, but a broken file must become a Problem
            sys.modules.pop(name, None)
            self.problem(path, f"importing it raised {type(exc).__name__}: {exc}")
            return None
        return module

    def check_program(self, config: TaskConfig) -> None:
        if not (self.root / PRIVATE_DIR).is_dir():
            self.notes.append(f"no {PRIVATE_DIR}/: evaluate.py has no private labels to read")
        if config.evaluate.startswith(PUBLIC_DIR + "/"):
            self.notes.append(
                f"{config.evaluate} sits in data/public, which the scaffold can read; it must "
                "hold no labels itself"
            )
        self.notes.append(
            f"whole-run scorer {config.evaluate or 'evaluate.py'}: dev/test are carved by a "
            f"seeded hash of the ids in results.json items[] (dev fraction "
            f"{config.program_dev_fraction:g}, seed {config.program_seed}); without items[] "
            "decisions and reported scores use the same items"
        )

    # -- splits --------------------------------------------------------------------------------

    def load_splits(self, config: TaskConfig, only: tuple[str, ...] = SPLITS) -> None:
        private = self.root / PRIVATE_DIR
        if config.labels and not private.is_dir():
            self.problem(
                PRIVATE_DIR,
                "missing: dev/test labels are declared there ("
                + ", ".join(config.labels[s] for s in sorted(config.labels))
                + ")",
            )
        for split in only:
            if split not in config.splits:
                continue
            rel = config.splits[split]
            path = self.root / rel
            if not path.is_file():
                self.problem(rel, f"split file missing ({split})")
                continue
            raw_rows = self.read_rows(path, required=(config.id_field,))
            if raw_rows is None:
                continue
            with_label = split == "train"
            if split in EVAL_SPLITS:
                carrying = [line for line, row in raw_rows if config.label_field in row]
                if carrying:
                    self.problem(
                        rel,
                        f"carries a {config.label_field!r} field ({len(carrying)} rows, first at "
                        f"line {carrying[0]}); {split} labels belong in {PRIVATE_DIR}/",
                    )
            self.rows[split] = self.to_rows(raw_rows, rel, config, with_label)
        if config.dev_from_train is not None and "train" in self.rows and "dev" in only:
            dft = config.dev_from_train
            train, dev = carve_dev(self.rows["train"], dft.fraction, dft.seed, dft.stratify)
            self.rows["train"], self.rows["dev"] = train, dev
            self.labels["dev"] = {r.id: r.label for r in dev}
            how = ", stratified by label" if dft.stratify else ""
            self.notes.append(
                f"no dev split declared: carved {dft.fraction:.0%} of train ({len(dev)} items) "
                f"with seed {dft.seed}{how}; {config.splits['train']} still shows their labels "
                "to a scaffold that reads it directly, so ship a dev file for a sealed dev split"
            )
        if "train" in self.rows:
            self.labels["train"] = {r.id: r.label for r in self.rows["train"]}
        for split in EVAL_SPLITS:
            if split in only and split in config.labels and split in self.rows:
                self.load_labels(split, config)
        self.check_ids_and_inputs(config)
        self.check_label_values(config)

    def read_rows(
        self, path: Path, required: tuple[str, ...]
    ) -> list[tuple[int, dict[str, Any]]] | None:
        """Rows as (line number, mapping); ``None`` (with a problem) if unreadable."""
        try:
            text = path.read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError) as exc:
            self.problem(path, f"cannot be read as UTF-8 text: {exc}")
            return None
        rows: list[tuple[int, dict[str, Any]]] = []
        suffix = path.suffix.lower()
        if suffix == ".csv":
            reader = csv.DictReader(io.StringIO(text, newline=""))
            header = reader.fieldnames or []
            missing = [col for col in required if col not in header]
            if missing:
                self.problem(
                    path,
                    f"no {', '.join(repr(c) for c in missing)} column "
                    f"(columns: {', '.join(header) or 'none'})",
                )
                return None
            try:
                for row in reader:
                    rows.append((reader.line_num, {k: v for k, v in row.items() if k is not None}))
            except csv.Error as exc:
                self.problem(path, f"line {reader.line_num}: malformed CSV: {exc}")
                return None
        elif suffix == ".json":
            try:
                data = json.loads(text)
            except ValueError as exc:
                self.problem(path, f"not valid JSON: {exc}")
                return None
            if not isinstance(data, list):
                self.problem(path, "a .json split must hold a list of objects")
                return None
            for index, row in enumerate(data):
                if isinstance(row, dict):
                    rows.append((index + 1, row))
                else:
                    self.problem(path, f"entry {index + 1}: expected a JSON object")
        else:
            for number, line in enumerate(text.splitlines(), start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except ValueError as exc:
                    self.problem(path, f"line {number}: not valid JSON ({exc})")
                    continue
                if not isinstance(row, dict):
                    self.problem(path, f"line {number}: expected a JSON object")
                    continue
                rows.append((number, row))
        where = "entry" if suffix == ".json" else "line"
        good = []
        for number, row in rows:
            absent = [f for f in required if f not in row or row[f] in (None, "")]
            if absent:
                self.problem(path, f"{where} {number}: no {absent[0]!r} field")
            else:
                good.append((number, row))
        return good

    def to_rows(
        self,
        raw_rows: list[tuple[int, dict[str, Any]]],
        rel: str,
        config: TaskConfig,
        with_label: bool,
    ) -> list[_Row]:
        out: list[_Row] = []
        seen: dict[str, int] = {}
        duplicates: list[str] = []
        missing_input: list[int] = []
        missing_label: list[int] = []
        for number, row in raw_rows:
            item_id = str(row[config.id_field])
            if item_id in seen:
                duplicates.append(item_id)
                continue
            seen[item_id] = number
            absent = [f for f in config.input_fields if f not in row]
            if absent:
                missing_input.append(number)
                continue
            if len(config.input_fields) == 1:
                value = row[config.input_fields[0]]
            else:
                value = {f: row[f] for f in config.input_fields}
            label = None
            if with_label:
                if config.label_field not in row:
                    missing_label.append(number)
                    continue
                label = row[config.label_field]
            out.append(_Row(id=item_id, input=value, label=label))
        if duplicates:
            self.problem(rel, f"{len(duplicates)} duplicate ids: {_few(duplicates)}")
        if missing_input:
            fields = ", ".join(repr(f) for f in config.input_fields)
            self.problem(
                rel,
                f"{len(missing_input)} rows lack input field(s) {fields} "
                f"(first at line {missing_input[0]})",
            )
        if missing_label:
            self.problem(
                rel,
                f"{len(missing_label)} train rows have no {config.label_field!r} "
                f"(first at line {missing_label[0]})",
            )
        return out

    def load_labels(self, split: str, config: TaskConfig) -> None:
        rel = config.labels[split]
        path = self.root / rel
        if _is_under(path, self.root / PUBLIC_DIR):
            self.problem(rel, "a labels file under data/public: the scaffold can read it")
        if not path.is_file():
            self.problem(rel, f"missing: the {split} labels")
            return
        raw_rows = self.read_rows(path, required=(config.id_field,))
        if raw_rows is None:
            return
        labels: dict[str, Any] = {}
        no_label: list[int] = []
        for number, row in raw_rows:
            if config.label_field not in row:
                no_label.append(number)
                continue
            labels[str(row[config.id_field])] = row[config.label_field]
        if no_label:
            self.problem(
                rel,
                f"{len(no_label)} rows have no {config.label_field!r} (first at line {no_label[0]})",
            )
        unlabelled = [r.id for r in self.rows[split] if r.id not in labels]
        if unlabelled:
            self.problem(rel, f"{len(unlabelled)} {split} items have no label: {_few(unlabelled)}")
        self.labels[split] = labels

    def check_ids_and_inputs(self, config: TaskConfig) -> None:
        present = [s for s in SPLITS if s in self.rows]
        for i, first in enumerate(present):
            for second in present[i + 1 :]:
                file = self.split_file(second, config)
                ids = {r.id for r in self.rows[first]}
                shared = [r.id for r in self.rows[second] if r.id in ids]
                if shared:
                    self.problem(
                        file,
                        f"{len(shared)} ids also in {first} "
                        f"({self.split_file(first, config)}): {_few(shared)}",
                    )
                inputs = {_input_key(r.input) for r in self.rows[first]}
                same = [r.id for r in self.rows[second] if _input_key(r.input) in inputs]
                if same:
                    message = (
                        f"{len(same)} items have an input identical to one in {first}: {_few(same)}"
                    )
                    if config.allow_shared_inputs:
                        self.notes.append(f"{file}: {message} (allowed by allow_shared_inputs)")
                    else:
                        self.problem(file, message + " (set allow_shared_inputs = true to accept)")

    def split_file(self, split: str, config: TaskConfig) -> str:
        if split == "dev" and config.dev_from_train is not None:
            return config.splits.get("train", "train")
        return config.splits.get(split, split)

    def check_label_values(self, config: TaskConfig) -> None:
        if config.scorer not in BUILTIN_SCORERS:
            return
        answer_type = "float" if config.scorer == "numeric" else config.answer_type
        if answer_type not in ANSWER_TYPES:
            return
        for split, labels in self.labels.items():
            bad = [i for i, label in labels.items() if normalize(label, answer_type) is None]
            if bad:
                file = config.labels.get(split) or self.split_file(split, config)
                self.problem(
                    file, f"{len(bad)} {split} labels are not valid {answer_type}: {_few(bad)}"
                )

    # -- leak scan -----------------------------------------------------------------------------

    def scan_public(self) -> None:
        self.problems.extend(scan_public_for_labels(self.root))


def _few(ids: list[str]) -> str:
    shown = ", ".join(ids[:_FIRST_FEW])
    return shown + (", ..." if len(ids) > _FIRST_FEW else "")


def _input_key(value: Any) -> str:
    if isinstance(value, str):
        return _WS_RE.sub(" ", value).strip()
    try:
        return _canonical_json(value)
    except (TypeError, ValueError):
        return repr(value)


def _is_under(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
    except ValueError:
        return False
    return True


_SCAN_MAX_BYTES = 64 * 1024 * 1024
_MIN_LEAK_LINE = 8


def scan_public_for_labels(root: Path) -> list[Problem]:
    """Files under ``data/public`` that hold or look like private labels.

    Flags any file whose name contains "label", anything inside a folder named "private", a file
    identical to one in ``data/private``, and a file containing a whole line of a private file.
    """
    public, private = root / PUBLIC_DIR, root / PRIVATE_DIR
    problems: list[Problem] = []
    if not public.is_dir():
        return problems

    def rel(path: Path) -> str:
        return path.relative_to(root).as_posix()

    private_digests: dict[str, str] = {}
    private_lines: dict[str, str] = {}
    if private.is_dir():
        for path in sorted(p for p in private.rglob("*") if p.is_file()):
            if path.stat().st_size > _SCAN_MAX_BYTES:
                continue
            data = path.read_bytes()
            private_digests[hashlib.sha256(data).hexdigest()] = rel(path)
            lines = data.decode("utf-8", errors="replace").splitlines()
            if path.suffix.lower() == ".csv":
                lines = lines[1:]  # a header is not a label
            for line in lines:
                line = line.strip()
                if len(line) >= _MIN_LEAK_LINE:
                    private_lines.setdefault(line, rel(path))
    for path in sorted(p for p in public.rglob("*") if p.is_file()):
        parts = path.relative_to(public).parts
        name = path.name.lower()
        if "label" in name:
            problems.append(
                Problem(
                    file=rel(path),
                    message="looks like a labels file under data/public, where the scaffold can "
                    "read it; move it to data/private",
                )
            )
            continue
        if any(part.lower() == "private" for part in parts[:-1]):
            problems.append(
                Problem(
                    file=rel(path),
                    message="a 'private' folder under data/public is readable by the scaffold; "
                    "move it to data/private",
                )
            )
            continue
        if path.stat().st_size > _SCAN_MAX_BYTES:
            continue
        data = path.read_bytes()
        twin = private_digests.get(hashlib.sha256(data).hexdigest())
        if twin:
            problems.append(Problem(file=rel(path), message=f"is a copy of the private {twin}"))
            continue
        for number, line in enumerate(data.decode("utf-8", errors="replace").splitlines(), 1):
            source = private_lines.get(line.strip())
            if source:
                problems.append(
                    Problem(
                        file=rel(path),
                        message=f"line {number} is a line of the private {source}",
                    )
                )
                break
    return problems


def validate_task(path: str | Path) -> list[Problem]:
    """Every problem with the task directory at ``path``; an empty list means it is valid."""
    loader = _Loader(path)
    try:
        loader.run()
    except Exception as exc:  # bad input must be reported, never a traceback
        loader.problem(".", f"could not be checked: {type(exc).__name__}: {exc}")
    return loader.problems


def load_task(path: str | Path) -> Task:
    """Load and validate a task directory; raises :class:`TaskError` listing every problem."""
    loader = _Loader(path)
    try:
        loader.run()
    except Exception as exc:
        loader.problem(".", f"could not be checked: {type(exc).__name__}: {exc}")
    if loader.problems or loader.config is None:
        raise TaskError(loader.root.name, [str(p) for p in loader.problems])
    return Task(
        root=loader.root,
        config=loader.config,
        task_md=loader.task_md,
        reference_scaffold=loader.reference,
        sample_task_descriptions=loader.sample_descriptions,
        notes=loader.notes,
        rows=loader.rows,
        labels=loader.labels,
        score_item=loader.score_item,
        aggregate=loader.aggregate,
    )
