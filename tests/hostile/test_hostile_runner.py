"""Hostile scaffolds through the real runner and gateway, once per sandbox.

Each case asserts what happened to the item (its status and error: what agent_execution.json
records), that the score is not inflated, that the run went on to the next item, and (through
the autouse fixture) that nothing is left running. Where the ``process`` sandbox cannot contain
a case, the test asserts the breach (``NOT CONTAINED``) instead of skipping it.
"""

from __future__ import annotations

import json
import os
import socket
import socketserver
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from sia_core.contracts.sandbox import Limits
from sia_sandbox_bwrap.host_resources import pids_cgroup_parent

from .conftest import Leftovers
from .harness import (
    ITEMS,
    LABELS,
    ROOT,
    SANDBOXES,
    Arena,
    kill_all,
    notes,
    running,
    score,
    source,
)

# --------------------------------------------------------------------------------------------
# reading the private labels
# --------------------------------------------------------------------------------------------

WALK = """
import json, os, time

PRUNE = {"proc", "sys", "dev", "usr", "lib", "lib64", "bin", "sbin", "boot", "snap", "var",
         ".git", ".venv", "node_modules", "site-packages", ".pyenv", ".cache", "__pycache__"}
FOUND = {}
WALKED = [0]

def setup(ctx):
    start = time.monotonic()
    for root, dirs, files in os.walk("/"):
        WALKED[0] += 1
        dirs[:] = [d for d in dirs if d not in PRUNE]
        for name in files:
            if name.endswith("labels.jsonl"):
                try:
                    for line in open(os.path.join(root, name)):
                        row = json.loads(line)
                        FOUND[row["id"]] = row["label"]
                except (OSError, ValueError, KeyError, TypeError):
                    pass
        if all(i in FOUND for i in $ids) or time.monotonic() - start > 20:
            break

def solve(item, ctx):
    ctx.log("note", {"walked": WALKED[0], "labels_found": len(FOUND)})
    if item.id not in FOUND:
        raise LookupError(f"no labels found walking / ({WALKED[0]} folders)")
    return FOUND[item.id]
"""


@pytest.mark.parametrize("sandbox", SANDBOXES)
def test_reads_private_labels_by_walking_the_file_system(sandbox: str, arena: Arena) -> None:
    results, _ = arena.run_scaffold(
        sandbox, source(WALK, ids=list(LABELS)), setup_timeout_s=40, item_timeout_s=10
    )
    if sandbox == "process":
        # NOT CONTAINED: the whole host file system is readable, labels included
        assert [r.status for r in results] == ["ok", "ok"] and score(results) == 1.0
        return
    assert score(results) == 0.0
    for r in results:
        assert r.status == "error" and "LookupError: no labels found walking /" in r.error
        # not even the tiny task's labels inside sia_core, whose folder the runner binds
        assert notes(r)[0]["labels_found"] == 0


PROC = """
import json, os

LABELS = $labels

def solve(item, ctx):
    pids = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
    seen = {"ppid": os.getppid(), "visible_pids": len(pids), "environ_readable": []}
    errors = []
    for pid in [os.getppid(), *pids]:
        try:
            open(f"/proc/{pid}/environ", "rb").read()
            seen["environ_readable"].append(pid)
        except OSError:
            pass
        for route in (f"/proc/{pid}/root{LABELS}",):
            try:
                with open(route) as f:
                    rows = [json.loads(line) for line in f]
            except OSError as e:
                errors.append(f"{route}: {e.strerror}")
                continue
            ctx.log("note", {**seen, "read": route})
            return {r["id"]: r["label"] for r in rows}[item.id]
    ctx.log("note", seen)
    raise PermissionError("no route to the labels through /proc: " + "; ".join(errors[:3]))
"""


@pytest.mark.parametrize("sandbox", SANDBOXES)
def test_reads_private_labels_via_proc(sandbox: str, arena: Arena) -> None:
    results, _ = arena.run_scaffold(sandbox, source(PROC, labels=str(arena.labels)))
    if sandbox == "process":
        # NOT CONTAINED: /proc/<orchestrator>/root is the host's /, and the orchestrator's
        # environment (API keys!) is readable too
        assert score(results) == 1.0
        seen = notes(results[0])[0]
        assert seen["read"] == f"/proc/{seen['ppid']}/root{arena.labels}"
        assert seen["ppid"] in seen["environ_readable"]
        return
    assert score(results) == 0.0
    for r in results:
        assert r.status == "error" and "PermissionError: no route to the labels" in r.error
        seen = notes(r)[0]
        # its own pid namespace: the supervisor (pid 1) and itself, nothing of the host
        assert seen["ppid"] == 1 and seen["visible_pids"] <= 3


# --------------------------------------------------------------------------------------------
# the network
# --------------------------------------------------------------------------------------------


class Canary(socketserver.ThreadingTCPServer):
    """A host TCP service that answers ``canary``: what a scaffold must not reach."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, host: str) -> None:
        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                self.request.sendall(b"canary")

        super().__init__((host, 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()


@pytest.fixture
def canary(request: pytest.FixtureRequest) -> Iterator[Canary]:
    server = Canary(request.param)
    yield server
    server.shutdown()
    server.server_close()


def host_address() -> str | None:
    """This machine's non-loopback address (no packet is sent), or ``None``."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("10.255.255.255", 1))
        except OSError:
            return None
        address = s.getsockname()[0]
    return None if address.startswith("127.") else address


CONNECT = """
import socket

def solve(item, ctx):
    reply = ctx.llm("hello")  # the model gateway: the one address that must keep working
    ctx.log("note", {"gateway": reply})
    with socket.create_connection(($host, $port), timeout=3) as s:
        return s.recv(16).decode()
"""


def _network_case(sandbox: str, arena: Arena, host: str, port: int, bwrap_error: str) -> None:
    results, calls = arena.run_scaffold(sandbox, source(CONNECT, host=host, port=port))
    assert [notes(r)[0]["gateway"] for r in results] == ["hi from the gateway"] * 2
    assert len(calls) == 2
    if sandbox == "process":
        # NOT CONTAINED: the process sandbox has no network isolation
        assert [(r.status, r.answer) for r in results] == [("ok", "canary")] * 2
        return
    for r in results:
        assert r.status == "error" and bwrap_error in r.error, r.error
    assert score(results) == 0.0


@pytest.mark.parametrize("canary", ["0.0.0.0"], indirect=True)
@pytest.mark.parametrize("sandbox", SANDBOXES)
def test_opens_a_tcp_connection_out(sandbox: str, arena: Arena, canary: Canary) -> None:
    address = host_address()
    if address is None:
        pytest.skip("this machine has no non-loopback address to stand for 'outside'")
    port = canary.server_address[1]
    _network_case(sandbox, arena, address, port, "[Errno 101] Network is unreachable")


@pytest.mark.parametrize("canary", ["127.0.0.1"], indirect=True)
@pytest.mark.parametrize("sandbox", SANDBOXES)
def test_opens_a_tcp_connection_to_other_loopback_ports(
    sandbox: str, arena: Arena, canary: Canary
) -> None:
    port = canary.server_address[1]
    _network_case(sandbox, arena, "127.0.0.1", port, "ConnectionRefusedError")


# --------------------------------------------------------------------------------------------
# resources
# --------------------------------------------------------------------------------------------

BOMB = """
import os, time

def solve(item, ctx):
    if item.id != "hostile-0":
        return "after the bomb"
    if $bounded:
        kids = 0
        for _ in range(64):
            try:
                if os.fork() == 0:
                    time.sleep(20)
                    os._exit(0)
            except OSError:
                break
            kids += 1
        return kids
    while True:
        try:
            os.fork()
        except OSError:
            pass
"""


@pytest.mark.parametrize("sandbox", SANDBOXES)
def test_fork_bomb(sandbox: str, arena: Arena) -> None:
    limits = Limits(wall_s=30, memory_mb=512, max_procs=8)
    # as root only bwrap's pids cgroup stops a bomb: elsewhere only a bounded one (64) is safe
    capped = sandbox == "bwrap" and (not ROOT or pids_cgroup_parent() is not None)
    peak, braked = [0], [False]
    done = threading.Event()

    def watch() -> None:  # the peak, and an emergency brake should the limit fail
        while not done.is_set():
            found = running(str(arena.root))
            peak[0] = max(peak[0], len(found))
            if capped and len(found) > 4 * limits.max_procs:
                braked[0] = True
                kill_all(list(found))
            done.wait(0.02)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        results, _ = arena.run_scaffold(
            sandbox, source(BOMB, bounded=not capped), limits=limits, item_timeout_s=2
        )
    finally:
        done.set()
        watcher.join()
    assert not braked[0], f"the bomb grew past the limit ({peak[0]} processes)"
    bomb, after = results
    assert (after.status, after.answer) == ("ok", "after the bomb")  # a fresh worker went on
    if capped:
        # the real, unbounded bomb: held at max_procs (plus bwrap and its supervisor), then
        # killed with the worker when the item timed out
        assert (bomb.status, bomb.error) == ("timeout", "timed out after 2s")
        assert limits.max_procs <= peak[0] <= limits.max_procs + 2
        return
    assert bomb.status == "ok"
    if ROOT:  # NOT CONTAINED: the kernel does not apply RLIMIT_NPROC to root
        assert bomb.answer == 64
    else:
        assert bomb.answer < limits.max_procs


HOG = """
def solve(item, ctx):
    if item.id == "hostile-0":
        chunks = []
        while True:
            chunks.append(b"x" * (16 << 20))
    return "after the hog"
"""


@pytest.mark.parametrize("sandbox", SANDBOXES)
def test_allocates_until_killed(sandbox: str, arena: Arena) -> None:
    limits = Limits(wall_s=30, memory_mb=256)
    results, _ = arena.run_scaffold(sandbox, source(HOG), limits=limits, item_timeout_s=10)
    hog, after = results
    assert hog.status == "error" and hog.error.startswith("MemoryError"), hog.error
    assert (after.status, after.answer) == ("ok", "after the hog")  # the worker went on


LOOP = """
def solve(item, ctx):
    while item.id == "hostile-0":
        pass
    return "after the loop"
"""


@pytest.mark.parametrize("sandbox", SANDBOXES)
def test_infinite_loop(sandbox: str, arena: Arena) -> None:
    results, _ = arena.run_scaffold(sandbox, source(LOOP), item_timeout_s=1.5)
    spin, after = results
    assert (spin.status, spin.error) == ("timeout", "timed out after 1.5s")
    assert (after.status, after.answer) == ("ok", "after the loop")


FILL = """
import errno, os

def solve(item, ctx):
    tmp = 0
    try:  # a private, size-capped /tmp under bwrap; the host's /tmp under the process sandbox
        while tmp < (16 << 20):
            with open(f"/tmp/{$marker}-{tmp}", "wb") as f:
                f.write(b"x" * (1 << 20))
            tmp += 1 << 20
        tmp_result = "not full"
    except OSError as e:
        tmp_result = errno.errorcode[e.errno]
    files = 0  # many files, each under the size limit, in its own work dir
    while files < 12:
        with open(f"fill-{files}", "wb") as f:
            f.write(b"x" * (1 << 20))
        files += 1
    ctx.log("note", {"tmp": tmp_result, "tmp_bytes": tmp, "work_files": files})
    with open("one-big-file", "wb") as f:
        for _ in range(64):
            f.write(b"x" * (1 << 20))
    return "wrote it all"
"""


@pytest.mark.parametrize("sandbox", SANDBOXES)
def test_fills_the_disk(sandbox: str, arena: Arena) -> None:
    marker = f"sia-hostile-fill-{os.getpid()}-{arena.root.name}"
    limits = Limits(wall_s=30, file_size_mb=4)
    try:
        results, _ = arena.run_scaffold(sandbox, source(FILL, marker=marker), limits=limits)
        host_tmp = sorted(Path("/tmp").glob(f"{marker}-*"))
    finally:
        for path in Path("/tmp").glob(f"{marker}-*"):
            path.unlink()
    for r in results:
        # one file over file_size_mb: refused in both sandboxes, recorded as the item's error
        assert r.status == "error" and "OSError: [Errno 27] File too large" in r.error, r.error
        assert (arena.work / "worker-0/one-big-file").stat().st_size == 4 << 20
    # NOT CONTAINED by either: many files under the size limit in the work dir (no disk quota;
    # the item's time limit bounds it)
    assert len(list((arena.work / "worker-0").glob("fill-*"))) == 12
    tmp = [notes(r)[0]["tmp"] for r in results]
    if sandbox == "process":
        # NOT CONTAINED: the host's /tmp takes whatever fits in the item's time
        assert tmp == ["not full"] * 2 and len(host_tmp) == 16
    else:
        assert tmp == ["ENOSPC"] * 2 and not host_tmp  # a private /tmp of file_size_mb


# --------------------------------------------------------------------------------------------
# processes
# --------------------------------------------------------------------------------------------

# a separate orchestrator (the real runner, in its own process) that the scaffold may kill
SACRIFICE = """
import json, sys
from pathlib import Path
from sia_core.services.gateway import Gateway
from sia_core.contracts.records import Item
from sia_core.services.runner import RunSpec, run_items
from sia_core.contracts.sandbox import Limits
from sia_core.services.process_sandbox import ProcessSandbox
from sia_core.surface.builtin.scripted import ScriptedTaskModel
from sia_sandbox_bwrap.sandbox import BwrapSandbox

sandbox, scaffold, public, work = sys.argv[1:5]  # sacrificial-orchestrator
spec = RunSpec(scaffold_path=Path(scaffold), work_dir=Path(work), public_dir=Path(public),
               parallel=1, item_timeout_s=10, setup_timeout_s=20, limits=Limits(wall_s=30))
items = [Item(id=f"hostile-{k}", input=k, split="dev") for k in range(2)]
box = BwrapSandbox() if sandbox == "bwrap" else ProcessSandbox()
with Gateway(ScriptedTaskModel()) as gw:
    gw.begin(1)
    results = run_items(spec, items, sandbox=box, gateway=gw)
print(json.dumps([[r.status, r.answer, r.error] for r in results]))
"""

KILL_PARENT = """
import os, signal

def solve(item, ctx):
    if item.id != "hostile-0":
        return "after the attack"
    parent = os.getppid()
    cmdline = open(f"/proc/{parent}/cmdline", "rb").read() if parent != 1 else b""
    attempts = {}
    for target, sig in ((parent, signal.SIGSTOP), (parent, signal.SIGKILL), (1, signal.SIGTERM)):
        if target != 1 and b"sacrificial-orchestrator" not in cmdline:
            raise RuntimeError("refusing to signal a process that is not the test's orchestrator")
        try:
            os.kill(target, sig)
            attempts[f"{target}/{sig.name}"] = "sent"
        except OSError as e:
            attempts[f"{target}/{sig.name}"] = e.strerror
    if parent != 1:
        return attempts
    # inside a pid namespace: everything it may signal (there: only its own processes)
    if sum(p.isdigit() for p in os.listdir("/proc")) > 10:
        raise RuntimeError("refusing kill(-1): this does not look like a sandbox")
    os.kill(-1, signal.SIGKILL)
    return attempts
"""


@pytest.mark.parametrize("sandbox", SANDBOXES)
def test_kills_or_signals_its_parent(sandbox: str, arena: Arena) -> None:
    scaffold = arena.gen / "target_agent.py"
    scaffold.write_text(source(KILL_PARENT))
    argv = [sys.executable, "-c", SACRIFICE, sandbox, str(scaffold), str(arena.public)]
    done = subprocess.run(
        [*argv, str(arena.work)], capture_output=True, text=True, timeout=60, check=False
    )
    if sandbox == "process":
        # NOT CONTAINED: the scaffold stopped and then killed the orchestrator (same uid)
        assert done.returncode == -9, (done.returncode, done.stderr[-2000:])
        return
    assert done.returncode == 0, done.stderr[-2000:]
    (attack_status, _, attack_error), after = json.loads(done.stdout.splitlines()[-1])
    # its parent is the sandbox's pid 1, which ignores whatever its namespace sends it, and
    # kill(-1) finds nobody else in there: recorded as the item's error; the run went on
    assert attack_status == "error", attack_error
    assert attack_error.startswith("ProcessLookupError: [Errno 3] No such process")
    assert after == ["ok", "after the attack", ""]


BACKGROUND = """
import os, subprocess, sys, time

SLEEPER = "import time; time.sleep(30)"

def solve(item, ctx):
    subprocess.Popen([sys.executable, "-c", SLEEPER, "plain-child"])
    if os.fork() == 0:  # a daemon: double fork + setsid, re-parented away from the worker
        os.setsid()
        if os.fork() == 0:
            os.execv(sys.executable, [sys.executable, "-c", SLEEPER, "daemon"])
        os._exit(0)
    time.sleep(0.3)
    return "returned"
"""


@pytest.mark.parametrize("sandbox", SANDBOXES)
def test_leaves_a_background_process_running(
    sandbox: str, arena: Arena, nothing_left_running: Leftovers
) -> None:
    results, _ = arena.run_scaffold(sandbox, source(BACKGROUND), items=ITEMS[:1])
    assert [(r.status, r.answer) for r in results] == [("ok", "returned")]
    if sandbox == "process":
        # NOT CONTAINED: the daemon left the session and its parent died, so kill_tree cannot
        # find it (the plain child was killed); the test kills it here
        left = " ".join(nothing_left_running.sweep().values())
        assert "daemon" in left and "plain-child" not in left
        return
    # bwrap: both died with the sandbox's pid namespace (the autouse fixture checks it)
