"""Plugin commands: the ``sia.commands`` entry points (listed without import, loaded on use)
and the ``sia_register_commands`` hook, with a real distribution on ``sys.path``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


def install_fake_dist(root: Path, entry_points: str, module: str) -> None:
    """A minimal installed distribution ``sia-hello`` (dist-info + module) under ``root``."""
    info = root / "sia_hello-0.3.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: sia-hello\nVersion: 0.3\nSummary: Greets the user.\n"
    )
    (info / "entry_points.txt").write_text(entry_points)
    (root / "sia_hello.py").write_text(module)


def sia(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(root)}
    code = (
        "import sys\nfrom sia_core.surface.cli import main\nrc = main(sys.argv[1:])\n"
        "print('LOADED' if 'sia_hello' in sys.modules else 'NOT-LOADED')\nsys.exit(rc)"
    )
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, timeout=120
    )


HELLO = (
    "import click\n\n@click.command()\n@click.option('--name', default='world')\n"
    "def hello(name):\n    '''Say hello.'''\n    click.echo(f'hello {name}')\n"
)


def test_entry_point_command_is_listed_without_import_and_runs(tmp_path: Path) -> None:
    install_fake_dist(tmp_path, "[sia.commands]\nhello = sia_hello:hello\n", HELLO)
    helped = sia(tmp_path, "--help")
    assert helped.returncode == 0, helped.stderr
    assert "  hello          Say hello." in helped.stdout  # the docstring, read from the source
    assert helped.stdout.strip().endswith("NOT-LOADED")
    ran = sia(tmp_path, "hello", "--name", "ada")
    assert ran.returncode == 0, ran.stderr
    assert "hello ada" in ran.stdout and ran.stdout.strip().endswith("LOADED")


def test_help_line_falls_back_to_the_distribution_summary(tmp_path: Path) -> None:
    module = "import click\nhello = click.Command('hello', callback=lambda: None)\n"
    install_fake_dist(tmp_path, "[sia.commands]\nhello = sia_hello:hello\n", module)
    helped = sia(tmp_path, "--help")
    assert "  hello          Greets the user." in helped.stdout
    assert helped.stdout.strip().endswith("NOT-LOADED")


@pytest.mark.parametrize(
    ("module", "wanted"),
    [
        (
            "raise ImportError('no module named hellolib')",
            "could not be loaded from sia_hello:hello",
        ),
        ("hello = 42\n", "is not a click command (got int)"),
    ],
)
def test_broken_entry_point_command_is_one_line(tmp_path: Path, module: str, wanted: str) -> None:
    install_fake_dist(tmp_path, "[sia.commands]\nhello = sia_hello:hello\n", module)
    assert sia(tmp_path, "--help").returncode == 0  # the listing never imports it
    ran = sia(tmp_path, "hello")
    assert ran.returncode == 1
    assert wanted in ran.stderr and "Traceback" not in ran.stderr
    assert len(ran.stderr.strip().splitlines()) == 1


def test_hook_command_is_found_on_first_use(tmp_path: Path) -> None:
    hook = (
        "import click\nfrom sia_core import hookimpl\n\n@hookimpl\n"
        "def sia_register_commands(cli):\n    cli.add_command(click.Command('hi', "
        "callback=lambda: click.echo('hi from a hook')))\n"
    )
    install_fake_dist(tmp_path, "[sia]\nhello = sia_hello\n", hook)
    ran = sia(tmp_path, "hi")
    assert ran.returncode == 0, ran.stderr
    assert "hi from a hook" in ran.stdout
    missing = sia(tmp_path, "nope")
    assert missing.returncode == 2 and "No such command 'nope'" in missing.stderr
