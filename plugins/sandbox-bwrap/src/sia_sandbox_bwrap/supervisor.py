"""The process that runs INSIDE the bwrap sandbox as its pid 1 (stdlib only, run by path).

    python -I -S supervisor.py --status-fd N [--chdir DIR] [--rlimit RES:SOFT:HARD ...]
        [--cgroup-fd N] [--relay HOST:PORT=SOCKET ...] [--unset VAR ...]
        [--setenv VAR=VALUE ...] -- ARGV...

It binds each relay's TCP listener (the model gateway's loopback address, e.g.
``127.0.0.1:PORT``) inside the sandbox's own network namespace and forks ``ARGV``, which joins
the pids cgroup (writes ``0`` to ``--cgroup-fd``), applies the rlimits and execs. Then it
forwards every TCP connection to its Unix socket (bind-mounted from the host, where
:class:`Relay` forwards it on to the gateway) and, as pid 1, reaps every orphan. When ``ARGV`` exits it writes ``exit N`` or ``signal N`` to the status fd
and keeps going until every other process is gone, so leftovers live until the host kills the
tree (as in the process sandbox). The host imports :class:`Relay` from here too.
"""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import socket
import sys
import threading
from collections.abc import Callable

#: concurrent connections one relay forwards; more are refused (a flood cannot starve the host)
MAX_CONNECTIONS = 32
_CHUNK = 1 << 16


class Relay:
    """Accepts on ``listener`` and pumps each connection to a fresh ``connect()`` socket."""

    def __init__(self, listener: socket.socket, connect: Callable[[], socket.socket]) -> None:
        self.listener = listener
        self.connect = connect
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._closed = False

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self.serve, daemon=True, name="sia-relay")
        thread.start()
        return thread

    def serve(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return  # closed
            with self._lock:
                full = len(self._open) >= 2 * MAX_CONNECTIONS
            try:
                if full or self._closed:
                    raise OSError("relay: too many connections")
                upstream = self.connect()
            except OSError:
                client.close()
                continue
            pair = (client, upstream)
            with self._lock:
                self._open.update(pair)
            done = threading.Semaphore(0)
            for src, dst in (pair, pair[::-1]):
                threading.Thread(target=self._pump, args=(src, dst, done), daemon=True).start()
            threading.Thread(target=self._reap, args=(pair, done), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket, done: threading.Semaphore) -> None:
        try:
            while data := src.recv(_CHUNK):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)
            done.release()

    def _reap(self, pair: tuple[socket.socket, socket.socket], done: threading.Semaphore) -> None:
        done.acquire()
        done.acquire()
        with self._lock:
            self._open.difference_update(pair)
        for sock in pair:
            sock.close()

    def close(self) -> None:
        """Stop accepting and cut every open connection."""
        self._closed = True
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        with self._lock:
            sockets = list(self._open)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


def _tcp_listener(address: str) -> socket.socket:
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, int(port)))
    sock.listen(64)
    return sock


def _unix_connector(path: str) -> Callable[[], socket.socket]:
    def connect() -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(10.0)
            sock.connect(path)
            sock.settimeout(None)
        except OSError:
            sock.close()
            raise
        return sock

    return connect


def _parse(argv: list[str]) -> tuple[dict[str, list[str]], list[str]]:
    """``--key value`` pairs (repeatable) up to ``--``, then the command."""
    opts: dict[str, list[str]] = {}
    i = 0
    while i < len(argv) and argv[i] != "--":
        key = argv[i].removeprefix("--")
        opts.setdefault(key, []).append(argv[i + 1])
        i += 2
    return opts, argv[i + 1 :]


def _run_child(command: list[str], opts: dict[str, list[str]], keep: set[int]) -> None:
    """In the forked child: the pids cgroup, rlimits, environment, cwd, exec. Never returns."""
    try:
        for fd in keep:
            os.close(fd)
        for name in ("SIGCHLD", "SIGINT", "SIGPIPE", "SIGXFSZ"):
            signal.signal(getattr(signal, name), signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, set())
        for cgroup_fd in map(int, opts.get("cgroup-fd", [])):
            os.write(cgroup_fd, b"0")  # this process, and so all it starts, into the pids cgroup
            os.close(cgroup_fd)
        for spec in opts.get("rlimit", []):
            res, soft, hard = (int(x) for x in spec.split(":"))
            resource.setrlimit(res, (soft, hard))
        for name in opts.get("unset", []):
            os.environ.pop(name, None)
        for pair in opts.get("setenv", []):
            name, _, value = pair.partition("=")
            os.environ[name] = value
        if "chdir" in opts:
            os.chdir(opts["chdir"][0])
        os.execvp(command[0], command)
    except BaseException as e:
        with contextlib.suppress(BaseException):
            os.write(2, f"sia-sandbox: cannot start {command[0]}: {e}\n".encode())
    os._exit(127)


def main(argv: list[str] | None = None) -> int:
    opts, command = _parse(sys.argv[1:] if argv is None else argv)
    if not command:
        os.write(2, b"sia-sandbox: no command given\n")
        return 2
    status_fd = int(opts["status-fd"][0])
    relays = []
    for spec in opts.get("relay", []):
        address, _, path = spec.partition("=")
        relays.append(Relay(_tcp_listener(address), _unix_connector(path)))
    keep = {status_fd, *(r.listener.fileno() for r in relays)}
    main_pid = os.fork()
    if main_pid == 0:
        _run_child(command, opts, keep)
    # ignored signals cannot reach pid 1 from inside: the command cannot stop the supervisor
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # the supervisor holds none of the command's pipes: EOF reaches the host when it exits
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.close(null)
    _close_all_but(keep)
    threading.stack_size(256 * 1024)  # two small threads per relayed connection
    for relay in relays:
        relay.start()
    exit_code = 0
    while True:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            return exit_code
        except InterruptedError:
            continue
        if pid == main_pid:
            if os.WIFSIGNALED(status):
                sig = os.WTERMSIG(status)
                line, exit_code = f"signal {sig}\n", 128 + sig
            else:
                exit_code = os.waitstatus_to_exitcode(status)
                line = f"exit {exit_code}\n"
            with contextlib.suppress(OSError):
                os.write(status_fd, line.encode())
            for relay in relays:
                relay.close()


def _close_all_but(keep: set[int]) -> None:
    low = 3
    for fd in sorted(keep):
        if fd >= low:
            os.closerange(low, fd)
            low = fd + 1
    os.closerange(low, 1 << 16)


if __name__ == "__main__":
    os._exit(main())
