"""sia-trackers[wandb] in offline mode: a real loop run and its resume, read back from the files
W&B wrote (its transaction log, parsed with wandb's own protobuf records). No network.

The weights generation's training job is the test executor of test_tracker_mlflow (the worker's
log format, no model).
"""

from __future__ import annotations

import json
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest

from sia_core.loop import Loop
from sia_core.machinery.runstore import RunStore
from sia_trackers import TrackerObserver

from .test_tracker_mlflow import GEN_FILES, STEPS, register_testkit, tiny_config

BLOCK = 32768  # the .wandb file is a LevelDB-style log: 32 KiB blocks of checksummed chunks


def wandb_records(path: Path) -> Iterator[Any]:
    """The protobuf ``Record`` messages of a ``run-ID.wandb`` file."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B", data[:7]
    offset, pending = 7, b""
    while offset + 7 <= len(data):
        left = BLOCK - offset % BLOCK
        if left < 7:  # a block's tail too short for a chunk header is padding
            offset += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[offset : offset + 7])
        if kind == 0:  # zero padding up to the next block
            offset += left
            continue
        chunk, offset = data[offset + 7 : offset + 7 + length], offset + 7 + length
        pending = chunk if kind in (1, 2) else pending + chunk  # FULL/FIRST, MIDDLE/LAST
        if kind in (1, 4):
            record = pb.Record()  # type: ignore[attr-defined]
            record.ParseFromString(pending)
            yield record
            pending = b""


def closed(path: Path) -> bool:
    """Whether a ``run-ID.wandb`` file is complete: it parses and ends with the exit record."""
    try:
        return any(r.WhichOneof("record_type") == "exit" for r in wandb_records(path))
    except Exception:  # cut short mid-record: still being written
        return False


def wait_closed(run_dir: Path, folders: int, timeout: float = 600.0) -> None:
    """``run.finish()`` can return before wandb's service has written the whole file (in a
    process that goes on, nothing tears the service down): wait for ``folders`` complete ones."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        logs = list((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))
        if len(logs) >= folders and all(closed(p) for p in logs):
            return
        time.sleep(0.2)


def read_offline_run(run_dir: Path) -> dict[str, Any]:
    """What a run's offline folders hold: id, config, history rows, summary, artifacts, exits."""
    out: dict[str, Any] = {
        "ids": [],
        "config": {},
        "history": [],
        "summary": {},
        "artifacts": {},
        "exit_codes": [],
    }
    for folder in sorted((run_dir / "wandb").glob("offline-run-*")):
        (log,) = folder.glob("run-*.wandb")
        for r in wandb_records(log):
            kind = r.WhichOneof("record_type")
            if kind == "run":
                out["ids"].append(r.run.run_id)
                out["config"].update({i.key: json.loads(i.value_json) for i in r.run.config.update})
            elif kind == "config":
                out["config"].update({i.key: json.loads(i.value_json) for i in r.config.update})
            elif kind == "history":
                row = {
                    i.key or "/".join(i.nested_key): json.loads(i.value_json)
                    for i in r.history.item
                }
                out["history"].append(row)
            elif kind == "summary":
                out["summary"].update(
                    {i.key: json.loads(i.value_json) for i in r.summary.update if i.key}
                )
            elif kind == "artifact":
                paths = {m.path for m in r.artifact.manifest.contents}
                out["artifacts"][r.artifact.name] = paths
            elif kind == "exit":
                out["exit_codes"].append(r.exit.exit_code)
    return out


def test_wandb_offline_logs_a_run_and_its_resume_to_one_run_id(
    sia_pm, register_plugin, tiny_task_dir, tmp_path, monkeypatch
) -> None:
    from sia_trackers.wandb_tracker import WandbTracker

    for var in ("WANDB_DATA_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(var, str(tmp_path / "wandb-home" / var.lower()))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("WANDB_DIR", raising=False)  # default: inside the run folder
    monkeypatch.setenv("SIA_TRACKERS", "wandb")
    register_testkit(register_plugin, monkeypatch, tmp_path)
    config = attrs.evolve(
        tiny_config(tiny_task_dir, tmp_path), max_gen=2, executor="testkit", test_eval="final"
    )
    store = RunStore.open(tmp_path / "runs", "1", create=True)
    register_plugin(TrackerObserver("wandb", WandbTracker), "tracker-wandb")
    Loop(config, store, sia_pm).run()
    # as a new process would: a fresh observer, and no SIA_TRACKERS (tracked runs stay tracked)
    sia_pm.unregister_object("tracker-wandb")
    register_plugin(TrackerObserver("wandb", WandbTracker), "tracker-wandb-2")
    monkeypatch.delenv("SIA_TRACKERS")
    store = RunStore.open(tmp_path / "runs", "1")
    rows = Loop(attrs.evolve(config, max_gen=3), store, sia_pm).run()

    wait_closed(store.root, folders=2)
    got = read_offline_run(store.root)
    state = json.loads((store.root / "trackers" / "wandb.json").read_text())
    # one W&B run id for both processes (offline, each process writes its own folder of it)
    assert got["ids"] == [state["backend"]["id"]] * 2
    assert got["exit_codes"] == [0, 0]
    assert got["config"]["backend"] == "scripted" and got["config"]["executor"] == "testkit"

    per_gen = {r["gen"]: r for r in got["history"] if "dev_score" in r}
    assert {g: r["dev_score"] for g, r in per_gen.items()} == {r.gen: r.dev for r in rows}
    levers = {r["gen"]: r["lever"] for r in got["history"] if "lever" in r}
    assert levers == {1: 0, 2: 1, 3: 0}
    curve = sorted(
        (r["train/step"], r["train/reward_mean"])
        for r in got["history"]
        if "train/reward_mean" in r
    )
    assert [s for s, _ in curve] == list(range(1, STEPS + 1))
    assert [v for _, v in curve] == pytest.approx([0.1 * s for s in range(1, STEPS + 1)])
    stds = [r["train/reward_std"] for r in got["history"] if "train/reward_std" in r]
    assert stds == pytest.approx([0.05 * s for s in range(1, STEPS + 1)])

    # test scores only at the run's end: the first and the best generation (test_eval=final)
    tested = {r["gen"]: r["test_score"] for r in got["history"] if "test_score" in r}
    for gen in tested:
        sealed = store.root / f"gen_{gen}" / "sealed" / "metrics_test.json"
        assert tested[gen] == json.loads(sealed.read_text())["score"]
    assert set(tested) == {1, 3}
    first_test = min(i for i, r in enumerate(got["history"]) if "test_score" in r)
    gen2_dev = [i for i, r in enumerate(got["history"]) if r.get("gen") == 2 and "dev_score" in r]
    assert first_test > gen2_dev[0]  # after the first process's last generation

    assert got["summary"]["sia.status"] == "finished"
    assert got["summary"]["gen_2.lever"] == "weights"
    rid = state["backend"]["id"]
    for gen in (1, 2, 3):
        paths = got["artifacts"][f"run-{rid}-gen_{gen}"]
        assert {Path(p).name for p in paths} == GEN_FILES
        assert all("sealed" not in p and "private" not in p for p in paths)
