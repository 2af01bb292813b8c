"""Hostile program-style scaffolds (SIA's ``evaluate.py`` + ``submission.csv``) through the real
loop, once per sandbox.

Generation 1 writes an honest, all-wrong submission; generation 2 leaves something hostile where
an output file should be (a link to the private labels, to a host path, a dangling link, a
folder, a fifo, a huge file, a file swapped while it is read) or where sia or the scorer writes
(``results.json``, the log). For each: generation 2 scores what an empty submission scores, no
label byte reaches any file of the run folder, nothing is created outside it, the run finishes,
and ``sia resume`` runs one more generation. The attacks only leave paths behind, so both
sandboxes must hold (the ``process`` sandbox lets a scaffold *read* the labels, which the
per-item cases in test_hostile_loop.py show; that is not what is tested here).
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from sia_core.loop import Loop
from sia_core.machinery.runstore import RunStore
from sia_core.surface.cli import running
from sia_sandbox_bwrap import plugin

from .harness import SANDBOXES, scripted_config, source

N_ITEMS = 24
LABELS = {f"q{i:02d}": f"LBL-{i:02d}-{'abcdefghij'[i % 10] * 6}" for i in range(N_ITEMS)}

EVALUATE = """
import argparse, csv, json
from pathlib import Path

parser = argparse.ArgumentParser()
parser.add_argument("--gen-dir", required=True)
gen = Path(parser.parse_args().gen_dir)
truth_file = Path(__file__).resolve().parents[1] / "private" / "answers.csv"
truth = {r["id"]: r["label"] for r in csv.DictReader(truth_file.open())}
got = {}
sub = gen / "submission.csv"
if sub.exists():
    got = {r["id"]: r["label"] for r in csv.DictReader(sub.open())}
items = [
    {"id": i, "status": "missing" if i not in got else ("correct" if got[i] == w else "wrong")}
    for i, w in truth.items()
]
correct = sum(it["status"] == "correct" for it in items)
(gen / "results.json").write_text(json.dumps({"accuracy": correct / len(truth), "items": items}))
"""

HONEST = """
import argparse, csv
from pathlib import Path

parser = argparse.ArgumentParser()
parser.add_argument("--dataset_dir")
parser.add_argument("--working_dir")
args = parser.parse_args()
ids = [r["id"] for r in csv.DictReader(open(Path(args.dataset_dir) / "test.csv"))]
with open(Path(args.working_dir) / "submission.csv", "w") as f:
    f.write("id,label\\n" + "".join(f"{i},{ANSWER}\\n" for i in ids))
"""

HOSTILE = """
import argparse, os, subprocess, sys, time
from pathlib import Path

parser = argparse.ArgumentParser()
parser.add_argument("--dataset_dir")
parser.add_argument("--working_dir")
args = parser.parse_args()
work = Path(args.working_dir)
private = $private
outside = $outside
case = $case
sub = work / "submission.csv"
if case == "link-private":
    os.symlink(private, sub)
elif case == "link-host":
    os.symlink("/etc/passwd", sub)
elif case == "dangling-results":
    os.symlink(outside, work / "results.json")  # the scorer writes results.json ...
    os.symlink(outside + ".csv", sub)  # ... and this points nowhere yet
elif case == "directory":
    (sub / "nested").mkdir(parents=True)
    os.symlink(private, sub / "nested" / "answers.csv")
elif case == "fifo":
    os.mkfifo(sub)
elif case == "huge":
    with open(sub, "wb") as f:
        f.write(b"id,label\\n" + b"x" * (3 * 1024 * 1024))
elif case == "hard-link":
    try:
        os.link(private, sub)
    except OSError:
        pass  # another file system or no access: nothing to see
elif case == "swapped":
    honest = work / "honest.csv"
    honest.write_text("id,label\\n")
    swapper = (
        "import os, time\\n"
        f"while True:\\n"
        f"    try:\\n"
        f"        os.replace({str(honest)!r}, {str(sub)!r}); os.symlink({private!r}, {str(honest)!r})\\n"
        f"        os.replace({str(honest)!r}, {str(sub)!r}); open({str(honest)!r}, 'w').close()\\n"
        f"    except OSError:\\n"
        f"        time.sleep(0.001)\\n"
    )
    subprocess.Popen([sys.executable, "-c", swapper])
    time.sleep(0.5)
elif case == "log-link":
    # the log, where it used to be (in the work dir) and where sia keeps it now (reachable
    # under the process sandbox), replaced by a link to the labels; then a crash, so that an
    # error message with the log's tail is written
    for log in (work / "program.log", work.parent / "work.logs" / "program.log"):
        try:
            if os.path.lexists(log):
                os.unlink(log)
            os.symlink(private, log)
        except OSError:
            pass
    print("crashing on purpose", flush=True)
    sys.exit(3)
elif case == "labels-in-error":
    try:
        text = open(private).read()
    except OSError as e:
        text = f"cannot read the labels: {e}"
    print(text, flush=True)
    raise SystemExit("dying with " + text.replace("\\n", " "))
"""

CASES = [
    "link-private",
    "link-host",
    "dangling-results",
    "directory",
    "fifo",
    "huge",
    "hard-link",
    "swapped",
    "log-link",
    "labels-in-error",
]


def make_task(root: Path) -> Path:
    (root / "data/public").mkdir(parents=True)
    (root / "data/private").mkdir(parents=True)
    (root / "reference").mkdir()
    (root / "data/public/task.md").write_text(
        "# Labels\nWrite submission.csv (id,label) into --working_dir.\n"
    )
    (root / "data/public/test.csv").write_text("id,text\n" + "".join(f"{i},x\n" for i in LABELS))
    (root / "data/private/answers.csv").write_text(
        "id,label\n" + "".join(f"{i},{v}\n" for i, v in LABELS.items())
    )
    (root / "data/public/evaluate.py").write_text(EVALUATE)
    (root / "reference/reference_target_agent.py").write_text(HONEST.replace("ANSWER", "no"))
    (root / "reference/SAMPLE_TASK_DESCRIPTIONS.md").write_text("- a labelling task\n")
    (root / "task.toml").write_text('kind = "program"\n[program]\nmax_output_mb = 1\n')
    return root


def files_below(root: Path) -> list[Path]:
    out = []
    for folder, _dirs, files in os.walk(root):
        out += [Path(folder) / f for f in files]
    return out


def assert_no_label_bytes(run_root: Path, skip: Path | None = None) -> None:
    for path in files_below(run_root):
        if skip is not None and skip in path.parents:
            continue
        info = path.lstat()
        if not stat.S_ISREG(info.st_mode):
            continue  # what the scaffold left as a link/fifo is itself no label byte
        data = path.read_bytes()
        leaked = [v for v in LABELS.values() if v.encode() in data]
        assert not leaked, f"{path} holds private labels {leaked[:3]}"


@pytest.fixture(params=SANDBOXES)
def sandbox(request: pytest.FixtureRequest, register_plugin: Any) -> str:
    register_plugin(plugin, "sandbox-bwrap")
    return str(request.param)


@pytest.mark.parametrize("case", CASES)
def test_hostile_program_outputs(case: str, sandbox: str, sia_pm: Any, tmp_path: Path) -> None:
    task_dir = make_task(tmp_path / "labels-task")
    private = str((task_dir / "data/private/answers.csv").resolve())
    outside = str(tmp_path / "outside" / "created-by-the-scaffold")
    (tmp_path / "outside").mkdir()
    hostile = source(HOSTILE, private=private, outside=outside, case=case)
    honest = [HONEST.replace("ANSWER", "no"), HONEST.replace("ANSWER", "maybe")]
    config = scripted_config(
        tmp_path, task_dir, sandbox, [honest[0], hostile, honest[1]], max_gen=2
    )
    runs_dir = tmp_path / "runs"
    store = RunStore.open(runs_dir, "1", create=True)
    rows = Loop(config, store, sia_pm).run()
    root = RunStore.path_for(runs_dir.resolve(), "1")
    assert [r.status for r in rows] == ["done", "done"]

    metrics = json.loads((root / "gen_2/metrics.json").read_text())
    assert metrics["dev"]["score"] == 0.0, metrics  # what an empty submission scores
    assert json.loads((root / "gen_1/metrics.json").read_text())["dev"]["score"] == 0.0
    execution = json.loads((root / "gen_2/agent_execution.json").read_text())
    program = execution["program"]
    if case == "log-link":
        assert program["status"] == "error" and "exit code 3" in program["error"]
        assert "crashing on purpose" in program["error"]  # the tail came from sia's own pipe
    elif case in ("link-private", "link-host", "directory", "fifo", "huge"):
        assert any(line.startswith("submission.csv") for line in program["outputs"]["refused"])
        assert "submission.csv" not in program["outputs"]["taken"]
    assert not Path(outside).exists() and not Path(outside + ".csv").exists()
    assert sorted(p.name for p in (tmp_path / "outside").iterdir()) == []
    if case == "labels-in-error":
        assert program["status"] == "error"
        if sandbox == "process":
            # NOT CONTAINED: it reads the labels and prints them; its log holds them, but the
            # record a Feedback-Agent reads has them redacted, with a note
            assert (
                "[redacted]" in program["error"] and "label value(s) redacted" in program["error"]
            )
            assert_no_label_bytes(root, skip=root / "gen_2/work.logs")
        else:
            assert "cannot read the labels" in program["error"]
            assert_no_label_bytes(root)
    elif case == "hard-link" and sandbox == "process":
        # NOT CONTAINED: the process sandbox lets the scaffold reach the labels file, so its
        # own work dir may hold them (here: a second name of the file); sia still never
        # scores or records them
        assert (root / "gen_2/work/submission.csv").stat().st_nlink == 2
        assert any("hard link" in line for line in program["outputs"]["refused"])
        assert_no_label_bytes(root, skip=root / "gen_2/work")
    else:
        assert_no_label_bytes(root)

    # the run can be resumed: one more (honest) generation runs and is scored
    running.resume_run(sia_pm, runs_dir, "1", max_gen=3)
    assert (root / "gen_3/metrics.json").exists()


TAMPER = """
import argparse
from pathlib import Path

parser = argparse.ArgumentParser()
parser.add_argument("--dataset_dir")
parser.add_argument("--working_dir")
args = parser.parse_args()
fake = (
    "import argparse, json\\nfrom pathlib import Path\\np = argparse.ArgumentParser()\\n"
    "p.add_argument('--gen-dir')\\ng = Path(p.parse_args().gen_dir)\\n"
    "(g / 'results.json').write_text(json.dumps({'accuracy': 1.0, 'items': "
    "[{'id': f'q{i:02d}', 'status': 'correct'} for i in range(24)]}))\\n"
)
try:
    (Path(args.dataset_dir) / "evaluate.py").write_text(fake)
    print("scorer replaced")
except OSError as e:
    print("cannot replace the scorer:", e)
"""


def test_a_scaffold_that_replaces_evaluate_py_is_voided(
    sandbox: str, sia_pm: Any, tmp_path: Path
) -> None:
    task_dir = make_task(tmp_path / "labels-task")
    honest = [HONEST.replace("ANSWER", "no"), HONEST.replace("ANSWER", "maybe")]
    config = scripted_config(tmp_path, task_dir, sandbox, [honest[0], TAMPER, honest[1]], max_gen=3)
    rows = Loop(config, RunStore.open(tmp_path / "runs", "1", create=True), sia_pm).run()
    assert [r.status for r in rows] == ["done"] * 3
    root = RunStore.path_for((tmp_path / "runs").resolve(), "1")
    metrics = {g: json.loads((root / f"gen_{g}/metrics.json").read_text()) for g in (2, 3)}
    archive = json.loads((root / "archive.json").read_text())
    assert archive["incumbent"] == 1
    if sandbox == "process":
        # NOT CONTAINED: the scorer is rewritten; every generation scored with it is voided
        assert "scorer replaced" in (root / "gen_2/work.logs/program.log").read_text()
        for g in (2, 3):
            assert metrics[g]["dev"]["score"] == 0.0
            assert "data/public/evaluate.py" in metrics[g]["voided"]
        return
    assert "Read-only file system" in (root / "gen_2/work.logs/program.log").read_text()
    assert metrics[2]["voided"] == "" and metrics[2]["dev"]["score"] == 0.0
