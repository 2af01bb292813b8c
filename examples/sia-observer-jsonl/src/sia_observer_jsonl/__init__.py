"""A complete third-party sia plugin in one module.

Installed with pip, it is found through its ``sia`` entry point (see pyproject.toml). When
``SIA_EVENTS_JSONL`` names a file, every event of every run is appended to it as one JSON line;
otherwise it does nothing.
"""

from __future__ import annotations

import json
import os

from sia_core import hookimpl
from sia_core.contracts.records import Event, to_dict


@hookimpl
def sia_on_event(event: Event) -> None:
    path = os.environ.get("SIA_EVENTS_JSONL")
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(to_dict(event), ensure_ascii=False) + "\n")
