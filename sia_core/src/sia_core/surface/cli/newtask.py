"""``sia new-task NAME``: write a pip-installable task package skeleton.

:func:`write_skeleton` copies ``newtask_template/`` (files ending ``.tmpl``, with ``{{name}}``,
``{{module}}``, ``{{dist}}`` and ``{{sia_core_requirement}}`` filled in; ``__MODULE__`` in a path
becomes the module suffix) to ``DEST/NAME``. The result installs with ``pip install -e``,
registers its task through the ``sia`` entry-point group, passes ``sia validate-task NAME``
and runs with ``sia --task NAME``. :func:`new_task_command` is the click command for the CLI.
"""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from sia_core import __version__
from sia_core.contracts.errors import SiaError

if TYPE_CHECKING:
    import click

__all__ = ["NAME_RULE", "new_task_command", "skeleton_files", "write_skeleton"]

_NAME_RE = re.compile(r"[a-z][a-z0-9]*(?:-[a-z0-9]+)*")
_MAX_NAME = 40
NAME_RULE = (
    "lowercase letters, digits and single hyphens, starting with a letter and not ending with "
    f"a hyphen, at most {_MAX_NAME} characters (e.g. 'word-count')"
)
_SUFFIX = ".tmpl"
_PATH_TOKEN = "__MODULE__"


def _check_name(name: str) -> None:
    if len(name) > _MAX_NAME or not _NAME_RE.fullmatch(name):
        raise SiaError(f"invalid task name {name!r}: use {NAME_RULE}")


def _fields(name: str) -> dict[str, str]:
    major, minor = (int(p) for p in __version__.split(".")[:2])
    return {
        "name": name,
        "module": "sia_task_" + name.replace("-", "_"),
        "dist": "sia-task-" + name,
        "sia_core_requirement": f"sia-core>={major}.{minor},<{major}.{minor + 1}",
    }


def skeleton_files(name: str) -> dict[str, str]:
    """The skeleton for task ``name``: relative path -> text (nothing is written)."""
    _check_name(name)
    fields = _fields(name)
    root = resources.files("sia_core.surface.cli") / "newtask_template"
    out: dict[str, str] = {}
    stack = [(root, "")]
    while stack:
        folder, prefix = stack.pop()
        for entry in folder.iterdir():
            rel = f"{prefix}{entry.name}"
            if entry.is_dir():
                if entry.name != "__pycache__":
                    stack.append((entry, rel + "/"))
            elif entry.name.endswith(_SUFFIX):
                text = entry.read_text(encoding="utf-8")
                for key, value in fields.items():
                    text = text.replace("{{" + key + "}}", value)
                path = rel[: -len(_SUFFIX)].replace(
                    _PATH_TOKEN, fields["module"][len("sia_task_") :]
                )
                out[path] = text
    return dict(sorted(out.items()))


def write_skeleton(name: str, dest: Path) -> Path:
    """Write the task package skeleton ``dest/name`` and return that folder.

    Raises :class:`~sia_core.contracts.errors.SiaError` (one line) for a name that is not allowed or a
    destination that already exists; nothing is written then.
    """
    files = skeleton_files(name)
    root = Path(dest).expanduser() / name
    if root.exists():
        raise SiaError(f"{root} already exists: choose another name or --dest")
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root


def new_task_command() -> click.Command:
    """The ``sia new-task NAME [--dest DIR]`` command (add it with ``cli.add_command``)."""
    import click

    @click.command("new-task")
    @click.argument("name")
    @click.option(
        "--dest",
        type=click.Path(file_okay=False, path_type=Path),
        default=Path("."),
        show_default=True,
        help="Folder to create the package folder NAME in.",
    )
    def new_task(name: str, dest: Path) -> None:
        """Write a pip-installable task package skeleton DEST/NAME (docs/publishing-a-task.md)."""
        root = write_skeleton(name, dest)
        task_dir = root / "src" / _fields(name)["module"] / "task"
        click.echo(f"wrote {root}")
        click.echo(f"next: edit {task_dir}, then")
        click.echo(f"  pip install -e {root}")
        click.echo(f"  sia validate-task {task_dir}")
        click.echo(f"  cd {root} && pytest")

    return new_task
