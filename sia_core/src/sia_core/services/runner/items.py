"""Per-item runs: a scaffold's ``solve`` over task items in a pool of sandboxed workers.

:func:`run_items` runs ``parallel`` worker threads, each driving one worker at a time; a worker
that hangs past ``item_timeout_s`` or dies is killed with its whole process tree and replaced,
the item is recorded as ``timeout`` or ``error`` and the other items go on. A scaffold whose
setup fails twice fails every item left with that error.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from sia_core.contracts.records import Item, ItemResult
from sia_core.contracts.sandbox import Sandbox
from sia_core.services.runner.environment import _revoke, _scaffold_env
from sia_core.services.runner.spec import Gateway, RunnerOptions, RunSpec
from sia_core.services.runner.watchdog import _WorkDirWatch
from sia_core.services.runner.worker import HOST_PATH, _steps, _Worker
from sia_core.services.untrusted import OutputPump

__all__ = ["LocalRunner", "run_items"]

log = logging.getLogger(__name__)

_MAX_TRAJECTORY_BYTES = 4_000_000


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
            worker.output.settle()  # what it printed before answering is this item's
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


class LocalRunner:
    """The ``local`` runner: :func:`run_items` on this machine (``--parallel`` workers)."""

    name = "local"

    def __init__(self, options: RunnerOptions | None = None) -> None:
        self.options = options or RunnerOptions()

    def start(self) -> None:
        """Nothing to connect to."""

    def gateway_host(self) -> str:
        return "127.0.0.1"

    def run_items(
        self,
        spec: RunSpec,
        items: Sequence[Item],
        *,
        sandbox: Sandbox,
        gateway: Gateway | None,
        on_item: Callable[[ItemResult], None] | None = None,
    ) -> list[ItemResult]:
        return run_items(spec, items, sandbox=sandbox, gateway=gateway, on_item=on_item)

    def close(self) -> None:
        """Nothing to release."""
