"""What the hostile-scaffold tests share: sandboxes, a task-and-run layout, runners, a process scan.

Every case runs through sia's real runner (``run_items`` with a real :class:`Gateway` in front of
the scripted task model) or the real :class:`Loop`, once per sandbox. A case either asserts that
the sandbox contains it, or, where the ``process`` sandbox cannot, asserts the breach itself
(``NOT CONTAINED``), so a change in either direction fails the test. docs/security.md is the table.
"""

from __future__ import annotations

import json
import os
import signal
import string
import textwrap
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from sia_core.contracts.config import RunConfig
from sia_core.contracts.records import Item, ItemResult
from sia_core.contracts.sandbox import Limits, Sandbox
from sia_core.services.gateway import Gateway
from sia_core.services.process_sandbox import ProcessSandbox
from sia_core.services.runner import RunSpec, run_items
from sia_core.surface.builtin.scripted import ScriptedTaskModel
from sia_sandbox_bwrap.sandbox import BwrapSandbox

ROOT = os.geteuid() == 0
BWRAP_OK, BWRAP_WHY = BwrapSandbox().available()

#: one parameter per sandbox; bwrap is skipped with its reason where it cannot run (never in CI)
SANDBOXES = [
    pytest.param("process", id="process"),
    pytest.param(
        "bwrap",
        id="bwrap",
        marks=pytest.mark.skipif(
            not BWRAP_OK and not os.environ.get("CI"), reason=f"bwrap unavailable: {BWRAP_WHY}"
        ),
    ),
]

#: the items the runner-level cases solve; the labels are what a cheat would have to find
ITEMS = [Item(id=f"hostile-{k}", input=f"What is {k} + {k}?", split="dev") for k in range(2)]
LABELS = {item.id: f"SECRET-LABEL-{k}" for k, item in enumerate(ITEMS)}


def make_sandbox(name: str) -> Sandbox:
    return BwrapSandbox() if name == "bwrap" else ProcessSandbox()


def source(template: str, **values: Any) -> str:
    """A scaffold from a ``$name`` template (``repr`` of each value is substituted)."""
    return string.Template(textwrap.dedent(template)).substitute(
        {k: repr(v) for k, v in values.items()}
    )


def scripted_config(
    tmp_path: Path,
    task_dir: Path,
    sandbox: str,
    scaffolds: Sequence[str],
    *,
    max_gen: int,
    parallel: int = 1,
) -> RunConfig:
    """A scripted-backend run of ``task_dir`` whose generation k runs ``scaffolds[k-1]``."""
    script = {
        "meta": {"scaffold": {"text": scaffolds[0]}},
        "feedback": {
            str(k): {"lever": "harness", "scaffold": {"text": text}, "rationale": f"gen {k}"}
            for k, text in enumerate(scaffolds[1:], start=2)
        },
        "task_model": {"name": "scripted-echo"},
    }
    path = tmp_path / "script.json"
    path.write_text(json.dumps(script))
    return RunConfig(
        task=task_dir.name,
        task_dir=str(task_dir),
        backend="scripted",
        backend_settings={"script": str(path)},
        sandbox=sandbox,
        max_gen=max_gen,
        test_eval="none",
        item_timeout_s=120,  # a hang guard: these scaffolds answer at once
        parallel=parallel,
    )


class Arena:
    """A task folder and a run folder laid out as sia lays them out, under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.task = root / "task"
        self.public = self.task / "data/public"
        self.labels = self.task / "data/private/dev_labels.jsonl"
        self.scorer = self.task / "scorer.py"
        self.run = root / "run"
        self.events = self.run / "events.jsonl"
        self.other_gen = self.run / "gen_1"
        self.gen = self.run / "gen_2"
        self.work = self.gen / "work"
        self.public.mkdir(parents=True)
        self.labels.parent.mkdir(parents=True)
        self.other_gen.mkdir(parents=True)
        self.gen.mkdir(parents=True)
        (self.public / "task.md").write_text("Add two numbers.\n")
        (self.public / "dev.jsonl").write_text(
            "".join(json.dumps({"id": i.id, "input": i.input}) + "\n" for i in ITEMS)
        )
        self.labels.write_text(
            "".join(json.dumps({"id": k, "label": v}) + "\n" for k, v in LABELS.items())
        )
        self.scorer.write_text("def score_item(answer, label, item):\n    return answer == label\n")
        self.events.write_text('{"type": "run_started"}\n')
        (self.other_gen / "target_agent.py").write_text("def solve(item, ctx):\n    return 0\n")

    def run_scaffold(
        self,
        sandbox: str,
        scaffold: str,
        *,
        items: Sequence[Item] = ITEMS,
        limits: Limits | None = None,
        item_timeout_s: float = 10.0,
        setup_timeout_s: float = 20.0,
        **spec_options: Any,
    ) -> tuple[list[ItemResult], list[Any]]:
        """Run ``scaffold`` as generation 2 through the real runner and gateway, one worker."""
        path = self.gen / "target_agent.py"
        path.write_text(scaffold)
        spec = RunSpec(
            scaffold_path=path,
            work_dir=self.work,
            public_dir=self.public,
            parallel=1,
            item_timeout_s=item_timeout_s,
            setup_timeout_s=setup_timeout_s,
            limits=limits or Limits(wall_s=60, memory_mb=1024, max_procs=64),
            **spec_options,
        )
        model = ScriptedTaskModel({"rules": [{"match": "hello", "reply": "hi from the gateway"}]})
        with Gateway(model) as gateway:
            gateway.begin(2)
            results = run_items(spec, items, sandbox=make_sandbox(sandbox), gateway=gateway)
            return results, gateway.calls()


def score(results: Sequence[ItemResult]) -> float:
    """Accuracy against the private labels, divided by all items (as sia scores)."""
    return sum(r.answer == LABELS[r.item_id] for r in results) / len(LABELS)


def notes(result: ItemResult) -> list[Any]:
    return [s.content for s in result.trajectory if s.kind == "note"]


# --------------------------------------------------------------------------------------------
# processes
# --------------------------------------------------------------------------------------------


def _table() -> dict[int, tuple[int, str, int]]:
    """``pid -> (ppid, state, real uid)`` for every process in ``/proc``."""
    table = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            stat = Path(f"/proc/{name}/stat").read_text()
            status = Path(f"/proc/{name}/status").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        uid = int(status.split("\nUid:")[1].split()[0])
        table[int(name)] = (int(fields[1]), fields[0], uid)
    return table


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return b""


def running(marker: str) -> dict[int, str]:
    """Live processes that belong to a test: descendants of this process, or anything whose
    command line, environment or working directory mentions ``marker`` (the test's tmp dir)."""
    table = _table()
    me = os.getpid()
    own = {me, 0, 1}
    pid = me
    while pid in table and pid not in (0, 1):
        pid = table[pid][0]
        own.add(pid)
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    descendants, todo = set(), list(children.get(me, ()))
    while todo:
        pid = todo.pop()
        if pid not in descendants:
            descendants.add(pid)
            todo.extend(children.get(pid, ()))
    found = {}
    key = marker.encode()
    for pid, (_, state, _) in table.items():
        if pid in own or state in "ZX":
            continue
        cmdline = _read(f"/proc/{pid}/cmdline")
        try:
            cwd = os.readlink(f"/proc/{pid}/cwd").encode()
        except OSError:
            cwd = b""
        if pid in descendants or any(
            key in x for x in (cmdline, cwd, _read(f"/proc/{pid}/environ"))
        ):
            found[pid] = cmdline.replace(b"\0", b" ").decode("utf-8", "replace")[:200]
    return found


def still_running(marker: str, grace_s: float = 10.0) -> dict[int, str]:
    """:func:`running` once what is dying has had ``grace_s`` to go: a process killed through a
    parent-death signal chain leaves /proc a moment later, longer on a busy machine."""
    deadline = time.monotonic() + grace_s
    found = running(marker)
    while found and time.monotonic() < deadline:
        time.sleep(0.05)
        found = running(marker)
    return found


def kill_all(pids: Sequence[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
