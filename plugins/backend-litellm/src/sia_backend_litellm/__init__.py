"""sia-backend-litellm: any litellm model as Meta/Feedback agent and task model.

Importing this package imports nothing heavy; litellm is imported when first used, with
``LITELLM_LOCAL_MODEL_COST_MAP=True`` so start-up never touches the network.
"""

from __future__ import annotations

__version__ = "0.1.0"
