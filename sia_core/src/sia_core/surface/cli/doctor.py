"""``sia doctor``: what this environment can run, one line each, with the fix for what it cannot.
(Training libraries are not listed here: each executor's ``available()`` names what it lacks.)

Nothing heavy is imported: libraries are looked up with :func:`importlib.util.find_spec`, and
each sandbox and executor answers its own ``available()``.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Iterator

import click

from sia_core.machinery.plugins import SiaPluginManager, resolve

#: (what, the modules it needs, how to get them)
LIBRARIES = (
    (
        "local model server (llama-cpp-python)",
        ("llama_cpp",),
        "scripts/setup, or: CMAKE_ARGS=-DGGML_NATIVE=OFF pip install llama-cpp-python",
    ),
    ("MLflow tracker", ("mlflow",), "pip install 'sia-trackers[mlflow]'"),
    ("W&B tracker", ("wandb",), "pip install 'sia-trackers[wandb]'"),
    ("report figures (matplotlib)", ("matplotlib",), "pip install matplotlib"),
    ("Ray runner (ray)", ("ray", "sia_runner_ray"), "pip install sia-runner-ray"),
    (
        "OpenHands backend (openhands-sdk)",
        ("openhands",),
        "it needs Python >= 3.12: scripts/setup-py312 builds .venv312 with it "
        "(run `.venv312/bin/sia --backend openhands ...`)",
    ),
)


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def checks(pm: SiaPluginManager) -> Iterator[tuple[bool, str]]:
    """``(ok, line)`` per thing checked."""
    yield True, f"python {sys.version.split()[0]} at {sys.prefix}"
    for info in pm.plugin_infos():
        if info.error:
            yield (
                False,
                f"plugin {info.name}: failed to load ({info.error}); `sia plugins` says more",
            )
    for kind, registry in (("sandbox", pm.sandboxes()), ("executor", pm.executors())):
        for name in registry.names():
            try:
                ok, why = resolve(registry.get(name).factory)().available()
            except Exception as exc:  # a plugin's check must not take the doctor down
                ok, why = False, f"{type(exc).__name__}: {exc}"
            yield bool(ok), f"{kind} {name}: {why}"
    for runner in pm.runners():
        yield True, f"runner {runner.name}: {runner.description or runner.factory}"
    if _installed("sia_backend_local"):
        from sia_backend_local.smollm2 import smollm2_gguf

        try:
            yield True, f"local task model: {smollm2_gguf()}"
        except Exception as exc:
            yield False, f"local task model: {exc}"
    for what, modules, fix in LIBRARIES:
        missing = [m for m in modules if not _installed(m)]
        if not missing:
            yield True, f"{what}: installed"
        else:
            yield False, f"{what}: {', '.join(missing)} not installed" + (f"; {fix}" if fix else "")
    for spec in pm.backends():
        keys = list(spec.key_env_vars)
        if keys:
            unset = [k for k in keys if not os.environ.get(k)]
            state = "ready" if not unset else f"set {', '.join(unset)} to use it"
            yield not unset, f"backend {spec.name}: {state}"


def doctor(pm: SiaPluginManager) -> None:
    """Print one line per check: ``ok`` or ``--`` (with what to do)."""
    for ok, line in checks(pm):
        click.echo(f"{'ok' if ok else '--'}  {line}")
