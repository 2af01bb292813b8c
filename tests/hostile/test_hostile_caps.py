"""Caps on what a scaffold may leave: its output (the log keeps head + tail) and its work dir
(bytes and file count, watched). Each breach is recorded on the item and the run goes on."""

from __future__ import annotations

from pathlib import Path

import pytest

from .harness import ITEMS, SANDBOXES, Arena

MB = 1024 * 1024

LOUD = """
import sys

def solve(item, ctx):
    if item.id == "hostile-0":
        chunk = "y" * (1024 * 1024 - 1) + "\\n"
        for _ in range(300):  # 300 MB of stdout
            sys.stdout.write(chunk)
        sys.stdout.flush()
    return "answer-" + item.id
"""

HOARDER = """
import os

def solve(item, ctx):
    if item.id == "hostile-0":
        block = b"z" * (16 * 1024 * 1024)
        for n in range(64):  # 1 GB, in files under the per-file size limit
            with open(f"blob-{n}.bin", "wb") as f:
                for _ in range(1):
                    f.write(block)
        return "wrote 1 GB"
    return "answer-" + item.id
"""

SWARM = """
import os

def solve(item, ctx):
    if item.id == "hostile-0":
        os.makedirs("swarm", exist_ok=True)
        for n in range(200_000):
            open(f"swarm/{n}", "w").close()
        return "made files"
    return "answer-" + item.id
"""


def dir_bytes(path: Path) -> int:
    return sum(p.lstat().st_size for p in path.rglob("*") if p.is_file())


@pytest.mark.parametrize("sandbox", SANDBOXES)
def test_300_mb_of_stdout_is_cut_to_head_and_tail(sandbox: str, tmp_path: Path) -> None:
    arena = Arena(tmp_path)
    results, _ = arena.run_scaffold(
        sandbox, LOUD, item_timeout_s=600, log_head_bytes=MB, log_tail_bytes=MB
    )
    loud, quiet = results
    assert loud.status == "ok" and loud.answer == "answer-hostile-0"
    assert any("output over the log's limit" in line for line in loud.limits_hit), loud
    assert quiet.status == "ok" and quiet.limits_hit == ()
    log = arena.work.parent / "work.logs" / "worker-0.log"
    size = log.stat().st_size
    assert 2 * MB <= size < 2 * MB + 4096, size
    text = log.read_text()
    assert "bytes of output cut here" in text
    assert text.count("y" * 1000) > 100  # head and tail are both kept


@pytest.mark.parametrize("sandbox", SANDBOXES)
@pytest.mark.parametrize("scaffold", [HOARDER, SWARM], ids=["1-gb", "200k-files"])
def test_work_dir_over_its_limit_is_killed_and_recorded(
    sandbox: str, scaffold: str, tmp_path: Path
) -> None:
    arena = Arena(tmp_path)
    results, _ = arena.run_scaffold(
        sandbox, scaffold, item_timeout_s=600, work_dir_mb=128, work_dir_files=5_000
    )
    hoard, after = results
    assert hoard.status == "error" and "work dir over its limit" in hoard.error, hoard
    assert hoard.limits_hit and "work dir over its limit" in hoard.limits_hit[0]
    assert after.status == "ok" and after.answer == "answer-" + ITEMS[1].id  # the run goes on
    assert dir_bytes(arena.work) < 128 * MB  # the breaching worker's files are gone
