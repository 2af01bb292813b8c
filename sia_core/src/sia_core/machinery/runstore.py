"""The run folder: atomic artifact writes and the append-only event log.

``events.jsonl`` is the source of truth: every step writes its artifacts first (atomically) and
then appends its ``step_finished`` event, so a run killed at any point resumes from the last
finished step. A line cut short by a crash is dropped on open, and so are the temporary files
of a write a crash cut short. A full disk is a :class:`DiskFullError` naming the disk: the
failed write leaves the old file (and an event log without a partial line) behind.

``SIA_TEST_FAULT`` (for fault-injection tests only) SIGKILLs the process at an exact point:
``kill-mid-write:SUFFIX`` (half of a file whose path ends with SUFFIX written to its temporary
file), ``kill-before-rename:SUFFIX`` (its temporary file complete, not yet renamed) or
``kill-mid-append:TYPE[:GEN[:STEP]]`` (half of that event's line appended to ``events.jsonl``).
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import signal
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sia_core.contracts.errors import SiaError
from sia_core.contracts.records import Event, from_dict, to_dict

RUN_DIR_RE = re.compile(r"^run_(.+)$")
RUN_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
SEALED = "sealed"
#: the canary items' files (see sia_core.services.canary)
CANARY_FILE = "private/canaries.json"  # in the run folder; never shown to an agent
CANARY_EXECUTION = "private/canary_execution.json"  # in a generation folder: answers, calls
CANARY_RESULT = "private/canary.json"  # in a generation folder: the CanaryCheck
#: hashes of the task's files when the run started, and before each generation's run (in the run
#: folder's private/: a hash of a small private file could be inverted by whoever reads it)
FINGERPRINT = "private/task_fingerprint.json"


def gen_fingerprint(gen: int) -> str:
    return f"private/task_fingerprint_gen_{gen}.json"


_UMASK = os.umask(0)
os.umask(_UMASK)  # per-generation folder for test-split artifacts; never shown to agents


TEMP_RE = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp$")  # what mkstemp makes in atomic_write_bytes


class DiskFullError(SiaError):
    """The disk holding the run folder is full (or over quota)."""

    def __init__(self, path: Path, exc: OSError) -> None:
        try:
            free = f"{shutil.disk_usage(path.parent).free} bytes free"
        except OSError:
            free = "free space unknown"
        super().__init__(
            f"no space left on the disk holding {path.parent} ({free}; {exc.strerror}) while "
            f"writing {path.name}"
        )
        self.path = path


def _disk_full(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


def _fault(kind: str, key: str) -> bool:
    """Whether ``SIA_TEST_FAULT`` asks to kill the process at this point (tests only)."""
    spec = os.environ.get("SIA_TEST_FAULT")
    if not spec or not spec.startswith(kind + ":"):
        return False
    want = spec[len(kind) + 1 :]
    return key.endswith(want) if kind != "kill-mid-append" else (key + ":").startswith(want + ":")


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old or the new file, never a part."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        if _disk_full(exc):
            raise DiskFullError(path, exc) from exc
        raise
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600; artifacts are ordinary files
        with os.fdopen(fd, "wb") as f:
            if _fault("kill-mid-write", str(path)):
                f.write(data[: len(data) // 2])
                f.flush()
                os.fsync(f.fileno())
                _die()
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if _fault("kill-before-rename", str(path)):
            _die()
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if _disk_full(exc):
            raise DiskFullError(path, exc) from exc  # type: ignore[arg-type]
        raise
    _fsync_dir(path.parent)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(to_dict(obj), ensure_ascii=False, indent=2) + "\n")


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_json(path: Path) -> Any:
    """Read a JSON artifact; a corrupt one is a one-line error naming the file."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise SiaError(
            f"{path} is corrupt ({exc}); delete it to redo the step that wrote it"
        ) from exc


class RunStore:
    """One run folder ``runs/run_{id}``: its artifacts and its event log."""

    def __init__(self, root: Path, run_id: str) -> None:
        self.root = root
        self.run_id = run_id
        self.events_path = root / "events.jsonl"
        self._lock = threading.Lock()
        self.events: list[Event] = []
        self._repair: tuple[str, int] | None = None  # of a crash's last line, at the next append

    # -- opening ------------------------------------------------------------------------------

    @classmethod
    def path_for(cls, runs_dir: Path, run_id: str) -> Path:
        if not RUN_ID_RE.match(run_id):
            raise SiaError(
                f"run id {run_id!r} is not valid: use letters, digits, '.', '_' and '-' "
                "(starting with a letter or digit), e.g. --run_id 7 or --run_id lawbench-a"
            )
        return runs_dir / f"run_{run_id}"

    @classmethod
    def open(cls, runs_dir: Path, run_id: str, *, create: bool = False) -> RunStore:
        # absolute: scaffold workers run in their own directories
        root = cls.path_for(Path(runs_dir).resolve(), run_id)
        if not root.exists():
            if not create:
                raise SiaError(f"no run {run_id!r} in {runs_dir} (see `sia runs`)")
            root.mkdir(parents=True)
        store = cls(root, run_id)
        store._load_events()
        return store

    def remove_stale_temps(self) -> None:
        """Delete the temporary files of atomic writes that a crash cut short.

        Only for the process driving the run (it holds the run's lock): a live run's writes in
        flight are temporary files too.
        """
        for folder in (self.root, *self.root.glob("gen_*"), *self.root.glob("gen_*/sealed")):
            for p in folder.glob(".*.tmp"):
                if TEMP_RE.match(p.name) and p.is_file():
                    p.unlink(missing_ok=True)

    def _load_events(self) -> None:
        """Read the event log. Nothing is changed on disk (readers may watch a live run): a last
        line cut short by a crash is skipped here and cut off by this store's next append."""
        self.events = []
        self._repair = None
        if not self.events_path.exists():
            return
        raw = self.events_path.read_bytes()
        offset = 0
        for i, line in enumerate(raw.split(b"\n")):
            start, offset = offset, offset + len(line) + 1
            if not line.strip():
                continue
            try:
                self.events.append(from_dict(Event, json.loads(line)))
            except Exception as exc:
                if not raw[offset:].strip():
                    self._repair = ("truncate", start)  # the last line was cut short: drop it
                    return
                raise SiaError(
                    f"{self.events_path} line {i + 1} is corrupt ({exc}); the run cannot be "
                    "resumed safely"
                ) from exc
        if raw and not raw.endswith(b"\n"):
            self._repair = ("newline", len(raw))

    # -- events -------------------------------------------------------------------------------

    def append(self, type: str, *, gen: int | None = None, **data: Any) -> Event:
        """Append one event durably and return it."""
        with self._lock:
            event = Event(
                type=type, run_id=self.run_id, seq=len(self.events) + 1, gen=gen, data=to_dict(data)
            )
            line = (json.dumps(to_dict(event), ensure_ascii=False) + "\n").encode("utf-8")
            key = f"{type}:{gen}:{data.get('step', '')}"
            try:
                fd = os.open(self.events_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
            except OSError as exc:
                if _disk_full(exc):
                    raise DiskFullError(self.events_path, exc) from exc
                raise
            try:
                if self._repair is not None:
                    what, at = self._repair
                    if what == "truncate":
                        os.ftruncate(fd, at)
                    else:
                        _write_all(fd, b"\n")
                    self._repair = None
                size = os.fstat(fd).st_size
                try:
                    if _fault("kill-mid-append", key):
                        _write_all(fd, line[: len(line) // 2])
                        os.fsync(fd)
                        _die()
                    _write_all(fd, line)
                    os.fsync(fd)
                except BaseException as exc:
                    # never leave a partial line that a later append would bury mid-file
                    os.ftruncate(fd, size)
                    if _disk_full(exc):
                        raise DiskFullError(self.events_path, exc) from exc  # type: ignore[arg-type]
                    raise
            finally:
                os.close(fd)
            self.events.append(event)
            return event

    def finished_steps(self) -> set[tuple[int, str]]:
        return {
            (e.gen, e.data["step"])
            for e in self.events
            if e.type == "step_finished" and e.gen is not None
        }

    def last(self, type: str) -> Event | None:
        for e in reversed(self.events):
            if e.type == type:
                return e
        return None

    # -- artifacts ----------------------------------------------------------------------------

    def gen_dir(self, gen: int) -> Path:
        return self.root / f"gen_{gen}"

    def gen_dirs(self) -> Iterator[tuple[int, Path]]:
        found = []
        for p in self.root.glob("gen_*"):
            try:
                found.append((int(p.name[4:]), p))
            except ValueError:
                continue
        return iter(sorted(found))

    def write_json(self, rel: str | Path, obj: Any) -> Path:
        path = self.root / rel
        atomic_write_json(path, obj)
        return path

    def write_text(self, rel: str | Path, text: str) -> Path:
        path = self.root / rel
        atomic_write_text(path, text)
        return path

    def read_text(self, rel: str | Path) -> str:
        """A text file of the run ("" if it is not there)."""
        path = self.root / rel
        return path.read_text(encoding="utf-8") if path.exists() else ""

    def read_json(self, rel: str | Path) -> Any:
        return read_json(self.root / rel)

    def exists(self, rel: str | Path) -> bool:
        return (self.root / rel).exists()


def list_runs(runs_dir: Path) -> list[str]:
    """Run ids under ``runs_dir``, numeric ids in numeric order first."""
    if not runs_dir.exists():
        return []
    ids = [m.group(1) for p in runs_dir.iterdir() if p.is_dir() and (m := RUN_DIR_RE.match(p.name))]
    return sorted(ids, key=lambda s: (0, int(s), "") if s.isdigit() else (1, 0, s))


def next_run_id(runs_dir: Path) -> str:
    numeric = [int(i) for i in list_runs(runs_dir) if i.isdigit()]
    return str(max(numeric, default=0) + 1)


def agent_visible(path: Path) -> bool:
    """Whether a Meta/Feedback agent may read ``path`` of a run: never sealed test artifacts."""
    return SEALED not in path.parts and "private" not in path.parts
