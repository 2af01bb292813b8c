"""Plugins, tasks and examples use only sia_core's public names (no ``_private`` import), so the
core can change its insides without breaking a third-party package written from the docs."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def private_imports(path: Path) -> list[str]:
    """``module:name`` for each ``from sia_core... import _name`` (or ``import sia_core._x``)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("sia_core"):
            parts = (node.module or "").split(".")
            found += [f"{node.module}:{a.name}" for a in node.names if a.name.startswith("_")]
            found += [f"{node.module}" for p in parts if p.startswith("_")][:1]
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("sia_core") and any(
                    p.startswith("_") for p in alias.name.split(".")
                ):
                    found.append(alias.name)
    return found


def test_no_package_outside_the_core_imports_a_private_core_name() -> None:
    sources = [
        p
        for folder in ("plugins", "tasks", "examples")
        for p in (REPO / folder).glob("*/src/**/*.py")
    ]
    assert len(sources) > 30  # the scan sees the packages
    bad = {str(p.relative_to(REPO)): private_imports(p) for p in sources}
    assert {k: v for k, v in bad.items() if v} == {}


def test_the_scan_finds_a_planted_private_import(tmp_path: Path) -> None:
    planted = tmp_path / "plugin.py"
    planted.write_text(
        "from sia_core.contracts.sandbox import Limits, _hidden\nimport sia_core._internal\n"
        "from sia_core._private import x\n"
    )
    assert private_imports(planted) == [
        "sia_core.contracts.sandbox:_hidden",
        "sia_core._internal",
        "sia_core._private",
    ]
