"""The leak scan: files under ``data/public`` that give away private labels
(:func:`scan_public_for_labels`).

A leak is a private label that a public file pairs with its item's id, more often than chance
explains. Files that hold records (CSV, JSON, JSON lines) are read as ``id -> fields``; a
private field is a *label* unless the public data carries it for the same ids (then it is an
input, like a question's text); a public file leaks when it pairs the ids with their labels (or
with whole private rows) so often that a one-sided binomial test against the labels' own
frequencies rejects chance. So a sample submission that predicts one class everywhere, a header,
or a line that happens to equal a private line, passes; a copy of the labels next to their ids
does not. Files that hold no records (text, code) are checked line by line against the private
files.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sia_core.services.canary import binomial_tail
from sia_core.services.taskdir.layout import PRIVATE_DIR, PUBLIC_DIR
from sia_core.services.taskdir.records import Problem

_SCAN_MAX_BYTES = 64 * 1024 * 1024
_MIN_LEAK_LINE = 8
#: a pairing this unlikely by chance is a leak (with at least _MIN_HITS pairs)
_ALPHA = 1e-3
_MIN_HITS = 3
#: a public field equal to a private one on this share of the ids carries it (an input)
_CARRIED = 0.9
#: a leak pairs at least this share of the ids with their label (a predictive feature does less)
_SHARE = 0.95
#: ids a pairing is first tried on
_SAMPLE = 200

Records = dict[str, dict[str, str]]


def _norm(value: Any) -> str:
    if isinstance(value, str):
        return value.strip()
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


def _id_key(keys: list[str]) -> str | None:
    for key in keys:
        if key.lower() == "id":
            return key
    return next((k for k in keys if k.lower().endswith("id")), None)


def _rows(rows: list[Any]) -> Records | None:
    dicts = [r for r in rows if isinstance(r, dict)]
    if not dicts or len(dicts) < len(rows):
        return None
    key = _id_key(list(dicts[0]))
    if key is None:
        return None
    return {
        _norm(r[key]): {k: _norm(v) for k, v in r.items() if k != key} for r in dicts if key in r
    }


def read_records(path: Path, data: bytes) -> Records | None:
    """``id -> {field: value}`` of a CSV/TSV, JSON or JSON-lines file; None if it holds none."""
    text = data.decode("utf-8", errors="replace")
    suffix = path.suffix.lower()
    try:
        if suffix in (".csv", ".tsv"):
            reader = csv.DictReader(io.StringIO(text), delimiter="\t" if suffix == ".tsv" else ",")
            fields = list(reader.fieldnames or [])
            key = _id_key(fields) or (fields[0] if fields else None)
            if key is None:
                return None
            return {
                _norm(r[key]): {k: _norm(v) for k, v in r.items() if k != key and k is not None}
                for r in reader
                if r.get(key) is not None
            }
        if suffix == ".json":
            doc = json.loads(text)
            if isinstance(doc, list):
                return _rows(doc)
            if isinstance(doc, dict) and doc:
                if all(isinstance(v, dict) for v in doc.values()):
                    return {str(k): {f: _norm(x) for f, x in v.items()} for k, v in doc.items()}
                return {str(k): {"value": _norm(v)} for k, v in doc.items()}
        if suffix == ".jsonl":
            return _rows([json.loads(line) for line in text.splitlines() if line.strip()])
    except (ValueError, csv.Error):
        return None
    return None


def _carried(public: Records, private: Records) -> set[str]:
    """Private fields ``public`` repeats for (nearly) every id they share: inputs, not labels."""
    shared = [i for i in private if i in public]
    if not shared:
        return set()
    fields = {f for i in shared for f in private[i]}
    return {
        f
        for f in fields
        if sum(private[i].get(f) == public[i].get(f) for i in shared) >= _CARRIED * len(shared)
    }


def _pairing(
    public: Records, private: Records, pairs: list[tuple[str, str]]
) -> tuple[int, int, float, str | None, int]:
    """How often ``public`` field ``g`` holds the private ``f`` of the same id, for every
    ``(f, g)`` of ``pairs`` at once: hits, ids shared, hits expected by chance (the private
    values' own frequencies), the first id hit, distinct values hit. A pairing that already
    misses on a sample of the ids is not looked at further (large tasks stay fast)."""
    shared = [i for i in private if i in public and all(g in public[i] for _, g in pairs)]
    sample = shared[:: max(1, len(shared) // _SAMPLE)]
    agree = sum(all(private[i].get(f) == public[i][g] for f, g in pairs) for i in sample)
    if agree < 0.8 * len(sample):  # well below _SHARE: no full count needed
        return 0, len(shared), 0.0, None, 0
    freq = {f: Counter(row.get(f) for row in private.values()) for f, _ in pairs}
    total = len(private)
    hits, expected, first, values = 0, 0.0, None, set()
    for i in shared:
        chance = 1.0
        for f, g in pairs:
            chance *= freq[f][public[i][g]] / total
        expected += chance
        if all(private[i].get(f) == public[i][g] for f, g in pairs):
            hits += 1
            first = first if first is not None else i
            values.add(tuple(private[i].get(f) for f, _ in pairs))
    return hits, len(shared), expected, first, len(values)


def _line_of(data: bytes, item_id: str, value: str) -> int:
    """The first line holding ``item_id`` as a field and ``value`` (a CSV row), else the first
    holding ``value``."""
    lines = data.decode("utf-8", errors="replace").splitlines()
    for number, line in enumerate(lines, 1):
        if value and value in line and item_id in re.split(r"[\s,;:\t\"'\[\]{}]+", line):
            return number
    return next((n for n, line in enumerate(lines, 1) if value and value in line), 1)


def _inputs(labels: Records, public_all: list[Records]) -> set[str]:
    """A private file's inputs: the fields some public file repeats for the same ids (the one
    that repeats most). A file that repeats them all, labels included, is caught by the
    whole-row check of :func:`_record_leaks`."""
    carried: set[str] = set()
    for other in public_all:
        inputs = _carried(other, labels)
        carried = inputs if len(inputs) > len(carried) else carried
    return carried


def _record_leaks(
    data: bytes,
    records: Records,
    private: Mapping[str, tuple[Records, set[str]]],
) -> str:
    """Why the public file (``records``) leaks a private file's labels, or ``""``;
    ``private``: each private file's records and inputs."""
    for source, (labels, carried) in private.items():
        if not any(i in records for i in labels):
            continue
        fields = sorted({f for row in labels.values() for f in row})
        names = sorted({g for row in records.values() for g in row})
        # each label against each public field (a leak may rename its column), and whole rows
        checks = [[(f, g)] for f in fields if f not in carried for g in names]
        if set(fields) <= set(names):
            checks.append([(f, f) for f in fields])
        for pairs in checks:
            hits, n, expected, first, distinct = _pairing(records, labels, pairs)
            if hits < _MIN_HITS or hits < _SHARE * n:
                continue  # a feature that predicts the label well is not a leak
            p = binomial_tail(n, hits, min(1.0, expected / n))
            if p < _ALPHA or (hits == n and distinct >= 2):
                what = f"`{pairs[0][0]}`" if len(pairs) == 1 else "rows"
                line = _line_of(data, first or "", labels[first][pairs[-1][0]] if first else "")
                return (
                    f"pairs {hits} of {n} item ids with their private {what} from {source} "
                    f"(chance would give about {expected:.0f}), e.g. line {line}: a scaffold can "
                    "read it; move it to data/private"
                )
    return ""


def scan_public_for_labels(root: Path) -> list[Problem]:
    """Files under ``data/public`` that hold or give away private labels.

    Flags any file whose name contains "label", anything inside a folder named "private", a file
    identical to one in ``data/private``, a file pairing item ids with their private labels
    beyond chance (see the module docstring), and a file without records (text, code) holding a
    whole line of a private file.
    """
    public, private = root / PUBLIC_DIR, root / PRIVATE_DIR
    problems: list[Problem] = []
    if not public.is_dir():
        return problems

    def rel(path: Path) -> str:
        return path.relative_to(root).as_posix()

    def small_files(folder: Path) -> list[Path]:
        if not folder.is_dir():
            return []
        files = sorted(p for p in folder.rglob("*") if p.is_file() and not p.is_symlink())
        return [p for p in files if p.stat().st_size <= _SCAN_MAX_BYTES]

    private_digests: dict[str, str] = {}
    private_records: dict[str, Records] = {}
    private_lines: dict[str, str] = {}
    for path in small_files(private):
        data = path.read_bytes()
        private_digests[hashlib.sha256(data).hexdigest()] = rel(path)
        records = read_records(path, data)
        if records:
            private_records[rel(path)] = records
        lines = data.decode("utf-8", errors="replace").splitlines()
        for line in lines[1:] if path.suffix.lower() in (".csv", ".tsv") else lines:
            if len(line.strip()) >= _MIN_LEAK_LINE:  # a header is not a label
                private_lines.setdefault(line.strip(), rel(path))
    public_files = small_files(public)
    public_data = {p: p.read_bytes() for p in public_files}
    public_records = {p: read_records(p, d) for p, d in public_data.items()}
    all_public = [r for r in public_records.values() if r]
    private_inputs = {
        s: (labels, _inputs(labels, all_public)) for s, labels in private_records.items()
    }
    for path in public_files:
        parts = path.relative_to(public).parts
        if "label" in path.name.lower():
            message = (
                "looks like a labels file under data/public, where the scaffold can read it; "
                "move it to data/private"
            )
        elif any(part.lower() == "private" for part in parts[:-1]):
            message = (
                "a 'private' folder under data/public is readable by the scaffold; move it to "
                "data/private"
            )
        elif twin := private_digests.get(hashlib.sha256(public_data[path]).hexdigest()):
            message = f"is a copy of the private {twin}"
        elif records := public_records[path]:
            message = _record_leaks(public_data[path], records, private_inputs)
        else:
            message = _line_leak(public_data[path], private_lines)
        if message:
            problems.append(Problem(file=rel(path), message=message))
    return problems


def _line_leak(data: bytes, private_lines: Mapping[str, str]) -> str:
    for number, line in enumerate(data.decode("utf-8", errors="replace").splitlines(), 1):
        source = private_lines.get(line.strip())
        if source:
            return f"line {number} is a line of the private {source}"
    return ""
