"""A test plugin: SIGKILLs its own process when it sees the event named in SIA_TEST_KILL_AT.

SIA_TEST_KILL_AT = "TYPE:GEN[:STEP_OR_DONE]", e.g. "step_finished:2:score" or "item_finished:2:5".
"""

import os
import signal

from sia_core import hookimpl


@hookimpl
def sia_on_event(event):
    spec = os.environ.get("SIA_TEST_KILL_AT", "")
    if not spec:
        return
    parts = spec.split(":")
    if event.type != parts[0] or str(event.gen) != parts[1]:
        return
    if len(parts) > 2:
        key = event.data.get("step", event.data.get("done"))
        if str(key) != parts[2]:
            return
    os.kill(os.getpid(), signal.SIGKILL)
