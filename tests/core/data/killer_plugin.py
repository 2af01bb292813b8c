"""A test plugin: SIGKILLs its own process when it sees the event named in SIA_TEST_KILL_AT.

SIA_TEST_KILL_AT = "TYPE:GEN[:STEP_OR_DONE]", e.g. "step_finished:2:score" or "item_finished:2:5".
Before dying it writes the pids of its child processes to SIA_TEST_KILL_DUMP, if set, so a test
can check that none of them outlived it.
"""

import os
import signal
from pathlib import Path

from sia_core import hookimpl


def _children(pid):
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            child = int(stat.parent.name)
            cmdline = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            out.append(f"{child} {cmdline}")
    return out


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
    dump = os.environ.get("SIA_TEST_KILL_DUMP")
    if dump:
        Path(dump).write_text("\n".join(_children(os.getpid())))
    os.kill(os.getpid(), signal.SIGKILL)
