"""Conformance suite every sandbox plugin reuses.

Subclass :class:`SandboxConformance` in a test module and supply a ``sandbox`` fixture::

    class TestMySandbox(SandboxConformance):
        @pytest.fixture
        def sandbox(self):
            return MySandbox()

Override ``python`` if the interpreter inside the sandbox lives elsewhere, and ``base_env``
if the sandbox needs more than ``PATH``. The checks only observe effects through files in a
writable directory (``rw_paths``), so they also hold for sandboxes with their own pid or mount
namespace. Every process a test starts is killed at teardown.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from sia_core.contracts.sandbox import Limits, Sandbox, SandboxedProcess

# a background child that writes a heartbeat line every 20 ms; run as: python -c HEARTBEAT path
HEARTBEAT = textwrap.dedent(
    """
    import signal, sys, time
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    while True:
        with open(sys.argv[1], "a") as f:
            f.write("beat\\n")
        time.sleep(0.02)
    """
)

# starts a grandchild that ignores SIGTERM, one in its own process group and a detached
# (double-forked, nohup-style) background child, all heart-beating, then sleeps forever
TREE = textwrap.dedent(
    """
    import os, subprocess, sys, time
    beat, out = sys.argv[1], sys.argv[2]
    subprocess.Popen([sys.executable, "-c", beat, os.path.join(out, "hb-grandchild")])
    # same session, own process group (what a shell with job control does)
    subprocess.Popen([sys.executable, "-c", beat, os.path.join(out, "hb-group")], process_group=0)
    if os.fork() == 0:  # detach: the middle process exits, the child is re-parented
        if os.fork() == 0:
            os.execv(sys.executable, [sys.executable, "-c", beat, os.path.join(out, "hb-daemon")])
        os._exit(0)
    print("started", flush=True)
    while True:
        time.sleep(1)
    """
)


class SandboxConformance:
    """Checks every :class:`~sia_core.contracts.sandbox.Sandbox` must pass. Supply a ``sandbox`` fixture."""

    #: interpreter used inside the sandbox
    python: str = sys.executable

    def base_env(self) -> dict[str, str]:
        """The minimal environment the sandboxed commands get."""
        return {"PATH": os.environ.get("PATH") or os.defpath, "LANG": "C.UTF-8"}

    @pytest.fixture
    def sandbox(self) -> Sandbox:  # pragma: no cover - subclasses override
        raise NotImplementedError("subclass SandboxConformance and supply a `sandbox` fixture")

    @pytest.fixture
    def spawned(self) -> Iterator[list[SandboxedProcess]]:
        procs: list[SandboxedProcess] = []
        yield procs
        for proc in procs:
            proc.kill_tree()

    @pytest.fixture
    def work(self, tmp_path: Path) -> Path:
        work = tmp_path / "work"
        work.mkdir()
        return work

    def start(
        self,
        sandbox: Sandbox,
        spawned: list[SandboxedProcess],
        work: Path,
        code: str,
        *args: str,
        limits: Limits | None = None,
        env: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> SandboxedProcess:
        proc = sandbox.spawn(
            [self.python, "-c", code, *args],
            cwd=work,
            env=env if env is not None else self.base_env(),
            limits=limits or Limits(wall_s=30),
            rw_paths=(work,),
            **kwargs,
        )
        spawned.append(proc)
        return proc

    def communicate(self, proc: SandboxedProcess, timeout: float = 30) -> tuple[str, str]:
        out, err = proc.popen.communicate(timeout=timeout)
        return (out or b"").decode("utf-8", "replace"), (err or b"").decode("utf-8", "replace")

    # -- identity ------------------------------------------------------------------------------

    def test_name_and_isolation(self, sandbox: Sandbox) -> None:
        assert isinstance(sandbox.name, str) and sandbox.name
        assert isinstance(sandbox.isolation, str) and sandbox.isolation.strip()
        assert "\n" not in sandbox.isolation

    def test_available_returns_bool_and_reason(self, sandbox: Sandbox) -> None:
        ok, reason = sandbox.available()
        assert isinstance(ok, bool)
        assert isinstance(reason, str) and reason
        assert ok, f"sandbox under test reports itself unavailable: {reason}"

    # -- running -------------------------------------------------------------------------------

    def test_exit_code_and_output(
        self, sandbox: Sandbox, spawned: list[SandboxedProcess], work: Path
    ) -> None:
        code = "import sys; print('to-out'); print('to-err', file=sys.stderr); sys.exit(7)"
        proc = self.start(sandbox, spawned, work, code, stdin=subprocess.DEVNULL)
        out, err = self.communicate(proc)
        assert proc.wait(timeout=10) == 7
        assert proc.poll() == 7
        assert out.strip() == "to-out"
        assert "to-err" in err

    def test_stdin_is_passed(
        self, sandbox: Sandbox, spawned: list[SandboxedProcess], work: Path
    ) -> None:
        proc = self.start(sandbox, spawned, work, "import sys; print(sys.stdin.read()[::-1])")
        out, _ = proc.popen.communicate(b"abc", timeout=30)
        assert out.decode().strip() == "cba"
        assert proc.wait(timeout=10) == 0

    def test_working_dir_is_writable(
        self, sandbox: Sandbox, spawned: list[SandboxedProcess], work: Path
    ) -> None:
        code = "open('made-here.txt', 'w').write('hello')"
        proc = self.start(sandbox, spawned, work, code, stdin=subprocess.DEVNULL)
        self.communicate(proc)
        assert proc.wait(timeout=10) == 0
        assert (work / "made-here.txt").read_text() == "hello"

    def test_env_is_what_was_given(
        self, sandbox: Sandbox, spawned: list[SandboxedProcess], work: Path
    ) -> None:
        os.environ["SIA_CONFORMANCE_SECRET"] = "do-not-leak"
        try:
            env = {**self.base_env(), "SIA_GIVEN": "yes"}
            code = "import os; print(os.environ.get('SIA_GIVEN'), os.environ.get('SIA_CONFORMANCE_SECRET'))"
            proc = self.start(sandbox, spawned, work, code, env=env, stdin=subprocess.DEVNULL)
            out, _ = self.communicate(proc)
        finally:
            del os.environ["SIA_CONFORMANCE_SECRET"]
        assert out.split() == ["yes", "None"]

    def test_wait_timeout_returns_none(
        self, sandbox: Sandbox, spawned: list[SandboxedProcess], work: Path
    ) -> None:
        proc = self.start(sandbox, spawned, work, "import time; time.sleep(60)")
        t0 = time.monotonic()
        assert proc.wait(timeout=0.3) is None
        assert time.monotonic() - t0 < 5
        assert proc.poll() is None
        proc.kill_tree()
        assert proc.poll() is not None
        proc.kill_tree()  # idempotent

    # -- killing the tree ----------------------------------------------------------------------

    @staticmethod
    def _wait_for(paths: Sequence[Path], timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while not all(p.exists() and p.stat().st_size > 0 for p in paths):
            if time.monotonic() > deadline:
                missing = [p.name for p in paths if not p.exists()]
                raise AssertionError(f"background processes never started: {missing}")
            time.sleep(0.02)

    @staticmethod
    def _sizes(paths: Sequence[Path]) -> list[int]:
        return [p.stat().st_size for p in paths]

    def assert_tree_dead(self, beats: Sequence[Path]) -> None:
        """The heartbeat files stop growing: nobody writes them anymore."""
        time.sleep(0.1)  # a write in flight at kill time may still land
        before = self._sizes(beats)
        time.sleep(0.4)
        assert self._sizes(beats) == before, "a background process survived kill_tree"

    def test_kill_tree_kills_grandchildren_and_detached_child(
        self, sandbox: Sandbox, spawned: list[SandboxedProcess], work: Path
    ) -> None:
        proc = self.start(
            sandbox, spawned, work, TREE, HEARTBEAT, str(work), stdout=subprocess.PIPE
        )
        beats = [work / "hb-grandchild", work / "hb-group", work / "hb-daemon"]
        self._wait_for(beats)
        # the tree is alive: heartbeats grow
        before = self._sizes(beats)
        time.sleep(0.2)
        assert all(b > a for a, b in zip(before, self._sizes(beats), strict=True))
        assert proc.wait(timeout=0.2) is None  # wall timeout reached: the caller kills
        proc.kill_tree()
        assert proc.poll() is not None
        self.assert_tree_dead(beats)

    def test_kill_tree_after_main_exited_kills_leftovers(
        self, sandbox: Sandbox, spawned: list[SandboxedProcess], work: Path
    ) -> None:
        code = textwrap.dedent(
            """
            import subprocess, sys
            subprocess.Popen([sys.executable, "-c", sys.argv[1], sys.argv[2]],
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
            """
        )
        beat = work / "hb-left"
        proc = self.start(sandbox, spawned, work, code, HEARTBEAT, str(beat))
        assert proc.wait(timeout=20) == 0
        self._wait_for([beat])
        proc.kill_tree()
        self.assert_tree_dead([beat])

    # -- limits --------------------------------------------------------------------------------

    def test_memory_limit_stops_big_allocation(
        self, sandbox: Sandbox, spawned: list[SandboxedProcess], work: Path
    ) -> None:
        code = "x = bytearray(2 * 1024**3); print('allocated', len(x))"
        proc = self.start(
            sandbox,
            spawned,
            work,
            code,
            limits=Limits(wall_s=30, memory_mb=256),
            stdin=subprocess.DEVNULL,
        )
        out, err = self.communicate(proc)
        rc = proc.wait(timeout=10)
        assert rc != 0
        assert "allocated" not in out
        if rc == 1:  # an rlimit makes Python raise, a cgroup OOM-kills instead
            assert "MemoryError" in err

    def test_file_size_limit(
        self, sandbox: Sandbox, spawned: list[SandboxedProcess], work: Path
    ) -> None:
        code = textwrap.dedent(
            """
            with open("big.bin", "wb") as f:
                for _ in range(8):
                    f.write(b"x" * 1024 * 1024)
            print("wrote all")
            """
        )
        proc = self.start(
            sandbox,
            spawned,
            work,
            code,
            limits=Limits(wall_s=30, file_size_mb=1),
            stdin=subprocess.DEVNULL,
        )
        out, _ = self.communicate(proc)
        assert proc.wait(timeout=10) != 0
        assert "wrote all" not in out
        assert (work / "big.bin").stat().st_size <= 1024 * 1024
