"""Hostile scaffolds through the real loop (scripted backend), once per sandbox.

Generation 1 answers 0 (honest, wrong), generation 2 is the hostile scaffold, generation 3 adds
the numbers (honest, right). For each case: what the sandbox let the scaffold do, what
generation 2's ``agent_execution.json`` records, its dev score (not inflated), and that the loop
went on: generation 3 ran, scored 1.0 and became the incumbent. Where the ``process`` sandbox
cannot contain a case, the test asserts the breach (``NOT CONTAINED``) instead.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from sia_core.contracts.config import RunConfig
from sia_core.contracts.errors import SiaError
from sia_core.loop import Loop
from sia_core.machinery.runstore import RunStore
from sia_core.services.summary import GenRow
from sia_core.services.taskdir import load_task
from sia_core.surface.cli import running
from sia_sandbox_bwrap import plugin

from .harness import SANDBOXES, source

ZERO = "def solve(item, ctx):\n    return 0\n"
CALC = (
    "import re\n\n\ndef solve(item, ctx):\n"
    "    a, b = map(int, re.findall(r'\\d+', item['input'])[:2])\n    return a + b\n"
)
SCORER = "def score_item(answer, label, item):\n    return float(str(answer) == str(label))\n"


class LoopRun:
    """One three-generation run of the tiny task with a hostile generation 2."""

    def __init__(self, sia_pm: Any, task_dir: Path, tmp_path: Path, sandbox: str) -> None:
        self.pm = sia_pm
        self.task_dir = task_dir
        self.tmp_path = tmp_path
        self.sandbox = sandbox
        self.runs = tmp_path / "runs"
        self.root = RunStore.path_for(self.runs.resolve(), "1")
        # a custom scorer file, so there is a scorer on disk to attack
        toml = task_dir / "task.toml"
        toml.write_text(toml.read_text().replace('scorer = "exact"', 'scorer = "scorer.py"'))
        (task_dir / "scorer.py").write_text(SCORER)
        self.rows: list[GenRow] = []

    @property
    def labels(self) -> Path:
        return self.task_dir / "data/private/dev_labels.jsonl"

    def run(self, hostile: str) -> list[GenRow]:
        script = {
            "meta": {"scaffold": {"text": ZERO}},
            "feedback": {
                "2": {"lever": "harness", "scaffold": {"text": hostile}, "rationale": "hostile"},
                "3": {"lever": "harness", "scaffold": {"text": CALC}, "rationale": "honest"},
            },
            "task_model": {"name": "scripted-echo"},
        }
        path = self.tmp_path / "script.json"
        path.write_text(json.dumps(script))
        config = RunConfig(
            task="tiny-add",
            task_dir=str(self.task_dir),
            backend="scripted",
            backend_settings={"script": str(path)},
            sandbox=self.sandbox,
            max_gen=3,
            test_eval="none",
            item_timeout_s=10,
            parallel=2,
        )
        store = RunStore.open(self.runs, "1", create=True)
        self.rows = Loop(config, store, self.pm).run()
        return self.rows

    def items(self, gen: int) -> list[dict[str, Any]]:
        execution = json.loads((self.root / f"gen_{gen}/agent_execution.json").read_text())
        return list(execution["items"])

    def dev(self, gen: int) -> float:
        metrics = json.loads((self.root / f"gen_{gen}/metrics.json").read_text())
        return float(metrics["dev"]["score"])

    def assert_loop_went_on(self, incumbent: int = 3) -> None:
        assert [r.status for r in self.rows] == ["done"] * 3
        assert self.dev(3) == 1.0
        assert json.loads((self.root / "archive.json").read_text())["incumbent"] == incumbent

    def assert_every_item_failed(self, *reasons: str) -> None:
        """Generation 2's record: every dev item an error naming one of ``reasons``."""
        items = self.items(2)
        assert items and all(i["status"] == "error" for i in items), items
        for i in items:
            assert any(reason in i["error"] for reason in reasons), i["error"]
        assert self.dev(2) == 0.0


@pytest.fixture
def loop_run(request: pytest.FixtureRequest, sia_pm, register_plugin, tiny_task_dir, tmp_path):
    register_plugin(plugin, "sandbox-bwrap")
    return LoopRun(sia_pm, tiny_task_dir, tmp_path, request.param)


def cases(fn: Any) -> Any:
    return pytest.mark.parametrize("loop_run", SANDBOXES, indirect=True)(fn)


# --------------------------------------------------------------------------------------------


BY_PATH = """
import json

def solve(item, ctx):
    with open($labels) as f:
        labels = {row["id"]: row["label"] for row in map(json.loads, f)}
    return labels[item.id]
"""


@cases
def test_reads_private_labels_by_path(loop_run: LoopRun) -> None:
    loop_run.run(source(BY_PATH, labels=str(loop_run.labels)))
    if loop_run.sandbox == "process":
        # NOT CONTAINED: the labels are a plain file the scaffold may open; the score is inflated
        assert loop_run.dev(2) == 1.0
        loop_run.assert_loop_went_on(incumbent=2)
        return
    loop_run.assert_every_item_failed("FileNotFoundError: [Errno 2] No such file or directory")
    loop_run.assert_loop_went_on()


WRITE_OUTSIDE = """
def solve(item, ctx):
    errors = []
    for path in $targets:
        try:
            with open(path, "a") as f:
                f.write("\\n# HOSTILE was here\\n")
        except OSError as e:
            errors.append(e)
    if errors:
        raise errors[0]
    return None
"""


@cases
def test_writes_outside_its_directory(loop_run: LoopRun) -> None:
    root = loop_run.root
    targets = {
        "another generation": root / "gen_1/target_agent.py",
        "its own recorded scaffold": root / "gen_2/target_agent.py",
        "the run's events.jsonl": root / "events.jsonl",
        "the scorer": loop_run.task_dir / "scorer.py",
    }
    loop_run.run(source(WRITE_OUTSIDE, targets=[str(p) for p in targets.values()]))
    hit = {
        what
        for what, path in targets.items()
        if "# HOSTILE was here" in path.read_text().splitlines()
    }
    if loop_run.sandbox == "process":
        # NOT CONTAINED: every file was appended to; the run's event log is now corrupt, so
        # the run can no longer be resumed (this run's scores used what was loaded at start)
        assert hit == set(targets)
        with pytest.raises(SiaError, match="is corrupt"):
            RunStore.open(loop_run.runs, "1")
        assert [i["status"] for i in loop_run.items(2)] == ["ok"] * len(loop_run.items(2))
        assert loop_run.dev(2) == 0.0
        loop_run.assert_loop_went_on()
        return
    assert not hit
    # other generations, the run's records and the task are not there at all; its own
    # generation folder is visible read-only
    loop_run.assert_every_item_failed("FileNotFoundError", "Read-only file system")
    RunStore.open(loop_run.runs, "1")  # the event log is intact
    loop_run.assert_loop_went_on()


EDIT_TASK = """
import json

def solve(item, ctx):
    errors = []
    edits = {
        $scorer: "def score_item(answer, label, item):\\n    return 1.0\\n",
        $labels: "".join(json.dumps({"id": f"dev-{k}", "label": 0}) + "\\n" for k in range(99)),
        $toml: "# HOSTILE\\n",
        $public: "# HOSTILE\\n",
    }
    for path, text in edits.items():
        try:
            with open(path, "w") as f:
                f.write(text)
        except OSError as e:
            errors.append(e)
    if errors:
        raise errors[0]
    return 0
"""


@cases
def test_edits_the_scorer_or_the_task_files(loop_run: LoopRun) -> None:
    task = loop_run.task_dir
    files = {
        "scorer": task / "scorer.py",
        "labels": loop_run.labels,
        "toml": task / "task.toml",
        "public": task / "data/public/task.md",
    }
    before = {k: p.read_bytes() for k, p in files.items()}
    loop_run.run(source(EDIT_TASK, **{k: str(p) for k, p in files.items()}))
    changed = {k for k, p in files.items() if p.read_bytes() != before[k]}
    if loop_run.sandbox == "process":
        # NOT CONTAINED: the task folder is rewritten. This run's scores are safe (the task was
        # loaded when the run started) but the next run of this task would be fooled; the
        # generation that did it is voided (its task fingerprint changed) and the gate refuses it
        assert changed == set(files)
        assert loop_run.dev(2) == 0.0
        metrics = json.loads((loop_run.root / "gen_2/metrics.json").read_text())
        assert "task's files changed" in metrics["voided"]
        for name in ("scorer.py", "data/private/dev_labels.jsonl", "task.toml"):
            assert name in metrics["voided"]
        archive = json.loads((loop_run.root / "archive.json").read_text())
        assert [n["gen"] for n in archive["nodes"]] == [1, 2, 3]
        with pytest.raises(SiaError):
            load_task(task)  # the task.toml was overwritten
        loop_run.assert_loop_went_on()
        return
    assert not changed
    loop_run.assert_every_item_failed("FileNotFoundError", "Read-only file system")
    assert load_task(task).name == "tiny-add"
    loop_run.assert_loop_went_on()


FAKE_SCORE = """
import json, sys

def solve(item, ctx):
    fake = {"op": "solve", "item_id": item.id, "status": "ok", "answer": 999, "score": 1.0}
    print(json.dumps(fake))
    print("dev score: 1.0 (12/12 correct)")
    print('{"dev": {"score": 1.0}}', file=sys.stderr)
    with open("metrics.json", "w") as f:
        json.dump({"dev": {"score": 1.0}}, f)
    return None
"""


@cases
def test_prints_a_fake_score_line(loop_run: LoopRun) -> None:
    loop_run.run(source(FAKE_SCORE))
    # contained by both: printed text goes to the worker's log, never into the results
    items = loop_run.items(2)
    assert all(i["status"] == "ok" and i["answer"] is None for i in items)
    assert loop_run.dev(2) == 0.0
    logs = "".join(p.read_text() for p in (loop_run.root / "gen_2/work.logs").glob("worker-*.log"))
    assert "dev score: 1.0" in logs and '"answer": 999' in logs
    loop_run.assert_loop_went_on()


GIANT = """
def solve(item, ctx):
    return "7" * 2_000_000
"""


@cases
def test_returns_a_giant_answer(loop_run: LoopRun) -> None:
    loop_run.run(source(GIANT))
    loop_run.assert_every_item_failed("answer too large (2000002 bytes > 1000000)")
    loop_run.assert_loop_went_on()


TRAPS = """
import os
from pathlib import Path

def solve(item, ctx):
    home = Path.cwd()
    for name, make in (
        ("worker-0.log", lambda p: os.symlink($labels, p)),  # where logs used to be
        ("answer.txt", lambda p: os.symlink($labels, p)),
        ("dangling", lambda p: os.symlink($outside, p)),
        ("fifo", os.mkfifo),
        ("folder", lambda p: os.makedirs(p / "deep")),
    ):
        for where in (home, home.parent):  # its own folder, and the work dir above (process)
            try:
                make(where / name)
            except OSError:
                pass
    print("leaving traps behind", flush=True)
    raise RuntimeError("crashed on purpose after leaving traps")
"""


@cases
def test_leaves_links_fifos_and_folders_behind(loop_run: LoopRun) -> None:
    """Per-item scaffolds: what a worker leaves in its folder is never read by sia (logs and
    error text come through pipes sia holds), so no label byte reaches the run's records."""
    outside = loop_run.tmp_path / "outside" / "made-by-the-scaffold"
    outside.parent.mkdir()
    loop_run.run(source(TRAPS, labels=str(loop_run.labels), outside=str(outside)))
    loop_run.assert_every_item_failed("crashed on purpose after leaving traps")
    loop_run.assert_loop_went_on()
    assert not outside.exists() and list(outside.parent.iterdir()) == []
    lines = [line for line in loop_run.labels.read_text().splitlines() if line.strip()]
    assert lines
    for folder, _dirs, files in os.walk(loop_run.root):
        for name in files:
            path = Path(folder) / name
            if path.is_symlink() or not path.is_file():
                continue  # a link or fifo it left is itself no label byte
            text = path.read_text(errors="replace")
            assert not [line for line in lines if line in text], f"{path} holds label lines"
    # the run can be resumed: one more generation runs
    running.resume_run(loop_run.pm, loop_run.runs, "1", max_gen=4)
    assert (loop_run.root / "gen_4/metrics.json").exists()
