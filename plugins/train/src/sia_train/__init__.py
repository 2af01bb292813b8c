"""sia's training core: the RL objective interface shared by the objective plugins.

Importing this package never imports torch; see :mod:`sia_train.objective`. The names below are
imported on first use, so the plugin's entry point (``sia_train.plugin``) stays light.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .objective import ClippedPolicyObjective, Group, Objective, Rollout

__all__ = ["ClippedPolicyObjective", "Group", "Objective", "Rollout"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(import_module(".objective", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
