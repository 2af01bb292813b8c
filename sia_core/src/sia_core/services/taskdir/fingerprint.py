"""Tamper detection: a hash of every file a task's score depends on
(:meth:`Fingerprinting.fingerprint`) and the files that differ between two
(:func:`fingerprint_changes`)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from pathlib import Path

from sia_core.services.taskdir.layout import BUILTIN_SCORERS, TASK_TOML
from sia_core.services.taskdir.task_core import TaskCore


class Fingerprinting(TaskCore):
    """The task's file fingerprint, to notice a run changing its own task."""

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


def fingerprint_changes(before: Mapping[str, str], after: Mapping[str, str]) -> list[str]:
    """The task files that differ between two :meth:`Task.fingerprint` results, sorted."""
    return sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))


def tampered(
    task: Fingerprinting, before_run: Mapping[str, str] | None, at_start: Mapping[str, str] | None
) -> str:
    """Why a generation's score cannot be trusted because the task's files changed, or ``""``:
    changed while it ran (``before_run``: the fingerprint taken before its run step), or, for a
    program task whose ``evaluate.py`` runs from disk at every score, since the run started
    (``at_start``)."""
    now = task.fingerprint()
    changed: set[str] = set()
    if before_run is not None:
        changed.update(fingerprint_changes(before_run, now))
    if task.config.kind == "program" and at_start is not None:
        changed.update(fingerprint_changes(at_start, now))
    if not changed:
        return ""
    few = ", ".join(sorted(changed)[:5]) + (" ..." if len(changed) > 5 else "")
    return (
        f"the task's files changed while it ran ({few}): its score cannot be trusted; "
        "restore them from a clean copy of the task"
    )
