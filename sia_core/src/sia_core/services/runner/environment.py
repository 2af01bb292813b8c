"""What every scaffold process is given, and what is taken back once it is gone.

The scaffold's whole environment (nothing from the host but ``PATH`` and ``LANG``; the gateway's
URL and the worker's key; thread pools capped to its share of the cores), and the revocation of
a dead worker's gateway key.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from sia_core.services.runner.spec import Gateway, RunSpec


def _revoke(gateway: Gateway | None, token: str) -> None:
    """A dead worker's gateway token stops working (and stops taking memory in the gateway)."""
    revoke = getattr(gateway, "revoke", None)
    if token and callable(revoke):
        revoke(token)


_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS")


def _scaffold_env(spec: RunSpec, home: Path, gateway: Gateway | None, token: str) -> dict[str, str]:
    """The scaffold's whole environment: nothing from the host but PATH and LANG."""
    bin_dir = str(Path(sys.executable).parent)
    path = os.environ.get("PATH") or os.defpath
    env = {
        "PATH": f"{bin_dir}{os.pathsep}{path}",
        "HOME": str(home),
        "LANG": os.environ.get("LANG") or "C.UTF-8",
        "SIA_MODEL": spec.model_name,
        # workers share the machine's cores: without this, every worker's BLAS/OpenMP pool
        # takes all of them and a 0.3 s model fit becomes 18 s
        **dict.fromkeys(_THREAD_VARS, str(max(1, (os.cpu_count() or 1) // max(1, spec.parallel)))),
        "PYTHONDONTWRITEBYTECODE": "1",  # no __pycache__ in generation folders
    }
    if gateway is not None:
        env.update(
            OPENAI_BASE_URL=gateway.url,
            OPENAI_API_BASE=gateway.url,
            SIA_GATEWAY_URL=gateway.url,
            OPENAI_API_KEY=token,
            SIA_GATEWAY_TOKEN=token,
        )
    env.update({str(k): str(v) for k, v in spec.env.items()})
    return env
