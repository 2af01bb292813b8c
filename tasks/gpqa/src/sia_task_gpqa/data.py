"""GPQA data: read the user's file, check it, shuffle options, split, build the task folder.

sia ships no GPQA content: its authors ask that examples never appear in plain text online. The
user names their copy with ``SIA_GPQA_DATA=/path/to/file``, either

- the official CSV (``gpqa_diamond.csv`` from the password-protected ``dataset.zip`` at
  github.com/idavidrein/gpqa, or the gated Hugging Face dataset ``Idavidrein/gpqa``): columns
  ``Question``, ``Correct Answer``, ``Incorrect Answer 1..3``, ``Record ID``, ``High-level
  domain``, ``Subdomain``, ``Explanation`` (others are ignored), or
- SIA-style JSON: a list of ``{id, domain, subdomain, Question, options{A..D},
  correct_answer_letter, Explanation}``.

:func:`task_path` turns that file into a sia task folder in the user's cache (once per file
content and package version) and returns it; without a usable file it returns the package's
``unavailable/gpqa`` folder, whose scorer fails to import with :func:`unavailable_reason`, so
loading the task fails with one message saying what to provide.

No checksum of the official files is published, so a file is verified by structure: every row
has a question, four options and a unique id, and a file whose name contains "diamond" must
hold GPQA Diamond's 198 questions. The built task records the file's sha256 in ``task.md``.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import math
import os
import random
import shutil
import tempfile
from importlib import resources
from pathlib import Path
from typing import Any

__all__ = [
    "ENV_VAR",
    "GPQADataUnavailable",
    "Question",
    "build_task",
    "read_questions",
    "split_of",
    "task_path",
    "unavailable_reason",
]

ENV_VAR = "SIA_GPQA_DATA"
DIAMOND_SIZE = 198
LETTERS = ("A", "B", "C", "D")
FORMAT_VERSION = "1"  # bump when the built folder's layout changes
WHERE = (
    "the official gpqa_diamond.csv is in the password-protected dataset.zip at "
    "https://github.com/idavidrein/gpqa and in the gated Hugging Face dataset Idavidrein/gpqa; "
    "sia ships no GPQA questions"
)
CSV_COLUMNS = (
    "Question",
    "Correct Answer",
    "Incorrect Answer 1",
    "Incorrect Answer 2",
    "Incorrect Answer 3",
)
JSON_KEYS = ("id", "Question", "options", "correct_answer_letter")


class GPQADataUnavailable(Exception):
    """The GPQA data file is missing or unusable; the message says what to provide."""


@dataclasses.dataclass(frozen=True)
class Question:
    """One multiple-choice question, options already in their A-D order."""

    id: str
    question: str
    options: tuple[str, str, str, str]
    answer: str  # the correct letter
    domain: str = ""
    subdomain: str = ""
    explanation: str = ""


# -- reading -------------------------------------------------------------------------------------


def shuffled_options(item_id: str, correct: str, incorrect: list[str]) -> tuple[list[str], str]:
    """Options in an order fixed by the item id (not by row order or run), and the right letter.

    The official CSV lists the correct answer first; this order is what the model sees.
    """
    seed = int(hashlib.sha256(f"sia-gpqa-options:{item_id}".encode()).hexdigest()[:16], 16)
    order = [0, 1, 2, 3]
    random.Random(seed).shuffle(order)
    texts = [correct, *incorrect]
    return [texts[k] for k in order], LETTERS[order.index(0)]


def _clean(value: Any) -> str:
    return str(value if value is not None else "").strip()


def _read_csv(text: str, name: str) -> list[Question]:
    reader = csv.DictReader(io.StringIO(text, newline=""))
    header = reader.fieldnames or []
    missing = [c for c in CSV_COLUMNS if c not in header]
    if missing:
        raise GPQADataUnavailable(
            f"{name}: not a GPQA CSV (no column {', '.join(repr(c) for c in missing)})"
        )
    out = []
    for number, row in enumerate(reader, start=2):
        item_id = _clean(row.get("Record ID")) or f"row-{number}"
        texts = [_clean(row[c]) for c in CSV_COLUMNS]
        if not all(texts):
            raise GPQADataUnavailable(f"{name}: line {number} has an empty question or option")
        options, answer = shuffled_options(item_id, texts[1], texts[2:])
        out.append(
            Question(
                id=item_id,
                question=texts[0],
                options=(options[0], options[1], options[2], options[3]),
                answer=answer,
                domain=_clean(row.get("High-level domain")),
                subdomain=_clean(row.get("Subdomain")),
                explanation=_clean(row.get("Explanation")),
            )
        )
    return out


def _read_json(text: str, name: str) -> list[Question]:
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise GPQADataUnavailable(f"{name}: not valid JSON ({exc})") from None
    if isinstance(data, dict) and isinstance(data.get("questions"), list):
        data = data["questions"]
    if not isinstance(data, list):
        raise GPQADataUnavailable(f"{name}: expected a JSON list of question records")
    out = []
    for index, rec in enumerate(data, start=1):
        absent = [k for k in JSON_KEYS if not isinstance(rec, dict) or k not in rec]
        if absent:
            raise GPQADataUnavailable(f"{name}: record {index} has no {absent[0]!r}")
        options = rec["options"]
        letter = _clean(rec["correct_answer_letter"]).upper()
        if not isinstance(options, dict) or any(not _clean(options.get(k)) for k in LETTERS):
            raise GPQADataUnavailable(f"{name}: record {index}: options must have A, B, C and D")
        if letter not in LETTERS or not _clean(rec["Question"]):
            raise GPQADataUnavailable(
                f"{name}: record {index}: no question or no A-D answer letter"
            )
        out.append(
            Question(
                id=_clean(rec["id"]),
                question=_clean(rec["Question"]),
                options=(
                    _clean(options["A"]),
                    _clean(options["B"]),
                    _clean(options["C"]),
                    _clean(options["D"]),
                ),
                answer=letter,
                domain=_clean(rec.get("domain")),
                subdomain=_clean(rec.get("subdomain")),
                explanation=_clean(rec.get("Explanation")),
            )
        )
    return out


def read_questions(path: str | Path) -> list[Question]:
    """The questions in a GPQA CSV or SIA-style JSON file; :class:`GPQADataUnavailable` if unusable."""
    path = Path(path).expanduser()
    name = f"{ENV_VAR}={path}"
    if not path.is_file():
        raise GPQADataUnavailable(f"{name}: no such file ({WHERE})")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise GPQADataUnavailable(f"{name}: cannot be read as UTF-8 text ({exc})") from None
    suffix = path.suffix.lower()
    if suffix == ".csv":
        questions = _read_csv(text, name)
    elif suffix == ".json":
        questions = _read_json(text, name)
    else:
        raise GPQADataUnavailable(
            f"{name}: expected a .csv (official GPQA) or .json (SIA-style) file"
        )
    if not questions:
        raise GPQADataUnavailable(f"{name}: holds no questions")
    seen: set[str] = set()
    for q in questions:
        if q.id in seen:
            raise GPQADataUnavailable(f"{name}: duplicate id {q.id!r}")
        seen.add(q.id)
    if "diamond" in path.name.lower() and len(questions) != DIAMOND_SIZE:
        raise GPQADataUnavailable(
            f"{name}: {len(questions)} questions, but GPQA Diamond has {DIAMOND_SIZE}; "
            "is it the complete gpqa_diamond.csv?"
        )
    return questions


# -- splitting and building ----------------------------------------------------------------------


def split_of(questions: list[Question]) -> dict[str, list[Question]]:
    """test = half (rounded up), dev = half of the rest (rounded up), train = the remainder.

    Items are ordered by a hash of their id, so an item's split does not depend on the file's
    row order and is the same on every machine (198 -> test 99, dev 50, train 49).
    """
    ordered = sorted(
        questions, key=lambda q: hashlib.sha256(f"sia-gpqa-split:{q.id}".encode()).hexdigest()
    )
    n_test = math.ceil(len(ordered) / 2)
    n_dev = math.ceil((len(ordered) - n_test) / 2)
    return {
        "test": ordered[:n_test],
        "dev": ordered[n_test : n_test + n_dev],
        "train": ordered[n_test + n_dev :],
    }


def _input(q: Question) -> dict[str, Any]:
    return {
        "question": q.question,
        "options": dict(zip(LETTERS, q.options, strict=True)),
        "domain": q.domain,
        "subdomain": q.subdomain,
    }


def _jsonl(rows: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def _template_dir() -> Path:
    return Path(str(resources.files("sia_task_gpqa") / "template"))


def _fingerprint(data: bytes) -> str:
    """Identifies a built folder: the data file's bytes, the template and the format version."""
    digest = hashlib.sha256(data)
    template = _template_dir()
    for path in sorted(
        p for p in template.rglob("*") if p.is_file() and "__pycache__" not in p.parts
    ):
        digest.update(path.relative_to(template).as_posix().encode())
        digest.update(path.read_bytes())
    digest.update(FORMAT_VERSION.encode())
    return digest.hexdigest()[:20]


def build_task(source: str | Path, dest: Path) -> Path:
    """Write a complete gpqa task folder for ``source`` at ``dest`` (which must not exist)."""
    source = Path(source).expanduser()
    questions = read_questions(source)
    sha256 = hashlib.sha256(source.read_bytes()).hexdigest()
    splits = split_of(questions)
    shutil.copytree(_template_dir(), dest, ignore=shutil.ignore_patterns("__pycache__"))
    public, private = dest / "data" / "public", dest / "data" / "private"
    private.mkdir(parents=True, exist_ok=True)
    train_rows = [
        {"id": q.id, **_input(q), "label": q.answer, "explanation": q.explanation}
        for q in splits["train"]
    ]
    (public / "train.jsonl").write_text(_jsonl(train_rows), encoding="utf-8")
    for split in ("dev", "test"):
        rows = [{"id": q.id, **_input(q)} for q in splits[split]]
        labels = [{"id": q.id, "label": q.answer} for q in splits[split]]
        (public / f"{split}.jsonl").write_text(_jsonl(rows), encoding="utf-8")
        (private / f"{split}_labels.jsonl").write_text(_jsonl(labels), encoding="utf-8")
    diamond = len(questions) == DIAMOND_SIZE
    verified = (
        f"{DIAMOND_SIZE} questions, as GPQA Diamond has (checked by structure: no official "
        "checksum is published)"
        if diamond
        else f"{len(questions)} questions (not GPQA Diamond's {DIAMOND_SIZE})"
    )
    sizes = ", ".join(f"{s} {len(splits[s])}" for s in ("train", "dev", "test"))
    task_md = public / "task.md"
    task_md.write_text(
        task_md.read_text(encoding="utf-8")
        + f"\n## This copy\n\nBuilt from a file with sha256 `{sha256}`: {verified}. "
        f"Splits: {sizes}.\n",
        encoding="utf-8",
    )
    return dest


def _cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "sia" / "gpqa"


_last_build_error = ""


def unavailable_reason() -> str:
    """Why the gpqa task cannot be built now, in one line ("" when it can)."""
    setting = os.environ.get(ENV_VAR, "").strip()
    if not setting:
        return f"GPQA data not provided: set {ENV_VAR}=/path/to/gpqa_diamond.csv ({WHERE})"
    try:
        read_questions(setting)
    except GPQADataUnavailable as exc:
        return str(exc)
    return _last_build_error


def unavailable_dir() -> Path:
    """The placeholder task folder used when no usable data file is set."""
    return Path(str(resources.files("sia_task_gpqa") / "unavailable" / "gpqa"))


def task_path() -> Path:
    """The gpqa task folder: built (once) in the cache from ``SIA_GPQA_DATA``, else the
    placeholder. Never raises: ``sia tasks`` and other tasks must keep working."""
    setting = os.environ.get(ENV_VAR, "").strip()
    if not setting:
        return unavailable_dir()
    source = Path(setting).expanduser()
    try:
        data = source.read_bytes()
        target = _cache_root() / _fingerprint(data) / "gpqa"
        if (target / ".complete").is_file():
            return target
        target.parent.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".build-", dir=target.parent.parent))
        try:
            build_task(source, staging / "gpqa")
            (staging / "gpqa" / ".complete").write_text(str(source) + "\n", encoding="utf-8")
            try:
                staging.rename(target.parent)
            except OSError:  # another process built it first
                if not (target / ".complete").is_file():
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return target
    except (GPQADataUnavailable, OSError) as exc:
        global _last_build_error
        _last_build_error = (
            f"could not build the gpqa task folder under {_cache_root()} "
            f"({type(exc).__name__}: {exc}); set XDG_CACHE_HOME to a writable folder"
        )
        return unavailable_dir()
