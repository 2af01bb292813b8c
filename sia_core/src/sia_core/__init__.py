"""sia: self-improving AI. The core: hookspecs, plugin manager, records, loop, gateway, CLI.

Plugins mark their hook implementations with :data:`hookimpl`::

    from sia_core import hookimpl
    from sia_core.records import BackendSpec

    @hookimpl
    def sia_backends():
        yield BackendSpec(name="mine", factory="my_pkg.backend:MyBackend")
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import pluggy

__version__ = "0.1.0"

PROJECT = "sia"
_F = TypeVar("_F", bound=Callable[..., object])

#: decorator marking a plugin's implementation of a ``sia_*`` hook
hookimpl: Callable[..., object] = pluggy.HookimplMarker(PROJECT)

__all__ = ["PROJECT", "__version__", "hookimpl"]
