"""The process sandbox: the shared conformance suite plus process-specific checks."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterable
from pathlib import Path

import pytest

from sia_core.contracts.sandbox import Limits, Sandbox, SandboxedProcess
from sia_core.services.process_sandbox import (
    CompletedRun,
    ProcessSandbox,
    make_process_sandbox,
    run,
)
from sia_core.testing.conformance.sandbox import SandboxConformance

PY = sys.executable


class TestProcessSandbox(SandboxConformance):
    @pytest.fixture
    def sandbox(self) -> Sandbox:
        return ProcessSandbox()


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for init to reap it counts as dead)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2] not in "ZX"


def _wait_pids(paths: Iterable[Path], timeout: float = 20.0) -> list[int]:
    paths = list(paths)
    deadline = time.monotonic() + timeout
    while True:
        try:
            return [int(p.read_text()) for p in paths]
        except (OSError, ValueError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def _gone(pids: Iterable[int], timeout: float = 2.0) -> bool:
    deadline = time.monotonic() + timeout
    while any(_alive(p) for p in pids):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


@pytest.fixture
def spawned() -> Iterable[list[SandboxedProcess]]:
    procs: list[SandboxedProcess] = []
    yield procs
    for proc in procs:
        proc.kill_tree()


def _spawn(
    spawned: list[SandboxedProcess], tmp_path: Path, code: str, *args: str, **kwargs: object
) -> SandboxedProcess:
    kwargs.setdefault("limits", Limits(wall_s=30))
    kwargs.setdefault("env", {"PATH": os.defpath})
    proc = ProcessSandbox().spawn(
        [PY, "-c", code, *args],
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        **kwargs,  # type: ignore[arg-type]
    )
    spawned.append(proc)
    return proc


# --------------------------------------------------------------------------------------------
# process-specific
# --------------------------------------------------------------------------------------------


def test_factory_and_protocol() -> None:
    box = make_process_sandbox()
    assert isinstance(box, ProcessSandbox)
    assert isinstance(box, Sandbox)
    assert box.name == "process"
    assert "no file-system or network isolation" in box.isolation
    assert "root" in box.isolation  # says nproc is not enforced for root


def test_limits_defaults() -> None:
    limits = Limits()
    assert (limits.wall_s, limits.memory_mb, limits.file_size_mb) == (600.0, 4096, 512)
    assert (limits.max_procs, limits.open_files, limits.cpu_s) == (512, 1024, None)


def test_env_is_exactly_what_was_given(
    spawned: list[SandboxedProcess], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-host-secret")
    env = {"PATH": os.defpath, "ONLY": "this"}
    # /proc/self/environ is the environment exec got, before Python's locale coercion edits it
    code = "import sys; sys.stdout.buffer.write(open('/proc/self/environ', 'rb').read())"
    proc = _spawn(spawned, tmp_path, code, env=env, stdout=subprocess.PIPE)
    out, _ = proc.popen.communicate(timeout=30)
    got = dict(kv.split("=", 1) for kv in out.decode().split("\0") if kv)
    assert got == env


def test_new_session_and_rlimits_applied(spawned: list[SandboxedProcess], tmp_path: Path) -> None:
    code = textwrap.dedent(
        """
        import os, resource
        print(os.getsid(0) == os.getpid(), resource.getrlimit(resource.RLIMIT_NOFILE)[0],
              resource.getrlimit(resource.RLIMIT_AS)[0] // 2**20)
        """
    )
    limits = Limits(wall_s=30, open_files=77, memory_mb=300)
    proc = _spawn(spawned, tmp_path, code, limits=limits, stdout=subprocess.PIPE)
    out, _ = proc.popen.communicate(timeout=30)
    assert out.decode().split() == ["True", "77", "300"]


def test_open_files_limit(spawned: list[SandboxedProcess], tmp_path: Path) -> None:
    code = "fs = [open(__import__('os').devnull) for _ in range(100)]"
    proc = _spawn(
        spawned, tmp_path, code, limits=Limits(wall_s=30, open_files=20), stderr=subprocess.PIPE
    )
    _, err = proc.popen.communicate(timeout=30)
    assert proc.wait(5) != 0
    assert b"Too many open files" in err


def test_cpu_limit_kills_busy_loop(spawned: list[SandboxedProcess], tmp_path: Path) -> None:
    proc = _spawn(spawned, tmp_path, "while True: pass", limits=Limits(wall_s=30, cpu_s=1))
    rc = proc.wait(timeout=15)
    assert rc is not None and rc < 0  # SIGXCPU (or SIGKILL at the hard limit)


def test_kill_tree_reaches_grandchild_and_nohup_child_pids(
    spawned: list[SandboxedProcess], tmp_path: Path
) -> None:
    code = textwrap.dedent(
        """
        import subprocess, sys
        d = sys.argv[1]
        # a grandchild that ignores SIGTERM
        g = subprocess.Popen([sys.executable, "-c",
            "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(300)"])
        open(d + "/grandchild.pid", "w").write(str(g.pid))
        # a nohup-style background child of a shell that exits at once
        subprocess.run(["sh", "-c", "nohup sleep 300 >/dev/null 2>&1 & echo $! > " + d + "/bg.pid"])
        # a child in its own process group (same session): killpg alone would miss it
        p = subprocess.Popen(["sleep", "300"], process_group=0)
        open(d + "/pgrp.pid", "w").write(str(p.pid))
        import time
        time.sleep(300)
        """
    )
    proc = _spawn(spawned, tmp_path, code, str(tmp_path))
    pids = _wait_pids([tmp_path / "grandchild.pid", tmp_path / "bg.pid", tmp_path / "pgrp.pid"])
    assert os.getpgid(pids[2]) != proc.pid
    assert all(_alive(p) for p in pids)
    assert set(pids) <= proc.members()
    proc.kill_tree()
    assert _gone([proc.pid, *pids])
    assert proc.members() == set()


def test_kill_tree_follows_setsid_child_of_live_parent(
    spawned: list[SandboxedProcess], tmp_path: Path
) -> None:
    code = textwrap.dedent(
        """
        import subprocess, sys, time
        c = subprocess.Popen(["sleep", "300"], start_new_session=True)  # leaves our session
        open(sys.argv[1], "w").write(str(c.pid))
        time.sleep(300)
        """
    )
    proc = _spawn(spawned, tmp_path, code, str(tmp_path / "escaped.pid"))
    (pid,) = _wait_pids([tmp_path / "escaped.pid"])
    assert os.getsid(pid) != proc.sid
    proc.kill_tree()
    assert _gone([pid])


def test_run_returns_output_and_exit_code(tmp_path: Path) -> None:
    code = "import sys; print('out'); print('err', file=sys.stderr); sys.exit(3)"
    done = run([PY, "-c", code], cwd=tmp_path, env={"PATH": os.defpath}, limits=Limits(wall_s=30))
    assert isinstance(done, CompletedRun)
    assert (done.rc, done.stdout.strip(), done.stderr.strip(), done.timed_out) == (
        3,
        "out",
        "err",
        False,
    )


def test_run_timeout_kills_tree(tmp_path: Path) -> None:
    code = textwrap.dedent(
        """
        import subprocess, sys, time
        c = subprocess.Popen(["sleep", "300"])
        open(sys.argv[1], "w").write(str(c.pid))
        print("started", flush=True)
        time.sleep(300)
        """
    )
    t0 = time.monotonic()
    done = run(
        [PY, "-c", code, str(tmp_path / "child.pid")],
        cwd=tmp_path,
        env={"PATH": os.defpath},
        limits=Limits(wall_s=1.0),
    )
    elapsed = time.monotonic() - t0
    assert done.timed_out and done.rc is None
    assert "started" in done.stdout
    assert 0.9 <= done.seconds < 60 and elapsed < 60  # upper bounds: hang guards
    (pid,) = _wait_pids([tmp_path / "child.pid"], timeout=0)
    assert _gone([pid])


def test_run_kills_background_left_by_finished_program(tmp_path: Path) -> None:
    # the background child keeps stdout open: run() must neither wait for it nor leave it
    code = textwrap.dedent(
        """
        import subprocess, sys
        c = subprocess.Popen(["sleep", "300"])
        open(sys.argv[1], "w").write(str(c.pid))
        print("main done")
        """
    )
    log = tmp_path / "both.log"
    done = run(
        [PY, "-c", code, str(tmp_path / "bg.pid")],
        cwd=tmp_path,
        env={"PATH": os.defpath},
        limits=Limits(wall_s=30),
        stdout_path=log,
        stderr_path=log,
    )
    assert done.rc == 0 and not done.timed_out and done.seconds < 60
    assert "main done" in log.read_text() and "main done" in done.stdout
    (pid,) = _wait_pids([tmp_path / "bg.pid"], timeout=0)
    assert _gone([pid])
