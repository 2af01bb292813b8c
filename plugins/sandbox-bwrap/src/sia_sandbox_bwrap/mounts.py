"""Pieces of the bwrap command line: mount arguments whose missing parent folders are made
0755 first, and the generated /etc files (plus an empty folder to hide things with)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


class Mounts:
    """bwrap arguments; each mount point's missing parents are made first, 0755."""

    def __init__(self) -> None:
        self.args: list[str] = []
        self._bound: list[Path] = []  # host folders: whatever lies below them exists already
        self._made: set[Path] = set()  # tmpfs, proc, dev and the folders made here

    def _exists(self, path: Path) -> bool:
        return path in self._made or any(path == m or m in path.parents for m in self._bound)

    def mount(self, op: str, source: str | None, dest: str, *, options: Sequence[str] = ()) -> None:
        """Add ``op [source] dest`` (``options`` first) after its missing parent folders."""
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


def scratch_files(scratch: Path, home: str) -> dict[str, Path]:
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
