"""A full disk under the run folder: one clear line, nothing finished lost, resume finishes it.

The run folder lives on a small tmpfs mounted in a private mount namespace (``unshare -m``, as
root). A test plugin fills that disk from inside the real ``sia`` process at an exact event (as
another process filling the disk would); the kernel's ENOSPC does the rest. After the failure
the test frees the space and runs ``sia resume``; the final state must equal an uninterrupted
run's. Everything happens in one shell inside the namespace; copies of the run folder after the
failure and at the end are made outside the tmpfs for the assertions.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.core.test_loop import write_script
from tests.core.test_plugins import make_fake_dist

from .common import final_state, run_args, sia, stale_temps

DATA = Path(__file__).parent / "data"


def _can_mount() -> tuple[bool, str]:
    if shutil.which("unshare") is None:
        return False, "unshare (util-linux) is not installed"
    probe = subprocess.run(
        ["unshare", "-m", "--propagation", "private", "sh", "-c", "mount -t tmpfs none /mnt"],
        capture_output=True,
        text=True,
    )
    return probe.returncode == 0, probe.stderr.strip()


CAN_MOUNT, WHY = _can_mount()

DRIVER = """
set -u
mount -t tmpfs -o size=4m sia-test-disk "$DISK" || exit 90
"$PY" -m sia_core.surface.cli "$@" >"$OUT/fail.out" 2>"$OUT/fail.err"; echo $? >"$OUT/fail.rc"
df -B1 --output=avail "$DISK" | tail -1 >"$OUT/fail.avail"
cp -a "$DISK/runs" "$OUT/after_fail"
rm -f "$DISK/filler"
SIA_TEST_FILL_AT= "$PY" -m sia_core.surface.cli resume 1 --runs-dir "$DISK/runs" \
    >"$OUT/resume.out" 2>"$OUT/resume.err"; echo $? >"$OUT/resume.rc"
cp -a "$DISK/runs" "$OUT/final"
"""


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    base = tmp_path_factory.mktemp("ref")
    script = write_script(base)
    proc = sia(run_args(script, base / "runs", max_gen=3))
    assert proc.returncode == 0, proc.stderr
    return final_state(base / "runs/run_1"), script


def _json_files_parse(root: Path) -> None:
    for path in root.rglob("*.json"):
        if "work" not in path.relative_to(root).parts:
            json.loads(path.read_text())  # raises on a corrupt artifact
    raw = (root / "events.jsonl").read_bytes()
    assert raw.endswith(b"\n")
    for line in raw.splitlines():
        json.loads(line)


@pytest.mark.slow
@pytest.mark.skipif(not CAN_MOUNT and not os.environ.get("CI"), reason=f"cannot mount: {WHY}")
@pytest.mark.parametrize(
    "fill_at",
    [
        "step_finished:1:run",  # the next write is gen 1's metrics.json
        "item_finished:2:6",  # halfway through gen 2's scaffold run
        "step_finished:2:gate",  # archive.json written; gen_finished not yet
    ],
)
def test_full_disk_stops_with_one_line_and_resume_finishes(
    fill_at: str, reference: tuple[dict[str, Any], Path], tmp_path: Path
) -> None:
    expected, script = reference
    site, disk, out = tmp_path / "site", tmp_path / "disk", tmp_path / "out"
    for d in (site, disk, out):
        d.mkdir()
    make_fake_dist(
        site,
        "sia-test-filler",
        "test-filler",
        "sia_test_filler",
        (DATA / "filler_plugin.py").read_text(),
    )
    env = {
        **os.environ,
        "PYTHONPATH": str(site),
        "SIA_TEST_FILL_AT": fill_at,
        "SIA_TEST_FILL_PATH": str(disk / "filler"),
        "DISK": str(disk),
        "OUT": str(out),
        "PY": sys.executable,
    }
    args = run_args(script, disk / "runs", max_gen=3)
    done = subprocess.run(
        ["unshare", "-m", "--propagation", "private", "sh", "-c", DRIVER, "sh", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr

    # the failed run: exit 1, one line naming the disk and saying how to go on, no traceback
    assert (out / "fail.rc").read_text().strip() == "1"
    assert int((out / "fail.avail").read_text()) < 64 << 10  # the disk really was full
    err = (out / "fail.err").read_text()
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"sia: error: no space left on the disk holding {disk}/runs/run_1")
    assert last.endswith("free some space, then `sia resume 1`"), last
    assert [line for line in err.splitlines() if line.startswith("sia: error")] == [last]

    # nothing written before the failure is lost or corrupt
    failed, final = out / "after_fail/run_1", out / "final/run_1"
    _json_files_parse(failed)
    steps = [
        (e["gen"], e["data"]["step"])
        for e in map(json.loads, (failed / "events.jsonl").read_text().splitlines())
        if e["type"] == "step_finished"
    ]
    assert steps, "at least one step had finished before the disk filled"
    for gen, _ in steps:
        for name in ("target_agent.py", "decision.json", "diff.patch"):
            assert (failed / f"gen_{gen}" / name).read_bytes() == (
                final / f"gen_{gen}" / name
            ).read_bytes()

    # after freeing the space, resume finishes it as if nothing had happened
    assert (out / "resume.rc").read_text().strip() == "0", (out / "resume.err").read_text()
    assert final_state(final) == expected
    assert stale_temps(final) == []
