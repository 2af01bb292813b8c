"""The core's layers import only downwards (contracts -> machinery -> services -> loop -> surface),
and nothing in the repo imports a module by its pre-layers path."""

from __future__ import annotations

import ast
from pathlib import Path

from sia_core import LAYERS, MOVED

REPO = Path(__file__).resolve().parents[2]
CORE = REPO / "sia_core" / "src" / "sia_core"


def imported_modules(path: Path, package: str) -> list[tuple[int, str]]:
    """(line, absolute module) for every import in ``path``, lazy ones inside functions included;
    ``package`` resolves relative imports."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            # `from pkg import mod` imports pkg.mod when mod is a module
            out += [(node.lineno, f"{base}.{a.name}") for a in node.names] or [(node.lineno, base)]
    return out


def layer_of(module: str) -> int | None:
    """Index in LAYERS of a ``sia_core.<layer>...`` module; None outside the layers."""
    parts = module.split(".")
    if parts[0] != "sia_core" or len(parts) < 2 or parts[1] not in LAYERS:
        return None
    return LAYERS.index(parts[1])


def upward_imports(root: Path) -> list[str]:
    """``file:line imports module`` for each import of a higher layer than the file's own."""
    bad = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root.parent)
        module = ".".join(rel.with_suffix("").parts)
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        own = layer_of(module.removesuffix(".__init__"))
        if own is None:
            continue
        for line, target in imported_modules(path, package.removesuffix(".__init__")):
            theirs = layer_of(target)
            if theirs is not None and theirs > own:
                bad.append(f"{rel}:{line} imports {target}")
    return bad


def test_the_core_is_the_layers() -> None:
    folders = {p.name for p in CORE.iterdir() if p.is_dir() and not p.name.startswith("__")}
    assert folders == {*LAYERS, "testing"}
    assert [p.name for p in CORE.glob("*.py")] == ["__init__.py"]


def test_no_layer_imports_a_higher_one() -> None:
    assert upward_imports(CORE) == []


def test_the_walk_finds_a_planted_upward_import(tmp_path: Path) -> None:
    core = tmp_path / "sia_core"
    (core / "machinery").mkdir(parents=True)
    (core / "machinery" / "__init__.py").write_text("")
    (core / "machinery" / "ok.py").write_text("from sia_core.contracts.records import Item\n")
    (core / "machinery" / "planted.py").write_text(
        "from ..loop import Loop\n\ndef later():\n    from sia_core.surface import cli\n"
    )
    assert upward_imports(core) == [
        "sia_core/machinery/planted.py:1 imports sia_core.loop.Loop",
        "sia_core/machinery/planted.py:4 imports sia_core.surface.cli",
    ]


def test_nothing_in_the_repo_imports_an_old_module_path() -> None:
    sources = [
        p
        for folder in ("sia_core", "plugins", "tasks", "examples", "tests", "benchmarks")
        for p in (REPO / folder).rglob("*.py")
        if ".venv" not in p.parts
    ]
    assert len(sources) > 100
    old = {
        f"{p.relative_to(REPO)}:{line} {m}"
        for p in sources
        for line, m in imported_modules(p, "")
        if m in MOVED or m.rpartition(".")[0] in MOVED
    }
    assert old == set()


def test_an_old_module_path_still_imports_the_same_module() -> None:
    import importlib
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        old = importlib.import_module("sia_core.records")
    from sia_core.contracts import records

    assert old is records and records.__spec__.name == "sia_core.contracts.records"
    assert any("sia_core.contracts.records" in str(w.message) for w in caught)
