"""A test plugin: fills the disk when it sees the event named in SIA_TEST_FILL_AT.

SIA_TEST_FILL_AT = "TYPE:GEN[:STEP_OR_DONE]" (as the killer plugin's), SIA_TEST_FILL_PATH = the
file to grow until the file system holding it says ENOSPC: another process filling the disk.
"""

import errno
import os

from sia_core import hookimpl


def _fill(path):
    with open(path, "ab", buffering=0) as f:
        for size in (1 << 20, 1 << 16, 1 << 12, 1):
            try:
                while True:
                    f.write(b"\0" * size)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise


@hookimpl
def sia_on_event(event):
    spec = os.environ.get("SIA_TEST_FILL_AT", "")
    if not spec:
        return
    parts = spec.split(":")
    if event.type != parts[0] or str(event.gen) != parts[1]:
        return
    if len(parts) > 2 and str(event.data.get("step", event.data.get("done"))) != parts[2]:
        return
    _fill(os.environ["SIA_TEST_FILL_PATH"])
    os.environ["SIA_TEST_FILL_AT"] = ""  # once
