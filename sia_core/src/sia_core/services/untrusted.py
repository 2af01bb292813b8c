"""Reading what a scaffold left behind without trusting any of it.

Everything in a scaffold's work dir is attacker-shaped: a name may be a symbolic link (to the
private labels, to a host path, dangling), a directory, a fifo that blocks whoever opens it, a
device, a hard link, or a file of any size that is swapped while it is read. Code outside the
sandbox touches such a folder only through this module:

- :func:`harvest` copies the regular files an output contract names into a fresh folder the
  scaffold never saw: every path component is opened with ``O_NOFOLLOW`` relative to its
  parent's descriptor, the file itself is checked with ``fstat`` on the open descriptor
  (regular, one link, within size), so nothing is followed and nothing is read twice.
- :func:`read_bounded` reads one file the same way, at most ``max_bytes``.
- :class:`OutputPump` drains a pipe a sandboxed command writes its stdout/stderr to: sia holds
  the read end, keeps a bounded head and tail on disk (with a note of what was cut), and answers
  log tails from memory, never by opening a path the scaffold could have replaced.
"""

from __future__ import annotations

import collections
import contextlib
import fcntl
import fnmatch
import os
import select
import shutil
import stat
import struct
import termios
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import attrs

__all__ = [
    "DEFAULT_OUTPUTS",
    "HarvestReport",
    "OutputPump",
    "harvest",
    "read_bounded",
    "read_tail",
]

#: what is taken from a program's work dir when the task declares no ``[program] outputs``:
#: top-level files and the files of first-level folders (SIA's evaluators glob ``results/*.json``)
DEFAULT_OUTPUTS: tuple[str, ...] = ("*", "*/*")
_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_DIR_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_DIRECTORY | os.O_CLOEXEC
_CHUNK = 1 << 16
_RECENT = 1 << 16  # bytes of the latest output kept in memory for error messages


class UntrustedFileError(ValueError):
    """A path that is not a plain regular file within its size limit."""


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISLNK, "a symbolic link"),
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a fifo"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    ):
        if test(mode):
            return name
    return "not a regular file"


def _read_fd(fd: int, name: str, max_bytes: int) -> bytes:
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        raise UntrustedFileError(f"{name}: {_kind(info.st_mode)}, not a regular file")
    if info.st_nlink != 1:
        raise UntrustedFileError(f"{name}: a hard link ({info.st_nlink} names), not a plain file")
    if info.st_size > max_bytes:
        raise UntrustedFileError(f"{name}: {info.st_size} bytes, over the {max_bytes}-byte limit")
    chunks, size = [], 0
    while True:  # read to EOF, never past the limit: the file may grow while it is read
        chunk = os.read(fd, min(_CHUNK, max_bytes + 1 - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
        if size > max_bytes:
            raise UntrustedFileError(f"{name}: grew past the {max_bytes}-byte limit while read")
    return b"".join(chunks)


def _open_no_follow(path: Path, *, directory: bool = False) -> int:
    """``path`` opened for reading with no component followed if it is a link."""
    parts = path.parts
    if not path.is_absolute() or ".." in parts:
        raise UntrustedFileError(f"{path}: not an absolute, normalised path")
    fd = os.open("/", _DIR_FLAGS)
    try:
        for part in parts[1:-1]:
            try:
                nxt = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except OSError as e:
                raise UntrustedFileError(
                    f"{path}: {part} is not a plain folder ({e.strerror})"
                ) from None
            os.close(fd)
            fd = nxt
        try:
            return os.open(parts[-1], _DIR_FLAGS if directory else _OPEN_FLAGS, dir_fd=fd)
        except OSError as e:
            raise UntrustedFileError(
                f"{path.name}: cannot be opened as a plain file ({e.strerror})"
            ) from None
    finally:
        os.close(fd)


def _open_existing(path: Path) -> int:
    """:func:`_open_no_follow`, with ``FileNotFoundError`` when nothing is there."""
    if not os.path.lexists(path):
        raise FileNotFoundError(str(path))
    return _open_no_follow(path)


def read_bounded(path: str | Path, max_bytes: int) -> bytes:
    """The bytes of ``path`` if it is a regular file of at most ``max_bytes``.

    No component of the (absolute) path is followed if it is a link; raises
    :class:`UntrustedFileError` with one line saying what is wrong, ``FileNotFoundError`` if
    there is nothing there.
    """
    path = Path(os.path.abspath(path))
    fd = _open_existing(path)
    try:
        return _read_fd(fd, path.name, max_bytes)
    finally:
        os.close(fd)


def read_tail(path: str | Path, max_bytes: int) -> bytes:
    """The last ``max_bytes`` of ``path`` if it is a regular file (opened as :func:`read_bounded`
    opens it: no link followed, no fifo or device); raises like it."""
    path = Path(os.path.abspath(path))
    fd = _open_existing(path)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise UntrustedFileError(f"{path.name}: {_kind(info.st_mode)}, not a regular file")
        os.lseek(fd, max(0, info.st_size - max_bytes), os.SEEK_SET)
        chunks, size = [], 0
        while size < max_bytes:
            chunk = os.read(fd, min(_CHUNK, max_bytes - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


@attrs.frozen(kw_only=True)
class HarvestReport:
    """What :func:`harvest` took (relative names) and what it refused, one line each."""

    taken: tuple[str, ...] = ()
    refused: tuple[str, ...] = ()
    total_bytes: int = 0


def _matches(rel: str, patterns: Sequence[str]) -> bool:
    depth = rel.count("/")
    return any(p.count("/") == depth and fnmatch.fnmatchcase(rel, p) for p in patterns)


def harvest(
    src: Path,
    dest: Path,
    patterns: Sequence[str] = DEFAULT_OUTPUTS,
    *,
    max_file_bytes: int = 64 * 1024 * 1024,
    max_total_bytes: int = 256 * 1024 * 1024,
    max_files: int = 1000,
    skip: Sequence[str] = ("results.json",),
) -> HarvestReport:
    """Copy the regular files of ``src`` whose relative path matches ``patterns`` into ``dest``.

    ``patterns`` are ``fnmatch`` patterns of relative paths, one folder level per ``/`` (at most
    two levels; names starting with ``.`` are never taken). Links, folders, fifos, devices and
    hard links in a file's place are refused, so are files over ``max_file_bytes`` and
    whatever comes after ``max_files`` files or ``max_total_bytes`` in all; each refusal is one
    line of the report. ``dest`` must not exist (it is made, 0700). ``skip`` names top-level files
    never taken (a ``results.json`` only the scorer may write).
    """
    dest = Path(dest)
    dest.mkdir(mode=0o700, parents=True)
    taken: list[str] = []
    refused: list[str] = []
    total = 0
    try:
        root_fd = _open_no_follow(Path(os.path.abspath(src)), directory=True)
    except UntrustedFileError as e:
        return HarvestReport(refused=(f"the work dir cannot be read as a folder: {e}",))

    def visit(dir_fd: int, prefix: str, depth: int) -> None:
        nonlocal total
        try:
            names = sorted(os.listdir(dir_fd))
        except OSError as e:
            refused.append(f"{prefix or '.'}: cannot be listed ({e.strerror})")
            return
        for name in names:
            rel = f"{prefix}{name}"
            if name.startswith(".") or (not prefix and name in skip):
                continue
            try:
                info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            except OSError:
                continue
            if stat.S_ISDIR(info.st_mode) and depth < 1:
                if not any(p.count("/") > depth for p in patterns):
                    continue
                try:
                    sub = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
                except OSError as e:
                    refused.append(f"{rel}/: cannot be opened as a folder ({e.strerror})")
                    continue
                try:
                    visit(sub, f"{rel}/", depth + 1)
                finally:
                    os.close(sub)
                continue
            if not _matches(rel, patterns):
                continue
            if len(taken) >= max_files:
                refused.append(f"{rel}: over the limit of {max_files} files")
                continue
            try:
                fd = os.open(name, _OPEN_FLAGS, dir_fd=dir_fd)
            except OSError as e:
                why = _kind(info.st_mode) if not stat.S_ISREG(info.st_mode) else e.strerror
                refused.append(f"{rel}: {why}, not a regular file: not taken")
                continue
            try:
                data = _read_fd(fd, rel, min(max_file_bytes, max_total_bytes - total))
            except UntrustedFileError as e:
                refused.append(f"{e}: not taken")
                continue
            finally:
                os.close(fd)
            out = dest / rel
            out.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            out.write_bytes(data)
            taken.append(rel)
            total += len(data)

    try:
        visit(root_fd, "", 0)
    finally:
        os.close(root_fd)
    return HarvestReport(taken=tuple(taken), refused=tuple(refused), total_bytes=total)


def _open_log(path: Path) -> int:
    """``path`` opened for appending, as a regular file of its own: whatever else is there (a
    link, a fifo, a folder a scaffold put in its place under the process sandbox) is removed
    first, never followed or opened."""
    flags = os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    for _ in range(3):
        try:
            fd = os.open(path, flags | os.O_CREAT, 0o600)
        except OSError:
            fd = -1  # a link (ELOOP), a fifo with no reader (ENXIO), a folder (EISDIR)
        if fd >= 0:
            info = os.fstat(fd)
            if stat.S_ISREG(info.st_mode) and info.st_nlink == 1:
                return fd
            os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
        with contextlib.suppress(FileExistsError):
            return os.open(path, flags | os.O_CREAT | os.O_EXCL, 0o600)
    raise UntrustedFileError(f"{path}: cannot be made a plain log file")


class OutputPump:
    """Drains the read end of a pipe into ``path``: at most ``head_bytes`` from the start and
    ``tail_bytes`` from the end, with a line saying how much was cut between them.

    :meth:`tail` answers from memory (the last bytes seen), so an error message never opens a
    file the command could have replaced. Call :meth:`close` after every writer is gone.
    """

    def __init__(
        self, read_fd: int, path: Path, *, head_bytes: int = 1 << 20, tail_bytes: int = 1 << 20
    ) -> None:
        self.path = Path(path)
        self.head_bytes = head_bytes
        self.tail_bytes = tail_bytes
        self.total = 0
        self._fd = read_fd
        self._tail: collections.deque[bytes] = collections.deque()
        self._tail_size = 0
        self._recent = bytearray()
        self._lock = threading.Lock()
        self._out = os.fdopen(_open_log(self.path), "ab")
        self._written = 0
        self._thread = threading.Thread(target=self._pump, daemon=True, name="sia-output-pump")
        self._thread.start()

    @property
    def cut(self) -> int:
        """Bytes of output not kept in the log (between head and tail)."""
        return max(0, self.total - self.head_bytes - self.tail_bytes)

    def write_line(self, text: str) -> None:
        """A line of sia's own (e.g. a banner) into the log, outside the byte counts."""
        with self._lock:
            self._out.write(text.encode("utf-8", "replace"))
            self._out.flush()

    def _pump(self) -> None:
        os.set_blocking(self._fd, False)
        while True:
            try:
                select.select([self._fd], [], [], 1.0)
            except (OSError, ValueError):
                break
            # read and count under the lock, so settle() never sees bytes read but not counted
            with self._lock:
                try:
                    chunk = os.read(self._fd, _CHUNK)
                except BlockingIOError:
                    continue
                except OSError:
                    break
                if not chunk:
                    break
                self.total += len(chunk)
                self._recent += chunk
                del self._recent[: max(0, len(self._recent) - _RECENT)]
                room = self.head_bytes - self._written
                if self._out.closed:  # closed on a timeout while a leftover still writes
                    continue
                if room > 0:
                    self._out.write(chunk[:room])
                    self._out.flush()
                    self._written += min(room, len(chunk))
                    chunk = chunk[room:]
                if chunk:
                    self._tail.append(chunk)
                    self._tail_size += len(chunk)
                    while self._tail and self._tail_size - len(self._tail[0]) >= self.tail_bytes:
                        self._tail_size -= len(self._tail.popleft())
        with contextlib.suppress(OSError):
            os.close(self._fd)

    def tail(self, max_chars: int = 3000, max_lines: int = 30) -> str:
        """The last lines of the output (from memory), at most ``max_chars``."""
        with self._lock:
            recent = bytes(self._recent)
        text = recent.decode("utf-8", "replace")
        lines = text.rstrip().splitlines()[-max_lines:]
        return "\n".join(lines)[-max_chars:]

    def settle(self, timeout: float = 5.0) -> None:
        """Wait (at most ``timeout``) until what is in the pipe now has been read and counted:
        output a command wrote before answering is charged to that answer, not the next."""
        deadline = time.monotonic() + timeout
        while self._thread.is_alive() and time.monotonic() < deadline:
            with self._lock:
                try:
                    pending = struct.unpack(
                        "i", fcntl.ioctl(self._fd, termios.FIONREAD, b"\0" * 4)
                    )[0]
                except OSError:  # closed: nothing left to count
                    return
            if pending == 0:
                return
            time.sleep(0.001)

    def wait_eof(self, timeout: float) -> bool:
        """Wait until every writer has closed the pipe; whether that happened in time."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def close(self, timeout: float = 5.0) -> None:
        """Wait for the writers' EOF, then write the kept tail and the cut note; idempotent."""
        self._thread.join(timeout)
        with self._lock:
            if self._out.closed:
                return
            if self._tail:
                kept = b"".join(self._tail)[-self.tail_bytes :] if self.tail_bytes else b""
                cut = self.total - self._written - len(kept)
                if cut > 0:
                    self._out.write(
                        f"\n[sia: {cut} bytes of output cut here; the log keeps the first "
                        f"{self._written} and the last {len(kept)}]\n".encode()
                    )
                self._out.write(kept)
            self._out.close()
