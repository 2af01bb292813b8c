"""sia's training core: the RL objective interface shared by the objective plugins.

Importing this package never imports torch; see :mod:`sia_train.objective`.
"""

from __future__ import annotations

from .objective import ClippedPolicyObjective, Group, Objective, Rollout

__all__ = ["ClippedPolicyObjective", "Group", "Objective", "Rollout"]
