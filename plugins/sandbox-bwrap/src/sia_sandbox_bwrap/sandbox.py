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

import functools
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from sia_core.contracts.sandbox import Limits, rlimit_triples
from sia_core.services.runner import HOST_PATH

from . import ISOLATION
from .gateway import HostRelay, gateway_addresses
from .host_resources import OWNER_PREFIX, PidsCgroup, pids_cgroup_parent, sweep_stale
from .mounts import Mounts, scratch_files
from .process import BwrapProcess, release_spawn

__all__ = ["ISOLATION", "BwrapProcess", "BwrapSandbox", "Plan", "make_bwrap_sandbox"]


SUPERVISOR = Path(__file__).with_name("supervisor.py")
IN_BOX = "/run/sia"  # the supervisor and the gateway sockets, inside the sandbox
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


class Plan(NamedTuple):
    """What :meth:`BwrapSandbox.command` decided for one spawn."""

    args: list[str]
    relays: list[tuple[Path, str, int]]  # (host-side socket, gateway host, gateway port)


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
        box = Mounts()
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
        files = scratch_files(scratch, env.get("HOME", "/"))
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
            # the runner binds scaffold_host.py's folder: the runner's package, whose other
            # modules a worker has no use for; the host script is all it needs
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
        for i, (gw_host, port) in enumerate(gateway_addresses(env)):
            inside, outside = f"{IN_BOX}/gateway-{i}.sock", scratch / f"gateway-{i}.sock"
            box.mount("--ro-bind", str(outside), inside)
            address = f"[{gw_host}]:{port}" if ":" in gw_host else f"{gw_host}:{port}"
            sup += ["--relay", f"{address}={inside}"]
            relays.append((outside, gw_host, port))
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
        sweep_stale()
        scratch = Path(tempfile.mkdtemp(prefix=f"{OWNER_PREFIX}{os.getpid()}-"))
        relays: list[HostRelay] = []
        cgroup: PidsCgroup | None = None
        status_r, status_w = os.pipe()
        try:
            parent = pids_cgroup_parent() if self.pids_cgroup and os.geteuid() == 0 else None
            if parent is not None and limits.max_procs:
                cgroup = PidsCgroup(parent, limits.max_procs)
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
                relays.append(HostRelay(path, host, port))
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
            release_spawn(status_r, relays, scratch, cgroup)
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
    """Factory referenced by the plugin's :class:`~sia_core.contracts.records.SandboxSpec`."""
    return BwrapSandbox()
