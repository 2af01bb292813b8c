"""sia-backend-claude: Claude as Meta-Agent, Feedback-Agent and task model.

Importing this package imports nothing heavy; the ``anthropic`` SDK is imported when the backend
is created (see :mod:`sia_backend_claude.backend`).
"""

from __future__ import annotations

__version__ = "0.1.0"
