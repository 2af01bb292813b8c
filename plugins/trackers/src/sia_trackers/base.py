"""What every tracker shares: the backend protocol, the opt-in rules (``SIA_TRACKERS``), and
reading the run folder (events, JSON files, nested numbers and params)."""

from __future__ import annotations

import importlib.metadata as md
import importlib.util
import json
import os
import re
import sys
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol

import attrs

from sia_core import PROJECT

ENV = "SIA_TRACKERS"
STATE_DIR = "trackers"
_warned: set[str] = set()


@attrs.frozen(kw_only=True)
class TrackedRun:
    """What a backend needs to know to open a tracked run."""

    run_id: str
    run_dir: Path
    task: str

    @property
    def runs_dir(self) -> Path:
        return self.run_dir.parent

    @property
    def title(self) -> str:
        return f"{self.task} run {self.run_id}"


class TrackerBackend(Protocol):
    """One tracker's client for one sia run. Values are plain str / float; keys use ``/``."""

    def start(self, run: TrackedRun, previous: Mapping[str, Any] | None) -> tuple[dict, bool]:
        """Open the tracked run: continue ``previous`` (what an earlier start returned) when it
        can, else create one. Returns ``(state to keep, continued)``; the state has ``id`` and a
        human-readable ``where``."""

    def log_params(self, params: Mapping[str, str]) -> None: ...

    def set_tags(self, tags: Mapping[str, str]) -> None: ...

    def log_metrics(self, metrics: Mapping[str, float], *, step: int, axis: str) -> None:
        """``axis`` is ``"gen"`` (step = generation) or ``"train"`` (step = training step)."""

    def log_files(self, files: list[Path], dest: str) -> None:
        """Upload ``files`` under the artifact folder ``dest`` (e.g. ``gen_2``)."""

    def finish(self, status: str) -> None:
        """``status``: ``finished``, ``stopped``, ``failed`` or ``killed``."""


# --------------------------------------------------------------------------------------------
# opt-in
# --------------------------------------------------------------------------------------------


def requested() -> set[str] | None:
    """Tracker names in ``SIA_TRACKERS``; ``None`` when it is unset."""
    raw = os.environ.get(ENV)
    if raw is None:
        return None
    return {s.strip().lower() for s in raw.split(",") if s.strip()} - {"none", "off"}


def installed() -> list[str]:
    """Names of the installed trackers (entry points ``tracker-NAME`` of the ``sia`` group)."""
    return sorted(
        ep.name.removeprefix("tracker-")
        for ep in md.entry_points(group=PROJECT)
        if ep.name.startswith("tracker-")
    )


def state_path(run_dir: Path, name: str) -> Path:
    """``trackers/NAME.json`` of a run folder: the tracked run's id and the last event logged."""
    return run_dir / STATE_DIR / f"{name}.json"


def wanted(name: str, run_dir: Path) -> bool:
    """Whether tracker ``name`` tracks the run in ``run_dir`` (see the package docstring)."""
    names = requested()
    if names is None:
        return state_path(run_dir, name).exists()
    unknown = sorted(names - set(installed()) - _warned)
    if unknown:
        _warned.update(unknown)
        say(
            f"{ENV} names {', '.join(unknown)}, which no installed plugin provides "
            f"(installed trackers: {', '.join(installed()) or 'none'}; "
            "e.g. pip install 'sia-trackers[mlflow]')"
        )
    return name in names


def missing(modules: Iterable[str]) -> list[str]:
    """The top-level ``modules`` that cannot be imported here (found without importing them)."""
    out = []
    for name in modules:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):  # ValueError: in sys.modules with no __spec__
            found = False
        if not found:
            out.append(name)
    return out


def say(line: str) -> None:
    """One ``sia: ...`` line on stderr."""
    print(f"sia: {line}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# reading the run folder
# --------------------------------------------------------------------------------------------


def read_events(run_dir: Path) -> list[dict[str, Any]]:
    """``events.jsonl`` as dicts (read only; a line cut short is skipped)."""
    path = run_dir / "events.jsonl"
    out = []
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
    return out


def read_json(path: Path) -> Any:
    """The JSON in ``path``; ``None`` when it is missing or unreadable."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def numbers(data: Any, prefix: str = "") -> Iterator[tuple[str, float]]:
    """``(key/path, value)`` for every number in nested dicts (bools as 0/1; lists skipped)."""
    if isinstance(data, Mapping):
        for k, v in data.items():
            yield from numbers(v, f"{prefix}{k}/" if isinstance(v, Mapping) else f"{prefix}{k}")
    elif isinstance(data, int | float) and data == data:  # bools too; not NaN
        yield prefix, float(data)


def flat_params(data: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """A nested config as ``{"a.b": "value"}`` strings."""
    out: dict[str, str] = {}
    for k, v in data.items():
        if isinstance(v, Mapping) and v:
            out.update(flat_params(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v if isinstance(v, str) else json.dumps(v, default=str)
    return out


def safe_name(text: str) -> str:
    """A name usable as an experiment / project name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "task"
