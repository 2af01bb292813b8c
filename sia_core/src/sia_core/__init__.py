"""sia: self-improving AI. The core, in layers (each imports only from the ones before it):

- ``contracts``: what plugins implement and exchange (hookspecs, records, events, settings,
  errors, the backend, sandbox and training protocols)
- ``machinery``: plugin manager, run folder, run state, cost ledger, OS plumbing
- ``services``: task folders, the model gateway, the item runner, the tool-using agents
- ``loop``: one generation after another (propose, train, run, score, gate)
- ``surface``: the ``sia`` CLI and the built-in plugins

Plugins mark their hook implementations with :data:`hookimpl`::

    from sia_core import hookimpl
    from sia_core.contracts.records import BackendSpec

    @hookimpl
    def sia_backends():
        yield BackendSpec(name="mine", factory="my_pkg.backend:MyBackend")
"""

from __future__ import annotations

import importlib
import importlib.machinery
import sys
import warnings
from collections.abc import Sequence
from types import ModuleType
from typing import TYPE_CHECKING, cast

import pluggy

if TYPE_CHECKING:
    from importlib.abc import Loader

__version__ = "0.1.0"

PROJECT = "sia"

#: the core's layers, lowest first: a module imports only from its own layer and those before it
#: (tests/core/test_layers.py walks every import; ``testing`` is test support, outside the layers)
LAYERS = ("contracts", "machinery", "services", "loop", "surface")

#: decorator marking a plugin's implementation of a ``sia_*`` hook (it returns the function
#: unchanged, with its type: ``@hookimpl`` or ``@hookimpl(tryfirst=True)``)
hookimpl = pluggy.HookimplMarker(PROJECT)

#: module paths of sia 0.1's flat layout -> their home now; the old paths still import (the same
#: module object) with a DeprecationWarning, so plugins written against them keep working
MOVED = {
    "sia_core.hookspecs": "sia_core.contracts.hookspecs",
    "sia_core.records": "sia_core.contracts.records",
    "sia_core.errors": "sia_core.contracts.errors",
    "sia_core.backend": "sia_core.contracts.backend",
    "sia_core.sandbox": "sia_core.contracts.sandbox",
    "sia_core.training": "sia_core.contracts.training",
    "sia_core.plugins": "sia_core.machinery.plugins",
    "sia_core.runstore": "sia_core.machinery.runstore",
    "sia_core.fs": "sia_core.machinery.fs",
    "sia_core.ledger": "sia_core.machinery.ledger",
    "sia_core.canary": "sia_core.services.canary",
    "sia_core.untrusted": "sia_core.services.untrusted",
    "sia_core.taskdir": "sia_core.services.taskdir",
    "sia_core.params": "sia_core.services.taskdir.params",
    "sia_core.gateway": "sia_core.services.gateway",
    "sia_core.runner": "sia_core.services.runner",
    "sia_core.agent": "sia_core.services.agents",
    "sia_core.policy": "sia_core.loop.policy",
    "sia_core.runs": "sia_core.surface.cli.running",
    "sia_core.cli": "sia_core.surface.cli",
    "sia_core.builtin": "sia_core.surface.builtin",
    "sia_core.scripted": "sia_core.surface.builtin.scripted",
}


class _MovedModules:  # a meta path finder and its loader: find_spec, create_module, exec_module
    """Serves an old module path as the module at its new home (the same object)."""

    def __init__(self) -> None:
        self._own_spec: dict[str, importlib.machinery.ModuleSpec | None] = {}

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        return (
            importlib.machinery.ModuleSpec(fullname, cast("Loader", self))
            if fullname in MOVED
            else None
        )

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        warnings.warn(
            f"{spec.name} moved to {MOVED[spec.name]}; import it from there",
            DeprecationWarning,
            stacklevel=2,
        )
        module = importlib.import_module(MOVED[spec.name])
        self._own_spec[module.__name__] = module.__spec__
        return module

    def exec_module(self, module: ModuleType) -> None:
        # the import system stamped the old path's spec on the module: give it back its own
        module.__spec__ = self._own_spec.pop(module.__name__, module.__spec__)


if not any(isinstance(f, _MovedModules) for f in sys.meta_path):
    sys.meta_path.append(_MovedModules())

__all__ = ["LAYERS", "PROJECT", "__version__", "hookimpl"]
