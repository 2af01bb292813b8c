"""pytest fixtures for sia and its plugins (loaded as the ``sia_core`` pytest plugin).

- ``sia_pm``: a plugin manager with sia's built-ins and no entry points
- ``register_plugin(obj, name)``: register a plugin object for one test
- ``tiny_task_dir``: a writable copy of the tiny demo task
- ``scripted_script(dict)``: write a scripted-backend script and return its path
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from sia_core.machinery.plugins import SiaPluginManager, new_plugin_manager


@pytest.fixture
def sia_pm() -> SiaPluginManager:
    """A fresh plugin manager: built-ins registered, no entry points loaded."""
    return new_plugin_manager(entrypoints=False)


@pytest.fixture
def register_plugin(sia_pm: SiaPluginManager) -> Iterator[Callable[[object, str], object]]:
    """Register plugin objects on ``sia_pm`` for the duration of one test."""
    names: list[str] = []

    def _register(obj: object, name: str) -> object:
        sia_pm.register_object(obj, name)
        names.append(name)
        return obj

    yield _register
    for name in reversed(names):
        if sia_pm.get_plugin(name) is not None:
            sia_pm.unregister_object(name)


def tiny_task_source() -> Path:
    return Path(str(resources.files("sia_core.testing") / "tiny_task"))


@pytest.fixture
def tiny_task_dir(tmp_path: Path) -> Path:
    """A writable copy of the tiny demo task (tests may break it on purpose)."""
    dst = tmp_path / "tiny-task"
    shutil.copytree(tiny_task_source(), dst, ignore=shutil.ignore_patterns("__pycache__"))
    return dst


@pytest.fixture
def scripted_script(tmp_path: Path) -> Callable[..., Path]:
    """Write a scripted-backend script (plus scaffold files) and return the script's path."""

    def _write(script: dict[str, Any], files: dict[str, str] | None = None) -> Path:
        folder = tmp_path / "script"
        folder.mkdir(exist_ok=True)
        for name, text in (files or {}).items():
            (folder / name).write_text(text, encoding="utf-8")
        path = folder / "script.json"
        path.write_text(json.dumps(script), encoding="utf-8")
        return path

    return _write
