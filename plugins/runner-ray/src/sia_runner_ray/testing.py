"""A real two-node Ray cluster on this machine, the second node in its own network namespace.

:class:`TwoNodeCluster` makes a network namespace and a veth pair (``10.77.N.1`` on this side,
``10.77.N.2`` inside), starts a Ray head on ``10.77.N.1`` and a second node inside the namespace
that joins it across the veth pair, both with token authentication (a token file of the test's
own). The second node reaches the head, and the run's gateway, only through ``10.77.N.1``: a
different "host" as far as the network goes. Needs root (``ip netns``).
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RAY = str(Path(sys.executable).with_name("ray"))


def can_make_namespaces() -> str:
    """``""`` when this process can make network namespaces, else why not."""
    if os.geteuid() != 0:
        return "needs root for `ip netns`"
    if shutil.which("ip") is None:
        return "needs iproute2 (`ip`)"
    return ""


def _run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=check, timeout=600)


class TwoNodeCluster:
    """``up()`` starts both nodes; ``kill_second_node()`` SIGKILLs the second node's processes;
    ``down()`` stops everything and removes the namespace."""

    def __init__(self, root: Path, token: Path) -> None:
        self.root = root
        tag = secrets.token_hex(3)
        self.netns = f"sia-ray-{tag}"
        self.veth_host, self.veth_ns = f"sr{tag}h", f"sr{tag}n"
        self.subnet = 100 + int(tag, 16) % 150
        self.head_ip = f"10.77.{self.subnet}.1"
        self.node_ip = f"10.77.{self.subnet}.2"
        self.port = 0
        self.token = token  # a Ray process loads its token once: one file for a test session
        # Ray's sockets live in its temp dir: a Unix socket path has at most 107 bytes
        self.temp = Path(tempfile.mkdtemp(prefix="sia-ray-", dir="/tmp"))

    @property
    def address(self) -> str:
        return f"{self.head_ip}:{self.port}"

    def env(self) -> dict[str, str]:
        """The environment every Ray process of this cluster (and its drivers) needs."""
        return {
            **os.environ,
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN_PATH": str(self.token),
            "RAY_USAGE_STATS_ENABLED": "0",
            "HF_HUB_OFFLINE": "1",
        }

    def up(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        _run("ip", "netns", "add", self.netns)
        _run("ip", "link", "add", self.veth_host, "type", "veth", "peer", "name", self.veth_ns)
        _run("ip", "link", "set", self.veth_ns, "netns", self.netns)
        _run("ip", "addr", "add", f"{self.head_ip}/24", "dev", self.veth_host)
        _run("ip", "link", "set", self.veth_host, "up")
        inside = ("ip", "netns", "exec", self.netns)
        _run(*inside, "ip", "addr", "add", f"{self.node_ip}/24", "dev", self.veth_ns)
        _run(*inside, "ip", "link", "set", self.veth_ns, "up")
        _run(*inside, "ip", "link", "set", "lo", "up")
        with socket.socket() as s:
            s.bind((self.head_ip, 0))
            self.port = s.getsockname()[1]
        self._start(
            "--head",
            f"--node-ip-address={self.head_ip}",
            f"--port={self.port}",
            "--include-dashboard=false",
            f"--temp-dir={self.temp / 'head'}",
        )
        self.start_second_node()

    def _start(self, *args: str, netns: bool = False) -> None:
        prefix = ("ip", "netns", "exec", self.netns) if netns else ()
        argv = [*prefix, RAY, "start", "--num-cpus=2", "--disable-usage-stats", *args]
        proc = subprocess.run(argv, capture_output=True, text=True, env=self.env(), timeout=600)
        if proc.returncode != 0:
            raise RuntimeError(f"ray start failed: {proc.stderr[-3000:]}")

    def start_second_node(self) -> None:
        self._start(
            f"--address={self.address}",
            f"--node-ip-address={self.node_ip}",
            f"--temp-dir={self.temp / 'node2'}",
            netns=True,
        )
        self.wait_for_nodes(2)

    def alive_nodes(self) -> list[str]:
        """The alive nodes' addresses, asked of the head."""
        code = (
            f"import ray; ray.init(address={self.address!r}, log_to_driver=False, configure_logging=False); "
            "print(' '.join(n['NodeManagerAddress'] for n in ray.nodes() if n['Alive']))"
        )
        proc = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            env=self.env(),
            timeout=600,
        )
        return proc.stdout.split() if proc.returncode == 0 else []

    def wait_for_nodes(self, n: int, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout  # a hang guard: nodes join in seconds
        while len(self.alive_nodes()) != n:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the cluster did not reach {n} alive nodes")
            time.sleep(1)

    def kill_second_node(self) -> None:
        """SIGKILL every process in the second node's namespace: the node is lost."""
        for pid in _run("ip", "netns", "pids", self.netns, check=False).stdout.split():
            try:
                os.kill(int(pid), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass

    def down(self) -> None:
        self.kill_second_node()
        _kill_trees(str(self.temp / "head"))
        _run("ip", "netns", "del", self.netns, check=False)
        _run("ip", "link", "del", self.veth_host, check=False)
        shutil.rmtree(self.temp, ignore_errors=True)


def _kill_trees(marker: str) -> None:
    """SIGKILL every process whose command line contains ``marker``, and all their descendants
    (the head's agents and workers rename themselves, ``ray::...``)."""
    parents: dict[int, int] = {}
    roots = set()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                parents[pid] = int(f.read().rsplit(b")", 1)[1].split()[1])
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if marker.encode() in f.read():
                    roots.add(pid)
        except (OSError, ValueError, IndexError):
            continue
    doomed = set(roots)
    grew = True
    while grew:
        more = {p for p, parent in parents.items() if parent in doomed} - doomed
        doomed |= more
        grew = bool(more)
    for pid in doomed:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
