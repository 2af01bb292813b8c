"""`sia new-task`: the skeleton installs, validates, runs and passes its own tests."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from sia_core.contracts.errors import SiaError
from sia_core.services.taskdir import validate_task
from sia_core.surface.cli.newtask import NAME_RULE, new_task_command, skeleton_files, write_skeleton
from sia_core.testing.conformance.task import TaskConformance

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "sia-task-example"
BIN = Path(sys.executable).parent


def test_skeleton_layout_and_metadata(tmp_path: Path) -> None:
    root = write_skeleton("word-count", tmp_path)
    assert root == tmp_path / "word-count"
    meta = tomllib.loads((root / "pyproject.toml").read_text())
    assert meta["project"]["name"] == "sia-task-word-count"
    assert meta["project"]["entry-points"]["sia"] == {
        "task-word-count": "sia_task_word_count.plugin"
    }
    assert meta["project"]["dependencies"] == ["sia-core>=0.1,<0.2"]
    task = root / "src" / "sia_task_word_count" / "task"
    for rel in (
        "task.toml",
        "scorer.py",
        "data/public/task.md",
        "data/private/dev_labels.jsonl",
        "data/private/test_labels.jsonl",
        "reference/reference_target_agent.py",
        "reference/SAMPLE_TASK_DESCRIPTIONS.md",
    ):
        assert (task / rel).is_file(), rel
    assert (root / "tests" / "test_task.py").is_file()
    assert validate_task(task) == []
    assert "{{" not in "".join(skeleton_files("word-count").values())
    assert 'name = "word-count"' in (task / "task.toml").read_text()


@pytest.mark.parametrize(
    "name", ["", "Word", "word_count", "-word", "word-", "word--count", "1word", "a" * 41, "wörd"]
)
def test_bad_names_are_refused_with_the_rule(tmp_path: Path, name: str) -> None:
    with pytest.raises(SiaError) as err:
        write_skeleton(name, tmp_path)
    assert str(err.value) == f"invalid task name {name!r}: use {NAME_RULE}"
    assert list(tmp_path.iterdir()) == []


def test_an_existing_destination_is_refused(tmp_path: Path) -> None:
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "keep.txt").write_text("x")
    with pytest.raises(SiaError, match="already exists"):
        write_skeleton("mine", tmp_path)
    assert [p.name for p in (tmp_path / "mine").iterdir()] == ["keep.txt"]


def test_click_command(tmp_path: Path) -> None:
    cli = click.Group()
    cli.add_command(new_task_command())
    result = CliRunner().invoke(cli, ["new-task", "demo", "--dest", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "demo" / "src" / "sia_task_demo" / "task" / "task.toml").is_file()
    assert "pip install -e" in result.output
    again = CliRunner().invoke(cli, ["new-task", "demo", "--dest", str(tmp_path)])
    assert isinstance(again.exception, SiaError) and "already exists" in str(again.exception)


def _run(args: list[str], cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run(
        args, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env, check=False
    )


def test_skeleton_installs_validates_runs_and_passes_its_tests(tmp_path: Path) -> None:
    name = f"skeleton-{os.getpid()}"
    root = write_skeleton(name, tmp_path)
    pip = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "-e", str(root)]
    if importlib.util.find_spec("hatchling") is not None:
        pip.insert(-2, "--no-build-isolation")  # offline and fast: the backend is installed
    work = tmp_path / "work"  # not the skeleton's parent: `validate-task NAME` prefers ./NAME
    work.mkdir()
    installed = _run(pip, work)
    assert installed.returncode == 0, installed.stderr
    try:
        valid = _run([str(BIN / "sia"), "validate-task", name], work)
        assert valid.returncode == 0, valid.stdout + valid.stderr
        assert valid.stdout.strip().endswith(": ok")
        run = _run(
            [
                *(str(BIN / "sia"), "--task", name, "--max_gen", "2", "--backend", "scripted"),
                *("--runs-dir", str(tmp_path / "runs")),
            ],
            work,
        )
        assert run.returncode == 0, run.stderr[-2000:]
        assert (tmp_path / "runs" / "run_1" / "gen_2").is_dir()
        tests = _run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"], root)
        assert tests.returncode == 0, tests.stdout[-2000:]
        assert " passed" in tests.stdout
    finally:
        _run([sys.executable, "-m", "pip", "uninstall", "-y", "-q", f"sia-task-{name}"], work)


# -- the example package under examples/ ----------------------------------------------------------


class TestExampleTaskConformance(TaskConformance):
    @pytest.fixture
    def task_dir(self) -> Path:
        return EXAMPLE / "src" / "sia_task_example" / "task"


def test_example_package_has_the_skeletons_files() -> None:
    shipped = {
        p.relative_to(EXAMPLE).as_posix()
        for p in EXAMPLE.rglob("*")
        if p.is_file()
        and not any(part.startswith(".") or part == "__pycache__" for part in p.parts)
        and ".egg-info" not in str(p)
    }
    assert shipped == set(skeleton_files("example")) | {"make_data.py"}
    plugin = (EXAMPLE / "src" / "sia_task_example" / "plugin.py").read_text()
    assert plugin == skeleton_files("example")["src/sia_task_example/plugin.py"].replace(
        "TODO one line on what the task measures",
        "Roman numerals to integers (example third-party task package)",
    )


def test_every_example_ships_its_tests() -> None:
    """A third party starts from an example: each one comes with tests the suite runs."""
    for example in sorted((REPO / "examples").iterdir()):
        if (example / "pyproject.toml").is_file():
            assert list((example / "tests").glob("test_*.py")), f"{example.name} has no tests/"
