"""The bwrap sandbox: the shared conformance suite plus what only a real sandbox can promise."""

from __future__ import annotations

import json
import os
import shutil
import socket
import socketserver
import subprocess
import sys
import tempfile
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sia_core import testing
from sia_core.contracts.records import Item
from sia_core.contracts.sandbox import Limits, Sandbox, SandboxedProcess
from sia_core.services.gateway import Gateway
from sia_core.services.runner import HOST_PATH, RunSpec, run_items, run_program
from sia_core.surface.builtin.scripted import ScriptedTaskModel
from sia_core.surface.cli.running import choose_sandbox
from sia_core.testing.conformance.sandbox import SandboxConformance
from sia_sandbox_bwrap import plugin
from sia_sandbox_bwrap.host_resources import pids_cgroup_parent, sweep_stale
from sia_sandbox_bwrap.sandbox import BwrapProcess, BwrapSandbox, make_bwrap_sandbox

REPO = Path(__file__).resolve().parents[2]
OK, WHY = BwrapSandbox().available()
if not OK and not os.environ.get("CI"):
    # CI installs bubblewrap (scripts/setup-system) and must run these; elsewhere say why not
    pytest.skip(f"bwrap sandbox not available here: {WHY}", allow_module_level=True)


class TestBwrapSandbox(SandboxConformance):
    @pytest.fixture
    def sandbox(self) -> Sandbox:
        return BwrapSandbox()


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


@pytest.fixture
def box() -> BwrapSandbox:
    return BwrapSandbox()


@pytest.fixture
def procs() -> Iterator[list[SandboxedProcess]]:
    started: list[SandboxedProcess] = []
    yield started
    for proc in started:
        proc.kill_tree()


def run_code(
    box: BwrapSandbox,
    procs: list[SandboxedProcess],
    work: Path,
    code: str,
    *args: str,
    env: dict[str, str] | None = None,
    limits: Limits | None = None,
    ro_paths: tuple[Path, ...] = (),
) -> tuple[int | None, Any, str]:
    """Run ``code`` in the sandbox; ``(rc, the JSON it printed last, stderr)``."""
    work.mkdir(parents=True, exist_ok=True)
    proc = box.spawn(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        cwd=work,
        env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", **(env or {})},
        limits=limits or Limits(wall_s=30),
        ro_paths=ro_paths,
        rw_paths=(work,),
        stdin=subprocess.DEVNULL,
    )
    procs.append(proc)
    out, err = proc.popen.communicate(timeout=30)
    lines = out.decode().strip().splitlines()
    return proc.wait(timeout=5), json.loads(lines[-1]) if lines else None, err.decode()


class _Canary(socketserver.ThreadingTCPServer):
    """A TCP server on the host that answers ``canary`` to whoever connects."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, host: str) -> None:
        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                self.request.sendall(b"canary")

        super().__init__((host, 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.shutdown()
        self.server_close()


def _host_address() -> str | None:
    """A non-loopback address of this machine (no packet is sent), or ``None``."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("10.255.255.255", 1))
            address = s.getsockname()[0]
        except OSError:
            return None
    return None if address.startswith("127.") else address


# --------------------------------------------------------------------------------------------
# plugin and availability
# --------------------------------------------------------------------------------------------


def test_plugin_yields_the_spec_and_auto_prefers_bwrap(sia_pm, register_plugin) -> None:
    register_plugin(plugin, "sandbox-bwrap")
    spec = sia_pm.sandboxes().get("bwrap")
    assert spec.auto_priority == 10 and "\n" not in spec.isolation
    assert spec.factory == "sia_sandbox_bwrap.sandbox:make_bwrap_sandbox"
    assert isinstance(make_bwrap_sandbox(), BwrapSandbox)
    name, why = choose_sandbox(sia_pm, "auto")
    assert name == "bwrap" and "highest-priority available sandbox" in why


def test_unavailable_says_why(sia_pm, register_plugin, tmp_path: Path) -> None:
    missing = BwrapSandbox(bwrap=str(tmp_path / "no-bwrap"))
    ok, why = missing.available()
    assert not ok and "bubblewrap" in why and "setup-system" in why
    broken = tmp_path / "broken-bwrap"
    broken.write_text("#!/bin/sh\necho 'bwrap: No permission to create namespaces' >&2\nexit 1\n")
    broken.chmod(0o755)
    ok, why = BwrapSandbox(bwrap=str(broken)).available()
    assert not ok and "No permission to create namespaces" in why


def test_auto_falls_back_to_process_with_the_reason(
    sia_pm, register_plugin, monkeypatch: pytest.MonkeyPatch
) -> None:
    register_plugin(plugin, "sandbox-bwrap")
    monkeypatch.setattr(BwrapSandbox, "available", lambda self: (False, "no bwrap here"))
    name, why = choose_sandbox(sia_pm, "auto")
    assert name == "process"
    assert "bwrap (no bwrap here)" in why and "NO file-system or network isolation" in why


# --------------------------------------------------------------------------------------------
# file system
# --------------------------------------------------------------------------------------------


def test_only_allowed_paths_are_visible(
    box: BwrapSandbox, procs: list[SandboxedProcess], tmp_path: Path
) -> None:
    task = tmp_path / "task"
    (task / "data/public").mkdir(parents=True)
    (task / "data/private").mkdir(parents=True)
    (task / "data/public/dev.jsonl").write_text("{}\n")
    (task / "data/private/dev_labels.jsonl").write_text('{"id": 1, "label": 42}\n')
    other_gen = tmp_path / "run/gen_1"
    other_gen.mkdir(parents=True)
    (other_gen / "target_agent.py").write_text("secret = 1\n")
    (tmp_path / "run/events.jsonl").write_text("{}\n")
    work = tmp_path / "run/gen_2/work"
    code = """
    import json, os, sys
    paths = sys.argv[1:]
    print(json.dumps({p: os.path.exists(p) for p in paths}))
    """
    hidden = [
        task / "data/private/dev_labels.jsonl",
        task / "data/private",
        other_gen / "target_agent.py",
        tmp_path / "run/events.jsonl",
        REPO / "README.md",
        REPO / ".git",
        Path.home() / ".bashrc",
        Path("/etc/shadow"),
        Path("/var"),
        Path("/home"),
    ]
    shown = [task / "data/public/dev.jsonl", Path(sys.executable), Path("/usr/bin/env")]
    rc, seen, err = run_code(
        box, procs, work, code, *map(str, hidden + shown), ro_paths=(task / "data/public",)
    )
    assert rc == 0, err
    assert {p for p, there in seen.items() if there} == {str(p) for p in shown}
    # the home directory and the repo exist on the host, so their absence is the sandbox's doing
    assert (REPO / "README.md").exists() and Path.home().is_dir()


def test_private_data_of_installed_packages_and_sia_core_stays_hidden(
    procs: list[SandboxedProcess], tmp_path: Path
) -> None:
    """A task package installed into site-packages ships its labels; the runner binds the folder
    of scaffold_host.py (the runner's own package): only the host script is shown."""
    site = tmp_path / "site-packages"
    (site / "sia_task_x/task/data/private").mkdir(parents=True)
    (site / "sia_task_x/task/data/public").mkdir(parents=True)
    (site / "sia_task_x/task/data/private/dev_labels.jsonl").write_text("{}\n")
    (site / "sia_task_x/task/data/public/dev.jsonl").write_text("{}\n")
    tiny_labels = Path(testing.__file__).parent / "tiny_task/data/private/dev_labels.jsonl"
    assert tiny_labels.is_file()
    code = """
    import json, os, sys
    print(json.dumps({p: os.path.exists(p) for p in sys.argv[1:]}))
    """
    paths = {
        site / "sia_task_x/task/data/private/dev_labels.jsonl": False,
        site / "sia_task_x/task/data/private": True,  # an empty folder stands in its place
        site / "sia_task_x/task/data/public/dev.jsonl": True,
        tiny_labels: False,
        HOST_PATH.parent / "__init__.py": False,
        HOST_PATH: True,
    }
    box = BwrapSandbox(system_paths=(site,))
    rc, seen, err = run_code(
        box, procs, tmp_path / "work", code, *map(str, paths), ro_paths=(HOST_PATH.parent,)
    )
    assert rc == 0, err
    assert seen == {str(p): there for p, there in paths.items()}


def test_writes_outside_the_work_dir_fail(
    box: BwrapSandbox, procs: list[SandboxedProcess], tmp_path: Path
) -> None:
    public = tmp_path / "public"
    public.mkdir()
    (public / "task.md").write_text("the task\n")
    code = """
    import json, os, sys
    out = {}
    for path in sys.argv[1:]:
        try:
            with open(path, "a") as f:
                f.write("pwned")
            out[path] = "written"
        except OSError as e:
            out[path] = e.errno
    print(json.dumps(out))
    """
    targets = [
        public / "task.md",
        public / "new.txt",
        "/etc/passwd",
        "/usr/x",
        "/x",
        sys.executable,
    ]
    work = tmp_path / "work"
    rc, seen, err = run_code(
        box, procs, work, code, *map(str, targets), "mine.txt", ro_paths=(public,)
    )
    assert rc == 0, err
    assert seen.pop("mine.txt") == "written"
    assert all(v != "written" for v in seen.values()), seen
    assert (public / "task.md").read_text() == "the task\n"
    assert not (public / "new.txt").exists()
    assert (work / "mine.txt").read_text() == "pwned"


def test_private_tmp_is_size_capped_and_not_the_hosts(
    box: BwrapSandbox, procs: list[SandboxedProcess], tmp_path: Path
) -> None:
    prefix = f"sia-bwrap-test-fill-{os.getpid()}-{tmp_path.name}"
    code = """
    import errno, json, os, sys
    written = 0
    try:
        while written < 64 * 2**20:
            with open(f"/tmp/{sys.argv[1]}-{written}", "wb") as f:
                f.write(b"x" * 2**20)
            written += 2**20
        out = "not full"
    except OSError as e:
        out = errno.errorcode[e.errno]
    print(json.dumps([out, written]))
    """
    try:
        rc, (out, written), err = run_code(
            box, procs, tmp_path / "work", code, prefix, limits=Limits(wall_s=30, file_size_mb=4)
        )
        on_host = list(Path("/tmp").glob(f"{prefix}-*"))
    finally:
        for path in Path("/tmp").glob(f"{prefix}-*"):
            path.unlink()
    assert rc == 0, err
    assert out == "ENOSPC" and written <= 4 * 2**20
    assert not on_host


# --------------------------------------------------------------------------------------------
# network and the gateway
# --------------------------------------------------------------------------------------------

NET_PROBE = """
import json, socket, sys
out = {}
for target in sys.argv[1:]:
    host, port = target.rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=3) as s:
            out[target] = s.recv(16).decode()
    except OSError as e:
        out[target] = type(e).__name__ + ":" + str(e.errno)
print(json.dumps(out))
"""


def test_no_network_but_the_gateway(
    box: BwrapSandbox, procs: list[SandboxedProcess], tmp_path: Path
) -> None:
    loopback = _Canary("127.0.0.1")
    outside = _Canary("0.0.0.0")
    address = _host_address()
    try:
        targets = [f"127.0.0.1:{loopback.server_address[1]}"]
        if address:
            targets.append(f"{address}:{outside.server_address[1]}")
        targets.append("198.51.100.1:80")  # TEST-NET-2
        # the canaries are reachable from the host itself
        for target in targets[:-1]:
            host, port = target.rsplit(":", 1)
            with socket.create_connection((host, int(port)), timeout=3) as s:
                assert s.recv(16) == b"canary"
        rc, seen, err = run_code(box, procs, tmp_path / "work", NET_PROBE, *targets)
    finally:
        loopback.close()
        outside.close()
    assert rc == 0, err
    assert seen[targets[0]] == "ConnectionRefusedError:111"  # the sandbox's own loopback
    for target in targets[1:]:
        assert seen[target] == "OSError:101", (target, seen)  # Network is unreachable


def test_ordinary_http_client_reaches_the_gateway_and_nothing_else(
    box: BwrapSandbox, procs: list[SandboxedProcess], tmp_path: Path
) -> None:
    model = ScriptedTaskModel({"rules": [{"match": "ping", "reply": "pong"}]})
    code = """
    import json, os, urllib.request
    base = os.environ["OPENAI_BASE_URL"]
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "ping"}]})
    req = urllib.request.Request(base + "/chat/completions", data=body.encode(), headers={
        "Authorization": "Bearer " + os.environ["OPENAI_API_KEY"],
        "Content-Type": "application/json"})
    replies = []
    for _ in range(3):  # a connection per call, and the relay keeps up
        with urllib.request.urlopen(req, timeout=10) as resp:
            replies.append(json.load(resp)["choices"][0]["message"]["content"])
    print(json.dumps(replies))
    """
    with Gateway(model) as gateway:
        gateway.begin(1)
        token = gateway.new_token()
        gateway.assign(token, "item-1")  # the key, not anything the scaffold sends, names the item
        env = {"OPENAI_BASE_URL": gateway.url, "SIA_GATEWAY_URL": gateway.url}
        rc, replies, err = run_code(
            box, procs, tmp_path / "work", code, env={**env, "OPENAI_API_KEY": token}
        )
        calls = gateway.calls()
    assert rc == 0, err
    assert replies == ["pong"] * 3
    assert [c.item_id for c in calls] == ["item-1"] * 3 and all(c.status == "ok" for c in calls)


def test_runner_workers_run_in_bwrap_through_the_gateway(tmp_path: Path) -> None:
    """The real runner with the paths it passes today: per-item workers start, see their
    public data and answer through the gateway."""
    public = tmp_path / "task/data/public"
    public.mkdir(parents=True)
    (public / "hint.txt").write_text("from public\n")
    scaffold = tmp_path / "gen_1/target_agent.py"
    scaffold.parent.mkdir()
    scaffold.write_text(
        textwrap.dedent(
            """
            import os

            def solve(item, ctx):
                hint = (ctx.public_dir / "hint.txt").read_text().strip()
                return [ctx.llm("ping " + item.id), hint]
            """
        )
    )
    spec = RunSpec(
        scaffold_path=scaffold,
        work_dir=tmp_path / "gen_1/work",
        public_dir=public,
        parallel=2,
        item_timeout_s=20,
        setup_timeout_s=20,
        limits=Limits(wall_s=60),
    )
    items = [Item(id=f"i{k}", input=k, split="dev") for k in range(3)]
    with Gateway(ScriptedTaskModel({"default": "pong"})) as gateway:
        gateway.begin(1)
        results = run_items(spec, items, sandbox=BwrapSandbox(), gateway=gateway)
        calls = gateway.calls()
    assert [r.status for r in results] == ["ok"] * 3, [r.error for r in results]
    assert [r.answer for r in results] == [["pong", "from public"]] * 3
    assert sorted(c.item_id for c in calls) == ["i0", "i1", "i2"]


def test_program_scaffold_runs_in_bwrap(tmp_path: Path) -> None:
    """A program-style scaffold (SIA's reference agents) through ``run_program``."""
    public = tmp_path / "task/data/public"
    public.mkdir(parents=True)
    (public / "dev.jsonl").write_text('{"id": "a"}\n')
    scaffold = tmp_path / "gen_1/target_agent.py"
    scaffold.parent.mkdir()
    scaffold.write_text(
        textwrap.dedent(
            """
            import argparse, json, os, pathlib, urllib.request
            p = argparse.ArgumentParser()
            p.add_argument("--dataset_dir")
            p.add_argument("--working_dir")
            a = p.parse_args()
            body = json.dumps({"messages": [{"role": "user", "content": "hi"}]}).encode()
            req = urllib.request.Request(os.environ["OPENAI_BASE_URL"] + "/chat/completions",
                data=body, headers={"Authorization": "Bearer " + os.environ["OPENAI_API_KEY"]})
            reply = json.load(urllib.request.urlopen(req))["choices"][0]["message"]["content"]
            ids = [json.loads(l)["id"] for l in open(pathlib.Path(a.dataset_dir, "dev.jsonl"))]
            pathlib.Path(a.working_dir, "answers.json").write_text(json.dumps({ids[0]: reply}))
            """
        )
    )
    spec = RunSpec(
        scaffold_path=scaffold,
        work_dir=tmp_path / "gen_1/work",
        public_dir=public,
        limits=Limits(wall_s=30),
    )
    with Gateway(ScriptedTaskModel({"default": "pong"})) as gateway:
        gateway.begin(1)
        result = run_program(spec, sandbox=BwrapSandbox(), gateway=gateway)
    assert result.status == "ok", result.error
    assert json.loads((tmp_path / "gen_1/work/answers.json").read_text()) == {"a": "pong"}


# --------------------------------------------------------------------------------------------
# processes and limits
# --------------------------------------------------------------------------------------------


def test_no_capabilities_and_max_procs_caps_the_tree(
    box: BwrapSandbox, procs: list[SandboxedProcess], tmp_path: Path
) -> None:
    code = """
    import json, os, time
    n = 0
    try:
        for _ in range(64):
            if os.fork() == 0:
                time.sleep(1)
                os._exit(0)
            n += 1
        out = "all forked"
    except OSError as e:
        out = e.strerror
    status = dict(line.split(":\t") for line in open("/proc/self/status").read().splitlines()
                  if line.startswith(("Cap", "NoNewPrivs")))
    print(json.dumps([status, n, out]))
    """
    rc, (status, forked, out), err = run_code(
        box, procs, tmp_path / "work", code, limits=Limits(wall_s=30, max_procs=8)
    )
    assert rc == 0, err
    assert {v for k, v in status.items() if k.startswith("Cap")} == {"0000000000000000"}
    assert status["NoNewPrivs"] == "1"
    if os.geteuid() == 0 and pids_cgroup_parent() is None:
        pytest.skip("as root without a writable pids cgroup nothing caps max_procs (documented)")
    assert forked < 8 and out == "Resource temporarily unavailable"


def test_pass_fds_reach_the_command_and_exit_status_is_the_commands(
    box: BwrapSandbox, procs: list[SandboxedProcess], tmp_path: Path
) -> None:
    read_fd, write_fd = os.pipe()
    work = tmp_path / "work"
    work.mkdir()
    try:
        proc = box.spawn(
            [
                sys.executable,
                "-c",
                f"import os, sys; os.write({write_fd}, b'via fd'); os.kill(os.getpid(), 15)",
            ],
            cwd=work,
            env={"PATH": "/usr/bin:/bin"},
            limits=Limits(wall_s=30),
            rw_paths=(work,),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            pass_fds=(write_fd,),
        )
    finally:
        os.close(write_fd)
    procs.append(proc)
    assert isinstance(proc, BwrapProcess)
    assert proc.wait(timeout=20) == -15
    with os.fdopen(read_fd, "rb") as f:
        assert f.read() == b"via fd"  # EOF too: nothing in the sandbox holds the pipe any more
    cgroup = proc.cgroup
    proc.kill_tree()
    assert cgroup is None or not cgroup.exists()  # the pids cgroup goes with the sandbox


def test_leftovers_of_a_killed_orchestrator_are_swept(tmp_path: Path) -> None:
    dead = _dead_pid()
    stale = Path(tempfile.gettempdir()) / f"sia-bwrap-{dead}-stale"
    mine = Path(tempfile.gettempdir()) / f"sia-bwrap-{os.getpid()}-alive"
    for folder in (stale, mine):
        (folder / "sub").mkdir(parents=True)
    try:
        sweep_stale.__wrapped__()
        assert not stale.exists() and mine.exists()
    finally:
        shutil.rmtree(stale, ignore_errors=True)
        shutil.rmtree(mine, ignore_errors=True)


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


@pytest.mark.slow
def test_relay_keeps_a_slow_model_call_open(tmp_path: Path) -> None:
    """A model call answered after more than the relay's 10 s connect timeout still arrives."""
    from sia_sandbox_bwrap.gateway import HostRelay

    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]

    def answer_late() -> None:
        conn, _ = server.accept()
        with conn:
            conn.recv(100)
            threading.Event().wait(11.5)
            conn.sendall(b"late answer")

    threading.Thread(target=answer_late, daemon=True).start()
    relay = HostRelay(tmp_path / "gw.sock", "127.0.0.1", port)
    try:
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        client.settimeout(30)
        client.connect(str(tmp_path / "gw.sock"))
        client.sendall(b"question")
        assert client.recv(100) == b"late answer"
        client.close()
    finally:
        relay.close()
        server.close()
