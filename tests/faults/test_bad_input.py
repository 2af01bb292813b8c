"""Bad input from the user: each is one ``sia: error:`` line naming what is wrong and what would
be right, no traceback, and no run folder left behind for a run that never started.

Covered elsewhere (not repeated here): unknown task / backend / sandbox / RL objective names,
``--task`` with ``--task_dir``, a missing task folder, ``--max_gen 0``, an unknown lever and
reusing a ``--run_id`` with different settings (tests/core/test_cli.py); every way a task folder
can be malformed, one by one (tests/core/test_taskdir.py).
"""

from __future__ import annotations

import fcntl
import os
import shutil
from pathlib import Path

import pytest

from sia_core.machinery.plugins import new_plugin_manager
from sia_core.surface.cli import main
from sia_core.testing.fixtures import tiny_task_source

from .common import last_line

#: a finished one-generation run, made once and copied per test
_MADE: dict[str, Path] = {}


def sia(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """The real CLI entry point, in this process: exit code and stderr."""
    capsys.readouterr()
    rc = main(args)
    return rc, capsys.readouterr().err


def finished_run(runs: Path, tmp_path_factory: pytest.TempPathFactory, capsys) -> None:
    if "run" not in _MADE:
        made = tmp_path_factory.mktemp("made") / "runs"
        rc, err = sia([*ONE_GEN, "--run_id", "1", "--runs-dir", str(made)], capsys)
        assert rc == 0, err
        _MADE["run"] = made
    shutil.copytree(_MADE["run"], runs)


ONE_GEN = ["--task", "tiny-add", "--backend", "scripted", "--max_gen", "1"]


def broken_task(root: Path, how: str) -> Path:
    """A copy of the tiny task, broken one way."""
    task = root / f"task-{how}"
    shutil.copytree(tiny_task_source(), task, ignore=shutil.ignore_patterns("__pycache__"))
    if how == "no-task-md":
        (task / "data/public/task.md").unlink()
    elif how == "bad-jsonl":
        with open(task / "data/public/dev.jsonl", "a") as f:
            f.write("{not json\n")
    elif how == "bad-toml":
        (task / "task.toml").write_text("[task\nname = 'x'\n")
    elif how == "no-labels":
        shutil.rmtree(task / "data/private")
    elif how == "empty":
        shutil.rmtree(task)
        task.mkdir()
    return task


@pytest.mark.parametrize(
    ("how", "expected"),
    [
        ("no-task-md", "data/public/task.md: missing"),
        ("bad-jsonl", "dev.jsonl"),
        ("bad-toml", "task.toml"),
        ("no-labels", "private"),
        ("empty", "reference/reference_target_agent.py: missing"),
    ],
)
def test_malformed_task_folder_via_the_cli(
    tmp_path: Path, how: str, expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    task = broken_task(tmp_path, how)
    runs = tmp_path / "runs"
    rc, err = sia(
        ["--task_dir", str(task), "--backend", "scripted", "--runs-dir", str(runs)], capsys
    )
    assert rc == 1
    line = last_line(err)
    assert line.startswith(f"sia: error: task '{task.name}' is not valid: ") and expected in line
    assert "Traceback" not in err
    assert not runs.exists(), "a task that cannot load leaves no run folder"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--executor", "nope"], "unknown executor 'nope'; choose one of: "),
        (["--run_id", "../escape"], "run id '../escape' is not valid: use letters, digits"),
        (["--run_id", "a/b"], "run id 'a/b' is not valid"),
        (["--item-timeout", "-1"], "-1.0 is not in the range x>0"),
        (["--parallel", "0"], "0 is not in the range x>=1"),
        (["--backend-opt", "noequals"], "'noequals': expected KEY=VALUE"),
        (["--train-opt", "=3"], "'=3': expected KEY=VALUE"),
        (["--test-eval", "sometimes"], "'sometimes' is not one of 'final', 'every', 'none'"),
        (
            ["--backend-opt", "script=/nonexistent/script.json"],
            "cannot read the scripted backend's script /nonexistent/script.json",
        ),
    ],
)
def test_bad_option_is_one_clear_line(
    tmp_path: Path, args: list[str], expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    runs = tmp_path / "runs"
    rc, err = sia([*ONE_GEN, *args, "--runs-dir", str(runs)], capsys)
    assert rc in (1, 2), err
    errors = [x for x in err.splitlines() if x.startswith("sia: error:")]
    assert errors == [last_line(err)] and expected in errors[0], err
    assert "Traceback" not in err
    assert not (tmp_path / "escape").exists() and not (runs / "run_a").exists()


def test_unknown_executor_lists_the_installed_ones(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, err = sia([*ONE_GEN, "--executor", "nope", "--runs-dir", str(tmp_path)], capsys)
    listed = last_line(err).split("choose one of: ")[1].split(" (`sia doctor`")[0].split(", ")
    assert set(listed) == set(new_plugin_manager().executors().names())
    assert last_line(err).endswith(
        "(`sia doctor` says what this environment has and where the rest lives)"
    )


def test_run_id_in_use_by_another_process(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    runs = tmp_path / "runs"
    finished_run(runs, tmp_path_factory, capsys)
    fd = os.open(runs / "run_1/.lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as a live `sia` driving run 1 holds it
        os.ftruncate(fd, 0)
        os.write(fd, b"4242")
        for args in (["resume", "1"], [*ONE_GEN, "--run_id", "1", "--max_gen", "2"]):
            rc, err = sia([*args, "--runs-dir", str(runs)], capsys)
            assert rc == 1
            assert last_line(err) == (
                f"sia: error: run folder {runs / 'run_1'} is in use by another sia process "
                "(pid 4242)"
            )
    finally:
        os.close(fd)


@pytest.mark.parametrize("damage", ["missing", "corrupt"])
def test_resume_of_a_run_without_a_usable_run_json(
    tmp_path: Path,
    damage: str,
    tmp_path_factory: pytest.TempPathFactory,
    capsys: pytest.CaptureFixture[str],
) -> None:
    runs = tmp_path / "runs"
    finished_run(runs, tmp_path_factory, capsys)
    run_json = runs / "run_1/run.json"
    if damage == "missing":
        run_json.unlink()
    else:
        run_json.write_text('{"run_id": "1", "sta')
    rc, err = sia(["resume", "1", "--runs-dir", str(runs)], capsys)
    assert rc == 1 and "Traceback" not in err
    expected = "has no run.json" if damage == "missing" else "run.json is corrupt"
    assert expected in last_line(err), err


def test_resume_of_an_unknown_run_lists_the_runs(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    runs = tmp_path / "runs"
    finished_run(runs, tmp_path_factory, capsys)
    rc, err = sia(["resume", "9", "--runs-dir", str(runs)], capsys)
    assert rc == 1
    assert last_line(err).startswith(f"sia: error: no run '9' in {runs}")
    assert "runs there: 1" in last_line(err)
