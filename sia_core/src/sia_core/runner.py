"""Runs a scaffold over task items with a pool of sandboxed workers.

A per-item scaffold (a top-level ``def solve``) runs in ``parallel`` workers. Each worker is one
sandboxed ``python -I scaffold_host.py`` process with its own gateway token; the runner sends
it one JSON request per line on stdin and reads the answers from a separate pipe (never stdout,
which goes to the worker's log with stderr). A worker that hangs past ``item_timeout_s`` or
dies is killed with its whole process tree and replaced; the item is recorded as ``timeout`` or
``error`` and the other items go on. A program-style scaffold is run once as
``python target_agent.py --dataset_dir <public_dir> --working_dir <work_dir>``.
"""

from __future__ import annotations

import ast
import contextlib
import json
import logging
import os
import queue
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any, Literal, Protocol

import attrs

from .fs import describe_exit
from .records import Item, ItemResult, TrajectoryStep, _tuple
from .sandbox import Limits, Sandbox, SandboxedProcess
from .untrusted import OutputPump

__all__ = [
    "HOST_PATH",
    "Gateway",
    "ProgramResult",
    "RunSpec",
    "run_items",
    "run_program",
    "scaffold_kind",
]

log = logging.getLogger(__name__)

#: the harness each worker runs (stdlib only, executed by path)
HOST_PATH = Path(__file__).with_name("scaffold_host.py")

_MAX_TRAJECTORY_BYTES = 4_000_000
_OVERSIZE = object()  # reader marker: a response line over the size cap
_EOF = object()


class Gateway(Protocol):
    """What the runner needs of the model gateway."""

    @property
    def url(self) -> str: ...

    def new_token(self) -> str: ...

    def assign(self, token: str, item_id: str) -> None: ...


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


# --------------------------------------------------------------------------------------------
# Shared helpers
# --------------------------------------------------------------------------------------------


def _revoke(gateway: Gateway | None, token: str) -> None:
    """A dead worker's gateway token stops working (and stops taking memory in the gateway)."""
    revoke = getattr(gateway, "revoke", None)
    if token and callable(revoke):
        revoke(token)


_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS")


def _scaffold_env(spec: RunSpec, home: Path, gateway: Gateway | None, token: str) -> dict[str, str]:
    """The scaffold's whole environment: nothing from the host but PATH and LANG."""
    bin_dir = str(Path(sys.executable).parent)
    path = os.environ.get("PATH") or os.defpath
    env = {
        "PATH": f"{bin_dir}{os.pathsep}{path}",
        "HOME": str(home),
        "LANG": os.environ.get("LANG") or "C.UTF-8",
        "SIA_MODEL": spec.model_name,
        # workers share the machine's cores: without this, every worker's BLAS/OpenMP pool
        # takes all of them and a 0.3 s model fit becomes 18 s
        **dict.fromkeys(_THREAD_VARS, str(max(1, (os.cpu_count() or 1) // max(1, spec.parallel)))),
        "PYTHONDONTWRITEBYTECODE": "1",  # no __pycache__ in generation folders
    }
    if gateway is not None:
        env.update(
            OPENAI_BASE_URL=gateway.url,
            OPENAI_API_BASE=gateway.url,
            SIA_GATEWAY_URL=gateway.url,
            OPENAI_API_KEY=token,
            SIA_GATEWAY_TOKEN=token,
        )
    env.update({str(k): str(v) for k, v in spec.env.items()})
    return env


def _mb(n: int) -> str:
    return f"{n / (1024 * 1024):.0f} MB"


def _dir_usage(path: Path, max_files: int) -> tuple[int, int]:
    """``(bytes, entries)`` below ``path``, links not followed; stops counting past
    ``max_files`` entries (the caller only needs to know it is over)."""
    total = count = 0
    todo = [str(path)]
    while todo and count <= max_files:
        try:
            with os.scandir(todo.pop()) as it:
                for entry in it:
                    count += 1
                    try:
                        info = entry.stat(follow_symlinks=False)
                    except OSError:
                        continue
                    total += info.st_blocks * 512
                    if entry.is_dir(follow_symlinks=False):
                        todo.append(entry.path)
        except OSError:
            continue
    return total, count


class _WorkDirWatch:
    """Kills ``proc``'s tree once ``path`` holds more than the spec allows; ``breach`` says why.

    A watchdog, not a quota: a fast writer may go over by what it writes in one interval (the
    per-file ``RLIMIT_FSIZE`` still holds). Docs/security.md says so.
    """

    def __init__(self, proc: SandboxedProcess, path: Path, spec: RunSpec) -> None:
        self.breach = ""
        self._proc, self._path = proc, path
        self._max_bytes = spec.work_dir_mb * 1024 * 1024
        self._max_files = spec.work_dir_files
        self._interval = spec.watch_interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True, name="sia-disk-watch")
        self._thread.start()

    def _watch(self) -> None:
        while not self._stop.wait(self._interval):
            used, files = _dir_usage(self._path, self._max_files)
            if used > self._max_bytes:
                self.breach = (
                    f"work dir over its limit ({_mb(used)} > {_mb(self._max_bytes)}): "
                    "killed, and its files removed"
                )
            elif files > self._max_files:
                self.breach = (
                    f"work dir over its limit (more than {self._max_files} files): "
                    "killed, and its files removed"
                )
            if self.breach:
                self._proc.kill_tree()
                return

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=5.0)


def _steps(raw: Any) -> tuple[TrajectoryStep, ...]:
    steps = []
    for step in raw if isinstance(raw, list) else ():
        if isinstance(step, dict):
            t = step.get("t")
            steps.append(
                TrajectoryStep(
                    kind=str(step.get("kind", "note")),
                    content=step.get("content"),
                    t=float(t) if isinstance(t, int | float) else 0.0,
                )
            )
    return tuple(steps)


# --------------------------------------------------------------------------------------------
# One worker process
# --------------------------------------------------------------------------------------------


class _Worker:
    """A running scaffold host: the sandboxed process, its token and its response pipe."""

    def __init__(
        self, proc: SandboxedProcess, token: str, responses: IO[bytes], output: OutputPump
    ) -> None:
        self.proc = proc
        self.token = token
        self.output = output
        self.watch: _WorkDirWatch | None = None
        self.home: Path | None = None
        self._responses = responses
        self._lines: queue.Queue[Any] = queue.Queue()
        self._cap = 0
        self._reader = threading.Thread(target=self._read, daemon=True, name="sia-worker-reader")

    def start_reader(self, cap: int) -> None:
        self._cap = cap
        self._reader.start()

    def _read(self) -> None:
        f = self._responses
        try:
            while True:
                line = f.readline(self._cap + 1)
                if not line:
                    break
                if len(line) > self._cap and not line.endswith(b"\n"):
                    while True:  # skip the rest of the oversized line
                        chunk = f.readline(1 << 20)
                        if not chunk or chunk.endswith(b"\n"):
                            break
                    self._lines.put(_OVERSIZE)
                    continue
                self._lines.put(line)
        except (OSError, ValueError):
            pass
        finally:
            # closed here, not by close(): closing a buffered file another thread is reading
            # blocks until that read returns
            with contextlib.suppress(OSError):
                f.close()
            self._lines.put(_EOF)

    def request(self, payload: dict[str, Any], timeout: float) -> tuple[str, Any]:
        """Send one request; ``("ok", response)``, ``("timeout", None)``, ``("died", rc)``
        or ``("bad", message)``."""
        stdin = self.proc.popen.stdin
        assert stdin is not None
        try:
            stdin.write((json.dumps(payload, ensure_ascii=False) + "\n").encode("utf-8"))
            stdin.flush()
        except (OSError, ValueError):
            return "died", self._exit_code()
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return "timeout", None
            try:
                got = self._lines.get(timeout=min(0.1, remaining))
            except queue.Empty:
                # a forked child may hold the pipe open after the host died: also poll the host
                if self.proc.poll() is not None:
                    try:
                        got = self._lines.get(timeout=0.2)
                    except queue.Empty:
                        return "died", self.proc.poll()
                else:
                    continue
            if got is _EOF:
                return "died", self._exit_code()
            if got is _OVERSIZE:
                return "bad", f"worker response over {self._cap} bytes"
            try:
                response = json.loads(got)
            except ValueError as e:
                return "bad", f"malformed worker response: {e}"
            if not isinstance(response, dict):
                return "bad", "malformed worker response: not an object"
            return "ok", response

    def _exit_code(self) -> int | None:
        return self.proc.wait(timeout=1.0)

    def died_message(self, rc: int | None) -> str:
        if self.watch is not None and self.watch.breach:
            return self.watch.breach
        self.output.wait_eof(1.0)  # the tail comes from the pipe sia holds, never a path
        tail = self.output.tail()
        msg = f"worker died ({describe_exit(rc)})"
        return f"{msg}; last output:\n{tail}" if tail else msg

    def close(self) -> None:
        """Kill the worker and everything it started; close the pipes."""
        self.proc.kill_tree()
        if self.watch is not None:
            self.watch.stop()
            if self.watch.breach and self.home is not None:
                shutil.rmtree(self.home, ignore_errors=True)  # the next worker starts clean
        self.output.close()
        if self._reader.is_alive():
            self._reader.join(timeout=1.0)
        elif not self._reader.ident:  # the reader never started
            with contextlib.suppress(OSError):
                self._responses.close()


# --------------------------------------------------------------------------------------------
# Per-item runs
# --------------------------------------------------------------------------------------------


class _ItemRun:
    """State shared by the worker threads of one :func:`run_items` call."""

    def __init__(
        self,
        spec: RunSpec,
        items: list[Item],
        sandbox: Sandbox,
        gateway: Gateway | None,
        on_item: Callable[[ItemResult], None] | None,
    ) -> None:
        self.spec = spec
        self.items = items
        self.sandbox = sandbox
        self.gateway = gateway
        self.on_item = on_item
        self.results: list[ItemResult | None] = [None] * len(items)
        self.todo: queue.SimpleQueue[int] = queue.SimpleQueue()
        for i in range(len(items)):
            self.todo.put(i)
        self.lock = threading.Lock()
        self.live: set[_Worker] = set()
        self.stop = threading.Event()
        self.setup_failures = 0
        self.ready = 0  # workers that finished setup and are still in use
        self.setup_error: str | None = None  # set once setup failed twice: no more restarts
        self.meta_dir = spec.work_dir / ".sia"
        self.config_path = self.meta_dir / "host_config.json"
        self.response_cap = spec.max_answer_bytes + _MAX_TRAJECTORY_BYTES + 1_000_000

    # -- preparation ---------------------------------------------------------------------------

    def prepare(self) -> None:
        self.meta_dir.mkdir(parents=True, exist_ok=True)
        train_path = self.meta_dir / "train.json"
        train_path.write_text(
            json.dumps(list(self.spec.train_examples), ensure_ascii=False), encoding="utf-8"
        )
        config = {
            "scaffold_path": str(Path(self.spec.scaffold_path).resolve()),
            "public_dir": str(Path(self.spec.public_dir).resolve()),
            "train_path": str(train_path.resolve()),
            "params": dict(self.spec.params),
            "model": self.spec.model_name,
            "max_answer_bytes": self.spec.max_answer_bytes,
            "max_trajectory_bytes": _MAX_TRAJECTORY_BYTES,
        }
        self.config_path.write_text(json.dumps(config, ensure_ascii=False), encoding="utf-8")

    # -- results -------------------------------------------------------------------------------

    def record(self, index: int, result: ItemResult) -> None:
        with self.lock:
            self.results[index] = result
        if self.on_item is not None:
            try:
                self.on_item(result)
            except Exception:
                log.exception("on_item callback failed for %s", result.item_id)

    def error(self, index: int, message: str, seconds: float = 0.0, status: str = "error") -> None:
        item = self.items[index]
        self.record(
            index,
            ItemResult(
                item_id=item.id, split=item.split, status=status, error=message, seconds=seconds
            ),
        )

    # -- workers -------------------------------------------------------------------------------

    def spawn(self, slot: int) -> _Worker:
        spec = self.spec
        home = (spec.work_dir / f"worker-{slot}").resolve()
        home.mkdir(parents=True, exist_ok=True)
        log_path = spec.logs() / f"worker-{slot}.log"
        token = self.gateway.new_token() if self.gateway is not None else ""
        argv = [
            sys.executable,
            "-I",
            "-B",
            str(HOST_PATH),
            "--config",
            str(self.config_path.resolve()),
            "--work-dir",
            str(home),
            "--response-fd",
            "",  # filled below, once the pipe exists
        ]
        # files, not their folders: a strict sandbox shows the worker nothing else of the
        # generation folder (decisions, sealed/) or of sia_core (the tiny task's private labels)
        ro_paths = tuple(
            {
                Path(spec.scaffold_path).resolve(),
                Path(spec.public_dir).resolve(),
                HOST_PATH,
                self.meta_dir.resolve(),
                Path(sys.prefix),
                Path(sys.base_prefix),
            }
        )
        read_fd, write_fd = os.pipe()
        out_r, out_w = os.pipe()
        output = OutputPump(
            out_r, log_path, head_bytes=spec.log_head_bytes, tail_bytes=spec.log_tail_bytes
        )
        output.write_line(f"=== worker {slot} started {time.ctime()} ===\n")
        try:
            argv[-1] = str(write_fd)
            proc = self.sandbox.spawn(
                argv,
                cwd=home,
                env=_scaffold_env(spec, home, self.gateway, token),
                limits=spec.limits,
                ro_paths=ro_paths,
                rw_paths=(home,),
                stdin=subprocess.PIPE,
                stdout=out_w,
                stderr=subprocess.STDOUT,
                pass_fds=(write_fd,),
            )
        except BaseException:
            os.close(read_fd)
            os.close(out_w)
            output.close()
            raise
        finally:
            os.close(write_fd)  # only the host may hold the write end, or EOF never comes
        os.close(out_w)
        worker = _Worker(proc, token, os.fdopen(read_fd, "rb"), output)
        worker.home = home
        worker.watch = _WorkDirWatch(proc, home, spec)
        worker.start_reader(self.response_cap)
        with self.lock:
            self.live.add(worker)
        return worker

    def retire(self, worker: _Worker) -> None:
        worker.close()
        _revoke(self.gateway, worker.token)
        with self.lock:
            self.live.discard(worker)

    def kill_all(self) -> None:
        with self.lock:
            workers = list(self.live)
        for worker in workers:
            self.retire(worker)

    def start_worker(self, slot: int) -> _Worker | None:
        """A worker that finished setup, or ``None`` (and ``setup_error`` set) after 2 failures."""
        while not self.stop.is_set():
            with self.lock:
                if self.setup_error is not None:
                    return None
            worker = self.spawn(slot)
            status, value = worker.request({"op": "setup"}, self.spec.setup_timeout_s)
            if status == "ok" and value.get("ok"):
                return worker
            if status == "ok":
                message = str(value.get("error") or "unknown error")
            elif status == "timeout":
                message = f"timed out after {self.spec.setup_timeout_s:g}s"
            elif status == "died":
                message = worker.died_message(value)
            else:
                message = str(value)
            self.retire(worker)
            log.warning(
                "scaffold setup failed in worker %d: %s", slot, (message.splitlines() or [""])[0]
            )
            with self.lock:
                self.setup_failures += 1
                if self.setup_failures >= 2 and self.setup_error is None:
                    self.setup_error = message
        return None

    def solve(self, worker: _Worker, index: int) -> tuple[ItemResult, bool]:
        """Run one item; the result and whether the worker is still usable."""
        item = self.items[index]
        if self.gateway is not None:
            self.gateway.assign(worker.token, item.id)
        payload = {"op": "solve", "item": {"id": item.id, "input": item.input, "split": item.split}}
        start = time.monotonic()
        cut_before = worker.output.cut
        status, value = worker.request(payload, self.spec.item_timeout_s)
        seconds = time.monotonic() - start
        limits_hit: list[str] = []
        if status == "died" and worker.watch is not None and worker.watch.breach:
            limits_hit.append(worker.watch.breach)
        else:
            worker.output.wait_eof(0.0)
        cut = worker.output.cut - cut_before
        if cut > 0:
            limits_hit.append(
                f"output over the log's limit: {cut} bytes of this item's output not kept"
            )

        def result(status: str, error: str, **more: Any) -> ItemResult:
            return ItemResult(
                item_id=item.id,
                split=item.split,
                status=status,
                error=error,
                seconds=seconds,
                limits_hit=tuple(limits_hit),
                **more,
            )

        if status == "timeout":
            return result("timeout", f"timed out after {self.spec.item_timeout_s:g}s"), False
        if status == "died":
            return result("error", worker.died_message(value)), False
        if status == "bad":
            return result("error", str(value)), False
        answer = value.get("answer")
        error = str(value.get("error") or "")
        ok = value.get("status") == "ok"
        if ok:
            size = len(json.dumps(answer, ensure_ascii=False).encode("utf-8"))
            if size > self.spec.max_answer_bytes:
                ok, answer = False, None
                error = f"answer too large ({size} bytes > {self.spec.max_answer_bytes})"
        trajectory = _steps(value.get("trajectory"))
        if ok:
            return result("ok", error, answer=answer, trajectory=trajectory), True
        return result("error", error, trajectory=trajectory), True

    def drive(self, slot: int) -> None:
        """One worker thread: take items until none are left, replacing the worker as needed."""
        worker: _Worker | None = None
        index: int | None = None
        try:
            while not self.stop.is_set():
                if worker is None:
                    worker = self.start_worker(slot)
                    if worker is None:
                        break
                    with self.lock:
                        self.ready += 1
                try:
                    index = self.todo.get_nowait()
                except queue.Empty:
                    break
                result, alive = self.solve(worker, index)
                self.record(index, result)
                index = None
                if not alive:
                    self.drop(worker)
                    worker = None
            with self.lock:
                # setup is broken and no worker is left to run the rest: fail them the same way
                drain = self.setup_error is not None and self.ready == 0
            while drain:
                try:
                    index = self.todo.get_nowait()
                except queue.Empty:
                    break
                self.error(index, f"setup failed: {self.setup_error}")
                index = None
        except Exception as e:
            log.exception("runner worker %d failed", slot)
            if index is not None:
                self.error(index, f"runner error: {type(e).__name__}: {e}")
        finally:
            if worker is not None:
                self.drop(worker)

    def drop(self, worker: _Worker) -> None:
        """Retire a worker that had finished setup."""
        with self.lock:
            self.ready -= 1
        self.retire(worker)


def run_items(
    spec: RunSpec,
    items: Sequence[Item],
    *,
    sandbox: Sandbox,
    gateway: Gateway | None,
    on_item: Callable[[ItemResult], None] | None = None,
) -> list[ItemResult]:
    """Run a per-item scaffold over ``items``; one result per item, in the order of ``items``.

    ``on_item`` is called from worker threads as each item finishes. When this returns (or
    raises), every worker and everything it started has been killed.
    """
    items = list(items)
    if not items:
        return []
    state = _ItemRun(spec, items, sandbox, gateway, on_item)
    state.prepare()
    n_threads = max(1, min(spec.parallel, len(items)))
    threads = [
        threading.Thread(target=state.drive, args=(slot,), name=f"sia-worker-{slot}", daemon=True)
        for slot in range(n_threads)
    ]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            while thread.is_alive():
                thread.join(timeout=0.5)
    except BaseException:
        state.stop.set()
        state.kill_all()
        for thread in threads:
            thread.join(timeout=5.0)
        raise
    finally:
        state.kill_all()
    results: list[ItemResult] = []
    for i, result in enumerate(state.results):
        if result is None:  # only if the run was stopped or a worker thread itself broke
            item = items[i]
            if state.setup_error is not None:
                error = f"setup failed: {state.setup_error}"
            else:
                error = "not run: runner stopped"
            result = ItemResult(item_id=item.id, split=item.split, status="error", error=error)
        results.append(result)
    return results


# --------------------------------------------------------------------------------------------
# Program-style scaffolds
# --------------------------------------------------------------------------------------------


def run_program(spec: RunSpec, *, sandbox: Sandbox, gateway: Gateway | None) -> ProgramResult:
    """Run a program-style scaffold once, bounded by ``spec.limits.wall_s``.

    ``python target_agent.py --dataset_dir <public_dir> --working_dir <work_dir>`` with the
    work dir as cwd and HOME; stdout and stderr go through a pipe sia holds into
    ``<log dir>/program.log`` (head and tail kept, see :class:`RunSpec`), outside the work dir.
    """
    work_dir = Path(spec.work_dir).resolve()
    work_dir.mkdir(parents=True, exist_ok=True)
    scaffold = Path(spec.scaffold_path).resolve()
    public_dir = Path(spec.public_dir).resolve()
    log_path = spec.logs() / "program.log"
    token = gateway.new_token() if gateway is not None else ""
    argv = [
        sys.executable,
        "-u",
        str(scaffold),
        "--dataset_dir",
        str(public_dir),
        "--working_dir",
        str(work_dir),
    ]
    out_r, out_w = os.pipe()
    output = OutputPump(
        out_r, log_path, head_bytes=spec.log_head_bytes, tail_bytes=spec.log_tail_bytes
    )
    start = time.monotonic()
    try:
        proc = sandbox.spawn(
            argv,
            cwd=work_dir,
            env=_scaffold_env(spec, work_dir, gateway, token),
            limits=spec.limits,
            ro_paths=(scaffold.parent, public_dir, Path(sys.prefix), Path(sys.base_prefix)),
            rw_paths=(work_dir,),
            stdin=subprocess.DEVNULL,
            stdout=out_w,
            stderr=subprocess.STDOUT,
        )
    except BaseException:
        os.close(out_w)
        output.close()
        raise
    os.close(out_w)
    watch = _WorkDirWatch(proc, work_dir, spec)
    try:
        rc = proc.wait(timeout=max(0.0, spec.limits.wall_s))
    finally:
        proc.kill_tree()  # leftovers too: after this nothing of the scaffold runs
        watch.stop()
        output.close()
        _revoke(gateway, token)
    seconds = time.monotonic() - start
    sizes: dict[str, Any] = {"output_bytes": output.total, "output_cut_bytes": output.cut}
    if watch.breach:
        shutil.rmtree(work_dir, ignore_errors=True)
        work_dir.mkdir(parents=True, exist_ok=True)
        return ProgramResult(
            status="error",
            returncode=rc,
            seconds=seconds,
            error=watch.breach,
            log_path=log_path,
            **sizes,
        )
    if rc is None:
        return ProgramResult(
            status="timeout",
            returncode=None,
            seconds=seconds,
            error=f"timed out after {spec.limits.wall_s:g}s",
            log_path=log_path,
            **sizes,
        )
    if rc == 0:
        return ProgramResult(status="ok", returncode=0, seconds=seconds, log_path=log_path, **sizes)
    tail = output.tail()
    return ProgramResult(
        status="error",
        returncode=rc,
        seconds=seconds,
        error=f"{describe_exit(rc)}" + (f"; last output:\n{tail}" if tail else ""),
        log_path=log_path,
        **sizes,
    )
