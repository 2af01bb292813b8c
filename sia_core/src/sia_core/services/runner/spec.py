"""What a scaffold run is given and what a program run gives back.

:class:`RunSpec` (the scaffold, its folders, parallelism, timeouts and limits), the
:class:`Gateway` protocol (what the runner needs of the model gateway), :class:`ProgramResult`
and :func:`scaffold_kind`, which tells a per-item scaffold from a program-style one.
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal, Protocol

import attrs

from sia_core.contracts.records import Item, ItemResult, _tuple
from sia_core.contracts.sandbox import Limits, Sandbox

__all__ = ["Gateway", "ItemRunner", "ProgramResult", "RunSpec", "RunnerOptions", "scaffold_kind"]


class Gateway(Protocol):
    """What the runner needs of the model gateway."""

    @property
    def url(self) -> str: ...

    def new_token(self) -> str: ...

    def assign(self, token: str, item_id: str) -> None: ...


@attrs.frozen(kw_only=True)
class RunnerOptions:
    """What a runner's factory is given: its ``--runner-opt`` settings, the run's sandbox (by
    name, for a runner that makes it again on another host) and the run folder."""

    settings: dict[str, Any] = attrs.field(factory=dict)
    sandbox: str = "process"
    run_dir: str = ""


class ItemRunner(Protocol):
    """Runs a per-item scaffold over items (a ``--runner`` plugin; the core's is ``local``).

    Whatever the runner, each item runs in the run's sandbox with ``spec.item_timeout_s``, its
    calls go through the gateway with a key bound to that item, and every item gets exactly one
    :class:`ItemResult`, in the order of ``items`` (``node`` and ``reruns`` say where it ran).
    """

    name: str

    def start(self) -> None:
        """Connect and check (hosts reachable, resources, the sandbox there); raise a
        :class:`~sia_core.contracts.errors.SiaError` with one line otherwise."""

    def gateway_host(self) -> str:
        """The address the model gateway must listen on for this runner's workers to reach it
        (``127.0.0.1`` when they run on this machine)."""

    def run_items(
        self,
        spec: RunSpec,
        items: Sequence[Item],
        *,
        sandbox: Sandbox,
        gateway: Gateway | None,
        on_item: Callable[[ItemResult], None] | None = None,
    ) -> list[ItemResult]:
        """One result per item; when this returns or raises, nothing it started still runs."""

    def close(self) -> None:
        """Release what :meth:`start` took (connections, remote processes)."""


@attrs.frozen(kw_only=True)
class RunSpec:
    """How to run one scaffold. ``params`` override the scaffold's ``PARAMS``.

    ``item_timeout_s`` bounds one ``solve`` call, ``setup_timeout_s`` one worker's import plus
    ``setup``; a program-style scaffold is bounded by ``limits.wall_s``.
    """

    scaffold_path: Path
    work_dir: Path  # writable; per-worker subdirs are made inside it
    public_dir: Path  # task's data/public, read-only by convention
    train_examples: tuple[dict[str, Any], ...] = attrs.field(default=(), converter=_tuple)
    params: dict[str, Any] = attrs.field(factory=dict)
    model_name: str = ""
    parallel: int = 2
    item_timeout_s: float = 120.0
    setup_timeout_s: float = 300.0
    limits: Limits = attrs.field(factory=Limits)
    max_answer_bytes: int = 1_000_000
    env: dict[str, str] = attrs.field(factory=dict)  # extra env vars for the scaffold
    #: where the workers' logs go: outside the work dir, so the scaffold cannot replace them
    #: (default: ``<work_dir>.logs`` beside it)
    log_dir: Path | None = None
    log_head_bytes: int = 1 << 20  # each log keeps this much of the start of the output ...
    log_tail_bytes: int = 1 << 20  # ... and this much of its end, with a note of what was cut
    #: a worker's (or the program's) work dir may hold this much; over it, the command's tree
    #: is killed and the item recorded as over its limit (checked every ``watch_interval_s``)
    work_dir_mb: int = 1024
    work_dir_files: int = 20_000
    watch_interval_s: float = 0.2

    def logs(self) -> Path:
        """The log folder (made if missing)."""
        work = Path(self.work_dir)
        folder = (
            Path(self.log_dir) if self.log_dir is not None else work.parent / f"{work.name}.logs"
        )
        folder.mkdir(parents=True, exist_ok=True)
        return folder


@attrs.frozen(kw_only=True)
class ProgramResult:
    """The outcome of a program-style scaffold run."""

    status: Literal["ok", "error", "timeout"]
    returncode: int | None
    seconds: float
    error: str = ""
    log_path: Path | None = None
    output_bytes: int = 0  # what the program wrote to stdout/stderr
    output_cut_bytes: int = 0  # of that, what the log does not keep (over its head + tail)
    #: what was taken from the work dir for scoring (``taken``) and refused, one line each
    outputs: dict[str, Any] = attrs.field(factory=dict)


def scaffold_kind(path: Path) -> Literal["per_item", "program"]:
    """``per_item`` if the file defines (or assigns) a top-level ``solve``, else ``program``.

    A file that does not parse counts as ``per_item``: running it reports the syntax error as
    every item's ``setup failed`` error.
    """
    try:
        tree = ast.parse(Path(path).read_text(encoding="utf-8"), filename=str(path))
    except (SyntaxError, ValueError):
        return "per_item"
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == "solve":
            return "per_item"
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "solve" for t in node.targets
        ):
            return "per_item"
    return "program"


def scaffold_problem(text: str) -> str:
    """What makes ``text`` unusable as a scaffold ("is empty", "has a syntax error (...)"), or
    ``""``."""
    if not text.strip():
        return "is empty"
    try:
        ast.parse(text)
    except SyntaxError as exc:
        return f"has a syntax error (line {exc.lineno}: {exc.msg})"
    except ValueError as exc:  # e.g. null bytes
        return f"cannot be parsed ({exc})"
    return ""
