"""The leak scan: files under ``data/public`` that hold or look like private labels
(:func:`scan_public_for_labels`)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from sia_core.services.taskdir.layout import PRIVATE_DIR, PUBLIC_DIR
from sia_core.services.taskdir.records import Problem

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
