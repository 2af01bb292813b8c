"""sia_core.services.untrusted: reading what a scaffold left, with nothing followed and everything bounded."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from sia_core.services.untrusted import (
    OutputPump,
    UntrustedFileError,
    harvest,
    read_bounded,
    read_tail,
)


@pytest.fixture
def secret(tmp_path: Path) -> Path:
    path = tmp_path / "private" / "labels.csv"
    path.parent.mkdir()
    path.write_text("id,label\nq1,SECRET\n")
    return path


def test_harvest_takes_regular_files_and_refuses_everything_else(
    tmp_path: Path, secret: Path
) -> None:
    work = tmp_path / "work"
    (work / "results").mkdir(parents=True)
    (work / "submission.csv").write_text("id,label\nq1,no\n")
    (work / "results" / "a.json").write_text("{}")
    (work / "results" / "deeper").mkdir()
    (work / "results" / "deeper" / "b.json").write_text("{}")  # two levels down: not matched
    (work / ".hidden").write_text("x")
    os.symlink(secret, work / "link.csv")
    os.symlink(tmp_path / "nowhere", work / "dangling.csv")
    os.mkfifo(work / "fifo.csv")
    os.link(secret, work / "hard.csv")
    (work / "big.csv").write_bytes(b"x" * 2000)
    (work / "results.json").write_text('{"accuracy": 1.0}')  # only the scorer writes this
    os.symlink(secret.parent, work / "linked-folder")

    report = harvest(work, tmp_path / "out", max_file_bytes=1000)

    assert sorted(report.taken) == ["results/a.json", "submission.csv"]
    refused = "\n".join(report.refused)
    for name, why in [
        ("link.csv", "symbolic link"),
        ("dangling.csv", "symbolic link"),
        ("fifo.csv", "fifo"),
        ("hard.csv", "hard link"),
        ("big.csv", "over the 1000-byte limit"),
        ("linked-folder", "symbolic link"),
    ]:
        assert any(line.startswith(name) and why in line for line in report.refused), (
            name,
            refused,
        )
    out = tmp_path / "out"
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()) == [
        "results/a.json",
        "submission.csv",
    ]
    assert not any("SECRET" in p.read_text() for p in out.rglob("*") if p.is_file())


def test_harvest_caps_the_total_and_the_count(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    for k in range(5):
        (work / f"f{k}.txt").write_bytes(b"y" * 400)
    report = harvest(work, tmp_path / "out", max_total_bytes=1000, max_files=4)
    assert report.taken == ("f0.txt", "f1.txt")  # 800 bytes; a third would pass 1000
    assert report.total_bytes == 800
    assert len(report.refused) == 3


def test_harvest_of_a_work_dir_that_is_a_link(tmp_path: Path, secret: Path) -> None:
    os.symlink(secret.parent, tmp_path / "work")
    report = harvest(tmp_path / "work", tmp_path / "out")
    assert report.taken == () and "cannot be read as a folder" in report.refused[0]


def test_read_bounded_follows_no_component(tmp_path: Path, secret: Path) -> None:
    assert read_bounded(secret, 100) == secret.read_bytes()
    os.symlink(secret.parent, tmp_path / "via")
    with pytest.raises(UntrustedFileError, match="not a plain folder"):
        read_bounded(tmp_path / "via" / "labels.csv", 100)
    os.symlink(secret, tmp_path / "direct")
    with pytest.raises(UntrustedFileError):
        read_bounded(tmp_path / "direct", 100)
    with pytest.raises(UntrustedFileError, match="over the 5-byte limit"):
        read_bounded(secret, 5)
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(UntrustedFileError, match="fifo"):
        read_bounded(tmp_path / "fifo", 100)  # returns at once: no writer is waited for
    with pytest.raises(FileNotFoundError):
        read_bounded(tmp_path / "missing", 100)
    assert read_tail(secret, 7) == b"SECRET\n"


def _pump(path: Path, data: bytes, **kw: int) -> OutputPump:
    r, w = os.pipe()
    pump = OutputPump(r, path, **kw)

    def write() -> None:
        with os.fdopen(w, "wb") as f:
            f.write(data)

    t = threading.Thread(target=write)
    t.start()
    t.join()
    pump.close()
    return pump


def test_output_pump_keeps_head_and_tail_with_a_note(tmp_path: Path) -> None:
    data = b"".join(f"line {k:05d}\n".encode() for k in range(10_000))  # 110,000 bytes
    pump = _pump(tmp_path / "w.log", data, head_bytes=1100, tail_bytes=1100)
    text = (tmp_path / "w.log").read_text()
    assert text.startswith("line 00000\n") and text.endswith("line 09999\n")
    assert "[sia: 107800 bytes of output cut here" in text
    assert pump.total == len(data) and pump.cut == 107_800
    assert pump.tail(max_lines=2) == "line 09998\nline 09999"


def test_output_pump_small_output_is_kept_whole(tmp_path: Path) -> None:
    pump = _pump(tmp_path / "w.log", b"hello\n", head_bytes=1000, tail_bytes=1000)
    assert (tmp_path / "w.log").read_bytes() == b"hello\n" and pump.cut == 0


@pytest.mark.parametrize("planted", ["link", "fifo", "folder", "hard-link"])
def test_output_pump_replaces_what_was_planted_at_its_path(
    tmp_path: Path, secret: Path, planted: str
) -> None:
    log = tmp_path / "worker-0.log"
    if planted == "link":
        os.symlink(secret, log)
    elif planted == "fifo":
        os.mkfifo(log)
    elif planted == "folder":
        (log / "inside").mkdir(parents=True)
    else:
        os.link(secret, log)
    _pump(log, b"new output\n")
    assert not log.is_symlink() and log.is_file()
    assert log.read_bytes() == b"new output\n"
    assert secret.read_text() == "id,label\nq1,SECRET\n"  # never written through
