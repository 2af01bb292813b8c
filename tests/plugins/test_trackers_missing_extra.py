"""sia-trackers without a tracker's extra: the plugins still load, and a run that asks for the
tracker gets one line naming the extra to install (no traceback); the run goes on untracked."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from sia_core.loop import Loop
from sia_core.machinery.runstore import RunStore
from sia_trackers import TrackerObserver

from .test_tracker_mlflow import Recorder, sia, tiny_config


def without(tmp_path: Path, library: str) -> Path:
    """A folder whose sitecustomize makes ``library`` unimportable, as if never installed."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(
        f"import sys\nsys.modules[{library!r}] = None\n", encoding="utf-8"
    )
    return site


@pytest.mark.parametrize("library", ["mlflow", "wandb"])
def test_a_tracker_whose_library_is_missing_names_the_extra(tmp_path: Path, library: str) -> None:
    runs = tmp_path / "runs"
    env = {
        **os.environ,
        "PYTHONPATH": str(without(tmp_path, library)),
        "SIA_LOAD_PLUGINS": "tracker-mlflow,tracker-wandb",
        "SIA_TRACKERS": library,
        "WANDB_MODE": "offline",
    }
    listed = json.loads(sia("plugins", "--json", env=env).stdout)["plugins"]
    loaded = {p["name"]: p for p in listed if p["name"].startswith("tracker-")}
    assert set(loaded) == {"tracker-mlflow", "tracker-wandb"}
    assert not any(p.get("error") for p in loaded.values()), loaded

    args = ("--task", "tiny-add", "--backend", "scripted", "--sandbox", "process")
    out = sia(*args, "--max_gen", "1", "--runs-dir", str(runs), env=env)
    hint = [line for line in out.stderr.splitlines() if f"tracker {library}" in line]
    assert hint == [
        f"sia: tracker {library} needs {library}, which is not installed: "
        f"pip install 'sia-trackers[{library}]'; this run goes on without it"
    ], out.stderr
    assert "Traceback" not in out.stderr and f"tracker {library} failed" not in out.stderr
    run_dir = runs / "run_1"
    assert json.loads((run_dir / "run.json").read_text())["status"] == "finished"
    assert not (run_dir / "trackers").exists()


def test_an_import_error_at_first_use_names_the_extra(
    sia_pm, register_plugin, tiny_task_dir, tmp_path, monkeypatch, capsys
) -> None:
    """The library is there but one of its own dependencies is not: the worker's one line says
    what to install too."""

    class NoSqlalchemy(Recorder):
        def start(self, run, previous):
            raise ModuleNotFoundError("No module named 'sqlalchemy'", name="sqlalchemy")

    install = "pip install 'sia-trackers[mlflow]'"
    observer = TrackerObserver("broken", NoSqlalchemy, requires=("json",), install=install)
    monkeypatch.setenv("SIA_TRACKERS", "broken")
    register_plugin(observer, "tracker-broken")
    store = RunStore.open(tmp_path / "runs", "1", create=True)
    rows = Loop(tiny_config(tiny_task_dir, tmp_path), store, sia_pm).run()
    assert [r.status for r in rows] == ["done"]
    err = capsys.readouterr().err
    failed = [line for line in err.splitlines() if "tracker broken" in line]
    assert failed == [
        "sia: tracker broken failed (ModuleNotFoundError: No module named 'sqlalchemy'; "
        f"{install}); it stops logging this run, the run goes on"
    ], err
