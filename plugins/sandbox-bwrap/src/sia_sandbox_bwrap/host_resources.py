"""What a spawn owns on the host, named ``sia-bwrap-<owner pid>-…``: a pids cgroup that caps the
command's process tree and a scratch folder; and the sweep of those whose owner died."""

from __future__ import annotations

import contextlib
import functools
import os
import secrets
import shutil
import tempfile
import time
from pathlib import Path

OWNER_PREFIX = "sia-bwrap-"  # + the owner's pid: scratch folders and cgroups


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


class PidsCgroup:
    """A fresh cgroup with ``pids.max``; ``procs_fd`` moves whoever writes ``0`` to it."""

    def __init__(self, parent: Path, max_pids: int) -> None:
        self.path = parent / f"{OWNER_PREFIX}{os.getpid()}-{secrets.token_hex(6)}"
        self.path.mkdir()
        try:
            (self.path / "pids.max").write_text(str(max_pids))
            self.procs_fd = os.open(self.path / "cgroup.procs", os.O_WRONLY | os.O_CLOEXEC)
        except BaseException:
            self.path.rmdir()
            raise

    def remove(self) -> None:
        """Close ``procs_fd`` and remove the cgroup once its killed tasks have left it."""
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
def sweep_stale() -> None:
    """Remove the scratch folders and (empty) cgroups of sia processes that died without
    cleaning up (e.g. killed mid-run); once per process."""
    cgroups = pids_cgroup_parent()
    for place in (Path(tempfile.gettempdir()), cgroups):
        if place is None:
            continue
        with contextlib.suppress(OSError):
            for path in place.glob(f"{OWNER_PREFIX}*-*"):
                owner = path.name[len(OWNER_PREFIX) :].split("-", 1)[0]
                if not owner.isdigit() or Path(f"/proc/{owner}").exists():
                    continue
                if place == cgroups:
                    with contextlib.suppress(OSError):  # still populated: leave it
                        path.rmdir()
                else:
                    shutil.rmtree(path, ignore_errors=True)
