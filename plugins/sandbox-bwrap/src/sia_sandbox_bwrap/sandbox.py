"""The ``bwrap`` sandbox: scaffold code in its own namespaces with an allow-listed file system.

Each :meth:`BwrapSandbox.spawn` runs (see :meth:`BwrapSandbox.command`)::

    bwrap --unshare-all --unshare-user --disable-userns [--cap-drop ALL]
          --die-with-parent --new-session --as-pid-1 --hostname sia-sandbox
          --ro-bind /usr; /bin /lib* /sbin as on the host; the interpreter (sys.prefix and
          sys.base_prefix); a minimal /etc (ld.so, ssl, alternatives, localtime; generated
          passwd, group, hosts, nsswitch.conf); /sys/devices/system/cpu
          --proc /proc --dev /dev; size-capped tmpfs on /tmp and /dev/shm
          --ro-bind each ro_path, --bind each rw_path and cwd (parents before children);
          an empty folder over each data/private below the interpreter's prefixes
          --remount-ro / --remount-ro /dev
          -- python -I -S /run/sia/supervisor.py ... -- ARGV

Nothing else of the host is visible: not the repo, the home directory, the run's records,
other generations or the task's private data (unless a caller binds them; a ``data/private``
folder inside an installed package stays hidden, and of sia_core's folder, which the runner
binds, only ``scaffold_host.py`` is shown). The command runs with no capabilities,
``no_new_privs``, and cannot make further user namespaces. Its network namespace has only
loopback: the model gateway is reached through a relay (a TCP listener on
the gateway's own ``127.0.0.1:PORT`` inside the sandbox forwards to a Unix socket that is
bind-mounted in; on the host a thread forwards that socket to the gateway's TCP port). Every
other address is unreachable, and the host's other loopback ports do not exist in there.

Limits: the supervisor (pid 1 inside) applies the rlimits to the command. As root, the kernel
ignores ``RLIMIT_NPROC``, so where a pids cgroup can be made (cgroup v1 ``pids``, or v2 with the
``pids`` controller delegated) the command's tree is capped at ``max_procs`` tasks by one.
The supervisor reports the command's exit status on a pipe and keeps leftovers alive until
:meth:`BwrapProcess.kill_tree`, which kills the whole tree (the pid namespace dies with its init).

``--die-with-parent`` ties the sandbox to the *thread* that spawned it (``PR_SET_PDEATHSIG``):
spawn from a thread that outlives the command.
"""

from __future__ import annotations

import contextlib
import functools
import os
import secrets
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from sia_core.runner import HOST_PATH
from sia_core.sandbox import Limits, SandboxedProcess, rlimit_triples

from .supervisor import Relay

__all__ = ["ISOLATION", "BwrapProcess", "BwrapSandbox", "Plan", "make_bwrap_sandbox"]

ISOLATION = (
    "bubblewrap namespaces: only the interpreter, public data (read-only) and its work dir"
    " visible; no network but the gateway; no capabilities; rlimits + pids cgroup; tree killed"
)

SUPERVISOR = Path(__file__).with_name("supervisor.py")
IN_BOX = "/run/sia"  # the supervisor and the gateway sockets, inside the sandbox
_GATEWAY_VARS = ("SIA_GATEWAY_URL", "OPENAI_BASE_URL", "OPENAI_API_BASE")
_LOOPBACK = {"127.0.0.1", "localhost", "::1"}
_ETC = (
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "alternatives",
    "ssl",
    "ca-certificates",
    "localtime",
)
_ROOT_LINKS = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")
_PREFIX = "sia-bwrap-"  # + the owner's pid: scratch folders and cgroups
_MB = 1024 * 1024


def _covered(path: Path, roots: Sequence[Path]) -> bool:
    return any(path == r or r in path.parents for r in roots)


@functools.cache
def _private_dirs(root: Path) -> tuple[Path, ...]:
    """Folders ``data/private`` below ``root``: the labels of tasks shipped inside installed
    packages (a site-packages folder is bound whole). Computed once per process."""
    found = []
    for folder, dirs, _ in os.walk(root):
        if "private" in dirs and os.path.basename(folder) == "data":
            found.append(Path(folder) / "private")
    return tuple(found)


def _gateway_addresses(env: Mapping[str, str]) -> list[tuple[str, int]]:
    """The distinct loopback ``(host, port)`` the scaffold's gateway variables point at."""
    found: list[tuple[str, int]] = []
    for var in _GATEWAY_VARS:
        url = env.get(var)
        if not url:
            continue
        parts = urllib.parse.urlsplit(url)
        if parts.hostname in _LOOPBACK and parts.port and (parts.hostname, parts.port) not in found:
            found.append((parts.hostname, parts.port))
    return found


# --------------------------------------------------------------------------------------------
# pids cgroup
# --------------------------------------------------------------------------------------------


@functools.cache
def pids_cgroup_parent() -> Path | None:
    """A cgroup folder where this process may make children with a ``pids.max``, or ``None``."""
    try:
        mounts = Path("/proc/self/mountinfo").read_text().splitlines()
        own = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in mounts:
        fields = line.split()
        sep = fields.index("-")
        point, fstype, options = fields[4], fields[sep + 1], fields[sep + 3].split(",")
        if fstype == "cgroup" and "pids" in options:
            path = next((x.split(":", 2)[2] for x in own if ":pids:" in x), "/")
        elif fstype == "cgroup2":
            path = next((x[3:] for x in own if x.startswith("0::")), "/")
            try:
                delegated = (Path(point) / path.lstrip("/") / "cgroup.subtree_control").read_text()
            except OSError:
                continue
            if "pids" not in delegated.split():
                continue
        else:
            continue
        parent = Path(point) / path.lstrip("/")
        if os.access(parent, os.W_OK):
            return parent
    return None


class _PidsCgroup:
    """A fresh cgroup with ``pids.max``; ``procs_fd`` moves whoever writes ``0`` to it."""

    def __init__(self, parent: Path, max_pids: int) -> None:
        self.path = parent / f"{_PREFIX}{os.getpid()}-{secrets.token_hex(6)}"
        self.path.mkdir()
        try:
            (self.path / "pids.max").write_text(str(max_pids))
            self.procs_fd = os.open(self.path / "cgroup.procs", os.O_WRONLY | os.O_CLOEXEC)
        except BaseException:
            self.path.rmdir()
            raise

    def remove(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.procs_fd)
        for _ in range(100):  # killed tasks leave the cgroup a moment after they are reaped
            try:
                self.path.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError:
                time.sleep(0.01)


@functools.cache
def _sweep_stale() -> None:
    """Remove the scratch folders and (empty) cgroups of sia processes that died without
    cleaning up (e.g. killed mid-run); once per process."""
    cgroups = pids_cgroup_parent()
    for place in (Path(tempfile.gettempdir()), cgroups):
        if place is None:
            continue
        with contextlib.suppress(OSError):
            for path in place.glob(f"{_PREFIX}*-*"):
                owner = path.name[len(_PREFIX) :].split("-", 1)[0]
                if not owner.isdigit() or Path(f"/proc/{owner}").exists():
                    continue
                if place == cgroups:
                    with contextlib.suppress(OSError):  # still populated: leave it
                        path.rmdir()
                else:
                    shutil.rmtree(path, ignore_errors=True)


# --------------------------------------------------------------------------------------------
# the command line
# --------------------------------------------------------------------------------------------


class _Mounts:
    """bwrap arguments; each mount point's missing parents are made first, 0755."""

    def __init__(self) -> None:
        self.args: list[str] = []
        self._bound: list[Path] = []  # host folders: whatever lies below them exists already
        self._made: set[Path] = set()  # tmpfs, proc, dev and the folders made here

    def _exists(self, path: Path) -> bool:
        return path in self._made or any(path == m or m in path.parents for m in self._bound)

    def mount(self, op: str, source: str | None, dest: str, *, options: Sequence[str] = ()) -> None:
        target = Path(dest)
        for parent in reversed(target.parents):
            if parent != Path("/") and not self._exists(parent):
                # bwrap would make it 0700
                self.args += ["--perms", "0755", "--dir", str(parent)]
                self._made.add(parent)
        if source is None:
            self.args += [*options, op, dest]
            self._made.add(target)
        else:
            self.args += [*options, op, source, dest]
            self._bound.append(target)


class Plan(NamedTuple):
    """What :meth:`BwrapSandbox.command` decided for one spawn."""

    args: list[str]
    relays: list[tuple[Path, str, int]]  # (host-side socket, gateway host, gateway port)


def _scratch_files(scratch: Path, home: str) -> dict[str, Path]:
    """The generated /etc files, and ``empty``: a folder bound over what must stay hidden."""
    files = {
        "passwd": f"root:x:0:0:root:{home}:/usr/sbin/nologin\n"
        "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n",
        "group": "root:x:0:\nnogroup:x:65534:\n",
        "hosts": "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost\n",
        "nsswitch.conf": "passwd: files\ngroup: files\nhosts: files\n",
    }
    for name, text in files.items():
        (scratch / name).write_text(text)
    (scratch / "empty").mkdir(exist_ok=True)
    return {name: scratch / name for name in (*files, "empty")}


# --------------------------------------------------------------------------------------------
# the process handle
# --------------------------------------------------------------------------------------------


def _connect_untimed(target: tuple[str, int]) -> socket.socket:
    """Connect within 10 s, then block without a timeout: a model call may take minutes."""
    sock = socket.create_connection(target, 10.0)
    sock.settimeout(None)
    return sock


class _HostRelay:
    """A Unix socket in a private folder whose connections are forwarded to a TCP address."""

    def __init__(self, path: Path, host: str, port: int) -> None:
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(str(path))
        listener.listen(64)
        target = ("127.0.0.1" if host == "localhost" else host, port)
        self.relay = Relay(listener, functools.partial(_connect_untimed, target))
        self.relay.start()

    def close(self) -> None:
        self.relay.close()


def _release(
    status_fd: int, relays: list[_HostRelay], scratch: Path, cgroup: _PidsCgroup | None
) -> None:
    with contextlib.suppress(OSError):
        os.close(status_fd)
    for relay in relays:
        relay.close()
    shutil.rmtree(scratch, ignore_errors=True)
    if cgroup is not None:
        cgroup.remove()


class BwrapProcess(SandboxedProcess):
    """A command in a bwrap sandbox. ``wait``/``poll`` give the command's own exit status
    (the supervisor reports it), while processes it left behind stay alive until
    ``kill_tree``, exactly as with the process sandbox."""

    def __init__(
        self,
        popen: subprocess.Popen[Any],
        status_fd: int,
        relays: list[_HostRelay],
        scratch: Path,
        cgroup: _PidsCgroup | None,
    ) -> None:
        super().__init__(popen)
        self.cgroup = cgroup.path if cgroup is not None else None
        self._status_fd: int | None = status_fd
        self._buf = b""
        self._status: int | None = None
        self._lock = threading.Lock()
        self._finalizer = weakref.finalize(self, _release, status_fd, relays, scratch, cgroup)

    def _read_status(self, timeout: float | None) -> bool:
        """Read the status pipe for up to ``timeout`` s; ``True`` once it is at EOF.

        The lock is held for short slices only, so ``poll``/``kill_tree`` from another thread
        wait at most one slice, and the fd is never closed while a ``select`` uses it.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            remaining = 0.05 if deadline is None else max(0.0, deadline - time.monotonic())
            with self._lock:
                fd = self._status_fd
                if fd is None:
                    return True
                try:
                    ready, _, _ = select.select([fd], [], [], min(0.05, remaining))
                    chunk = os.read(fd, 256) if ready else None
                except OSError:
                    return True
                if chunk is not None:
                    self._buf += chunk
                    if self._status is None and b"\n" in self._buf:
                        line = self._buf.partition(b"\n")[0].decode("ascii", "replace")
                        kind, _, value = line.partition(" ")
                        with contextlib.suppress(ValueError):
                            self._status = -int(value) if kind == "signal" else int(value)
                    return not chunk
            if deadline is not None and time.monotonic() >= deadline:
                return False

    def poll(self) -> int | None:
        """The command's exit code (negative: killed by that signal), ``None`` while it runs."""
        if self._status is None:
            eof = self._read_status(0)
            if self._status is None and (eof or self.popen.poll() is not None):
                return self.popen.wait()  # bwrap itself failed or was killed
        return self._status

    def wait(self, timeout: float | None = None) -> int | None:
        """Wait for the command (not its leftovers); ``None`` if still running at ``timeout``."""
        if self._status is None:
            deadline = None if timeout is None else time.monotonic() + timeout
            while self._status is None and not self._read_status(
                None if deadline is None else max(0.0, deadline - time.monotonic())
            ):
                if deadline is not None and time.monotonic() >= deadline:
                    return None
        return self.poll()

    def kill_tree(self) -> None:
        """SIGKILL everything in the sandbox (supervisor, command, leftovers), reap, clean up."""
        super().kill_tree()
        with self._lock:
            self._status_fd = None
            self._finalizer()


# --------------------------------------------------------------------------------------------
# the sandbox
# --------------------------------------------------------------------------------------------


class BwrapSandbox:
    """Runs commands under bubblewrap (the module docstring says what it isolates).

    ``tmp_mb`` caps the private ``/tmp`` and ``/dev/shm`` (each); by default it is the
    command's ``file_size_mb`` (512 MB when that is unset). ``pids_cgroup`` (default: on where
    one can be made) caps the command's tree at ``max_procs`` tasks. ``system_paths`` are
    bound read-only for every command, like the interpreter (e.g. a shared model cache);
    ``data/private`` folders below them and the interpreter's prefixes are hidden.
    """

    name = "bwrap"
    isolation = ISOLATION

    def __init__(
        self,
        *,
        bwrap: str | None = None,
        tmp_mb: int | None = None,
        pids_cgroup: bool = True,
        system_paths: Sequence[Path] = (),
    ) -> None:
        self.bwrap = bwrap or shutil.which("bwrap") or "bwrap"
        self.tmp_mb = tmp_mb
        self.pids_cgroup = pids_cgroup
        self.system_paths = tuple(Path(p).resolve() for p in system_paths)

    def available(self) -> tuple[bool, str]:
        """Whether bwrap is installed and can build this sandbox here (a trial run), and why."""
        ok, why = _trial(self.bwrap)
        if ok and os.geteuid() == 0:
            if self.pids_cgroup and pids_cgroup_parent() is not None:
                why += f"; process trees capped by pids cgroups under {pids_cgroup_parent()}"
            else:
                why += "; no pids cgroup (off or none writable): as root, max_procs is not enforced"
        return ok, why

    def command(
        self,
        argv: Sequence[str],
        *,
        cwd: Path,
        env: Mapping[str, str],
        limits: Limits,
        ro_paths: Sequence[Path],
        rw_paths: Sequence[Path],
        scratch: Path,
        status_fd: int,
        cgroup_fd: int | None = None,
    ) -> Plan:
        """The bwrap command line for one spawn and the gateway relays it needs."""
        box = _Mounts()
        box.args += [self.bwrap, "--unshare-all", "--unshare-user", "--disable-userns"]
        if os.geteuid() == 0:
            box.args += ["--cap-drop", "ALL"]
        box.args += ["--die-with-parent", "--new-session", "--as-pid-1"]
        box.args += ["--hostname", "sia-sandbox"]
        box.mount("--ro-bind", "/usr", "/usr")
        for name in _ROOT_LINKS:
            top = Path("/") / name
            if top.is_symlink():
                box.args += ["--symlink", os.readlink(top), str(top)]
            elif top.is_dir():
                box.mount("--ro-bind", str(top), str(top))
        for name in _ETC:
            box.mount("--ro-bind-try", f"/etc/{name}", f"/etc/{name}")
        files = _scratch_files(scratch, env.get("HOME", "/"))
        empty = files.pop("empty")
        for name, path in files.items():
            box.mount("--ro-bind", str(path), f"/etc/{name}")
        box.mount("--ro-bind-try", "/sys/devices/system/cpu", "/sys/devices/system/cpu")
        box.mount("--proc", None, "/proc")
        box.mount("--dev", None, "/dev")
        tmp_bytes = str((self.tmp_mb or limits.file_size_mb or 512) * _MB)
        for where in ("/tmp", "/dev/shm"):
            box.mount("--tmpfs", None, where, options=["--perms", "1777", "--size", tmp_bytes])

        cwd = Path(cwd).resolve()
        rw = [Path(p).resolve() for p in rw_paths]
        if not _covered(cwd, rw):
            rw.append(cwd)  # the contract: cwd is writable
        # the interpreter (the venv and the installation it was made from), then the caller's
        system = {Path(sys.prefix).resolve(), Path(sys.base_prefix).resolve(), *self.system_paths}
        binds: dict[Path, str] = dict.fromkeys(system, "ro")
        for path in system:
            binds.update(dict.fromkeys(_private_dirs(path), "hide"))
        for path in (Path(p).resolve() for p in ro_paths):
            # the runner binds scaffold_host.py's folder: all of sia_core, and its tiny task's
            # private labels with it; the host script is all a worker needs
            host = HOST_PATH.resolve()
            binds[host if path == host.parent else path] = "ro"
        binds.update(dict.fromkeys(rw, "rw"))
        # parents before children: a writable work dir inside a read-only folder stays writable
        for path, how in sorted(binds.items(), key=lambda b: len(b[0].parts)):
            if how == "hide":
                box.mount("--ro-bind", str(empty), str(path))
            else:
                box.mount("--bind" if how == "rw" else "--ro-bind-try", str(path), str(path))
        box.mount("--ro-bind", str(SUPERVISOR), f"{IN_BOX}/supervisor.py")

        sup = ["--status-fd", str(status_fd), "--chdir", str(cwd)]
        relays: list[tuple[Path, str, int]] = []
        for i, (host, port) in enumerate(_gateway_addresses(env)):
            inside, outside = f"{IN_BOX}/gateway-{i}.sock", scratch / f"gateway-{i}.sock"
            box.mount("--ro-bind", str(outside), inside)
            address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            sup += ["--relay", f"{address}={inside}"]
            relays.append((outside, host, port))
        # the command is root (without capabilities) in its namespace: the folders made above
        # in bwrap's root and /dev tmpfs would be writable, unbounded, memory
        box.args += ["--remount-ro", "/", "--remount-ro", "/dev"]
        for res, soft, hard in rlimit_triples(limits):
            sup += ["--rlimit", f"{res}:{soft}:{hard}"]
        if cgroup_fd is not None:
            sup += ["--cgroup-fd", str(cgroup_fd)]
        # bwrap sets PWD and python's C-locale coercion sets LC_CTYPE: give back exactly env
        for name in ("LC_CTYPE", "PWD"):
            sup += ["--setenv", f"{name}={env[name]}"] if name in env else ["--unset", name]
        supervisor = [sys.executable, "-I", "-S", f"{IN_BOX}/supervisor.py", *sup]
        return Plan(args=[*box.args, "--", *supervisor, "--", *argv], relays=relays)

    def spawn(
        self,
        argv: Sequence[str],
        *,
        cwd: Path,
        env: Mapping[str, str],
        limits: Limits,
        ro_paths: Sequence[Path] = (),
        rw_paths: Sequence[Path] = (),
        stdin: Any = subprocess.PIPE,
        stdout: Any = subprocess.PIPE,
        stderr: Any = subprocess.PIPE,
        pass_fds: Sequence[int] = (),
    ) -> BwrapProcess:
        """Start ``argv`` in a fresh sandbox with exactly ``env`` and ``limits`` applied."""
        _sweep_stale()
        scratch = Path(tempfile.mkdtemp(prefix=f"{_PREFIX}{os.getpid()}-"))
        relays: list[_HostRelay] = []
        cgroup: _PidsCgroup | None = None
        status_r, status_w = os.pipe()
        try:
            parent = pids_cgroup_parent() if self.pids_cgroup and os.geteuid() == 0 else None
            if parent is not None and limits.max_procs:
                cgroup = _PidsCgroup(parent, limits.max_procs)
            plan = self.command(
                argv,
                cwd=cwd,
                env=env,
                limits=limits,
                ro_paths=ro_paths,
                rw_paths=rw_paths,
                scratch=scratch,
                status_fd=status_w,
                cgroup_fd=cgroup.procs_fd if cgroup is not None else None,
            )
            for path, host, port in plan.relays:
                relays.append(_HostRelay(path, host, port))
            extra = (status_w,) if cgroup is None else (status_w, cgroup.procs_fd)
            popen = subprocess.Popen(
                plan.args,
                cwd="/",
                env=dict(env),
                stdin=stdin,
                stdout=stdout,
                stderr=stderr,
                pass_fds=(*pass_fds, *extra),
                close_fds=True,
                start_new_session=True,
            )
        except BaseException:
            _release(status_r, relays, scratch, cgroup)
            raise
        finally:
            os.close(status_w)
        if cgroup is not None:
            os.close(cgroup.procs_fd)  # the sandbox holds its own copy until the command starts
            cgroup.procs_fd = -1
        return BwrapProcess(popen, status_r, relays, scratch, cgroup)


@functools.cache
def _trial(bwrap: str) -> tuple[bool, str]:
    """Build a real sandbox once (cached per process) and run a shell in it."""
    if not sys.platform.startswith("linux"):
        return False, f"bubblewrap needs Linux; this is {sys.platform}"
    if shutil.which(bwrap) is None:
        return False, "bwrap is not installed (Debian package bubblewrap; see scripts/setup-system)"
    with tempfile.TemporaryDirectory(prefix="sia-bwrap-trial-") as tmp:
        try:
            proc = BwrapSandbox(bwrap=bwrap).spawn(
                ["/bin/sh", "-c", "exit 0"],
                cwd=Path(tmp),
                env={"PATH": "/usr/bin:/bin"},
                limits=Limits(wall_s=20),
                rw_paths=(Path(tmp),),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
        except OSError as e:
            return False, f"bwrap could not be started: {e}"
        try:
            _, err = proc.popen.communicate(timeout=20)
            rc = proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            err, rc = b"timed out after 20 s", None
        finally:
            proc.kill_tree()
    if rc != 0:
        detail = err.decode("utf-8", "replace").strip() or f"exit code {rc}"
        return False, f"bwrap cannot create a sandbox here: {detail}"
    return True, f"{bwrap} builds a sandbox here"


def make_bwrap_sandbox() -> BwrapSandbox:
    """Factory referenced by the plugin's :class:`~sia_core.records.SandboxSpec`."""
    return BwrapSandbox()
