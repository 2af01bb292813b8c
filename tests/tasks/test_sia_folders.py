"""SIA's own task folders (from the reference package ``sia-agent`` 0.6.0's wheel, fetched by
``scripts/test`` into a cache outside the repo) run unchanged through sia, and sia scores
exactly what their ``evaluate.py`` writes."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest

from sia_core.contracts.errors import TaskError
from sia_core.services.taskdir import load_task, validate_task

WHEELS = Path(
    os.environ.get("SIA_AGENT_WHEELS")
    or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "sia/sia-agent-0.6.0"
)
ACCEPTED = ("lawbench", "gpqa", "longcot-chess")


@pytest.fixture(scope="module")
def sia_tasks(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel's ``sia/tasks`` folder, unpacked as it ships."""
    wheels = sorted(WHEELS.glob("sia_agent-0.6.0-*.whl"))
    if not wheels:
        pytest.fail(
            f"no sia_agent-0.6.0 wheel in {WHEELS}: scripts/test fetches it "
            "(pip download --no-deps sia-agent==0.6.0 -d that folder)"
        )
    out = tmp_path_factory.mktemp("sia-agent")
    with zipfile.ZipFile(wheels[0]) as wheel:
        wheel.extractall(out, [n for n in wheel.namelist() if n.startswith("sia/tasks/")])
    return out / "sia" / "tasks"


def sia(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sia_core.surface.cli", *args],
        capture_output=True,
        text=True,
        timeout=600,  # a hang guard: each run takes seconds
        env={**os.environ, "GEMINI_API_KEY": ""},
    )


def test_three_folders_are_accepted_and_spaceship_is_refused_for_its_missing_evaluate_py(
    sia_tasks: Path,
) -> None:
    for name in ACCEPTED:
        assert validate_task(sia_tasks / name) == [], name
    problems = validate_task(sia_tasks / "spaceship-titanic")
    assert len(problems) == 1 and "needs evaluate.py" in str(problems[0]), problems


@pytest.mark.parametrize("name", ACCEPTED)
def test_a_folder_runs_unchanged_and_a_failing_program_counts_as_an_error(
    name: str, sia_tasks: Path, tmp_path: Path
) -> None:
    """The reference program needs a Gemini key it does not get here: it exits 1, and the
    console and metrics.json say so (never ``errors=0``)."""
    runs = tmp_path / "runs"
    proc = sia(
        *("--task_dir", str(sia_tasks / name), "--max_gen", "1", "--backend", "scripted"),
        *("--runs-dir", str(runs)),
    )
    assert proc.returncode == 0, proc.stderr
    assert "gen 1: run done" in proc.stderr and "program errors=1" in proc.stderr
    assert "exit_status=1" in proc.stderr
    metrics = json.loads((runs / "run_1/gen_1/metrics.json").read_text())
    assert metrics["n_errors"] == 1
    assert metrics["dev"]["extra"]["program"] == {"status": "error", "exit_status": 1}
    shown = sia("show", "1", "1", "--runs-dir", str(runs))
    assert "errors 1" in shown.stdout and "program: error, exit status 1" in shown.stdout


def test_spaceship_is_refused_in_one_line(sia_tasks: Path, tmp_path: Path) -> None:
    proc = sia("--task_dir", str(sia_tasks / "spaceship-titanic"), "--runs-dir", str(tmp_path))
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sia: error:") and "evaluate.py" in lines[0]
    assert "Traceback" not in proc.stderr


# -- a fixed submission: sia's score is evaluate.py's ----------------------------------------


def lawbench_submission(folder: Path, out: Path) -> None:
    truth = list(csv.DictReader((folder / "data/private/test.csv").open(encoding="utf-8")))
    with (out / "submission.csv").open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "label"])
        for k, row in enumerate(truth):
            writer.writerow([row["id"], row["label"] if k % 3 else "wrong"])


def gpqa_submission(folder: Path, out: Path, *, answered: float = 1.0) -> None:
    truth = json.loads((folder / "data/private/diamond_questions.json").read_text())
    keep = truth[: int(len(truth) * answered)]
    answers = {
        str(q["id"]): q["correct_answer_letter"] if k % 2 else "ABCD"[k % 4]
        for k, q in enumerate(keep)
    }
    (out / "results").mkdir()
    (out / "results/answers.json").write_text(json.dumps({"answers": answers}))


def chess_submission(folder: Path, out: Path) -> None:
    truth = json.loads((folder / "data/private/answers.json").read_text())
    rows = [
        {"question_id": qid, "solution": moves if k % 2 else ["a1"]}
        for k, (qid, moves) in enumerate(truth.items())
    ]
    (out / "responses.json").write_text(json.dumps(rows))


SUBMISSIONS = {"lawbench": lawbench_submission, "gpqa": gpqa_submission}
SUBMISSIONS["longcot-chess"] = chess_submission
METRIC_PATH = {"lawbench": "accuracy", "gpqa": "accuracy", "longcot-chess": "summary.accuracy"}


def evaluate_py_figure(folder: Path, submission: Path, tmp_path: Path, metric: str) -> Any:
    """Run the task's own evaluate.py on a copy of the submission; its metric."""
    gen = tmp_path / "by-hand"
    shutil.copytree(submission, gen)
    subprocess.run(
        [sys.executable, str(folder / "data/public/evaluate.py"), "--gen-dir", str(gen)],
        check=True,
        capture_output=True,
        timeout=600,
    )
    value: Any = json.loads((gen / "results.json").read_text())
    for key in metric.split("."):
        value = value[key]
    return value


def writer_scaffold(submission: Path) -> str:
    """A program scaffold that writes ``submission``'s files into its working folder."""
    files = {
        p.relative_to(submission).as_posix(): p.read_text(encoding="utf-8")
        for p in submission.rglob("*")
        if p.is_file()
    }
    return (
        "import json, pathlib, sys\n"
        "work = pathlib.Path(sys.argv[sys.argv.index('--working_dir') + 1])\n"
        f"for name, text in json.loads({json.dumps(json.dumps(files))}).items():\n"
        "    (work / name).parent.mkdir(parents=True, exist_ok=True)\n"
        "    (work / name).write_text(text, encoding='utf-8')\n"
    )


@pytest.mark.parametrize("name", ACCEPTED)
def test_a_fixed_submission_scores_what_evaluate_py_writes(
    name: str, sia_tasks: Path, tmp_path: Path
) -> None:
    """A run whose generation 1 writes a fixed submission records evaluate.py's own figure."""
    folder = sia_tasks / name
    submission = tmp_path / "outputs"
    submission.mkdir()
    SUBMISSIONS[name](folder, submission)
    figure = evaluate_py_figure(folder, submission, tmp_path, METRIC_PATH[name])
    assert 0 < figure < (100 if name == "longcot-chess" else 1)  # neither all right nor wrong
    (tmp_path / "gen1.py").write_text(writer_scaffold(submission))
    (tmp_path / "script.json").write_text(json.dumps({"meta": {"scaffold": "gen1.py"}}))
    runs = tmp_path / "runs"
    proc = sia(
        *("--task_dir", str(folder), "--max_gen", "1", "--backend", "scripted"),
        *("--backend-opt", f"script={tmp_path / 'script.json'}", "--runs-dir", str(runs)),
    )
    assert proc.returncode == 0, proc.stderr
    assert "program errors=0" in proc.stderr and "exit_status=0" in proc.stderr
    dev = json.loads((runs / "run_1/gen_1/metrics.json").read_text())["dev"]
    assert "error" not in dev["extra"], dev["extra"]
    assert dev["score"] == pytest.approx(figure, abs=1e-12)
    assert dev["extra"]["metric"] == METRIC_PATH[name]


def test_a_figure_over_the_answered_items_is_shown_beside_sias_all_items_score(
    sia_tasks: Path, tmp_path: Path
) -> None:
    """gpqa's evaluate.py divides by the items answered; sia divides by all and says so."""
    folder = sia_tasks / "gpqa"
    submission = tmp_path / "outputs"
    submission.mkdir()
    gpqa_submission(folder, submission, answered=0.5)
    own = evaluate_py_figure(folder, submission, tmp_path, "accuracy")
    dev = load_task(folder).score_program_output(submission)["dev"]
    total = len(json.loads((folder / "data/private/diamond_questions.json").read_text()))
    assert dev.score == pytest.approx(own * (total // 2) / total)
    assert dev.extra["task_figure"] == {"accuracy": own}
    assert "sia divides by all 198 items" in dev.extra["rule"]
    # in a run: metrics.json decides on sia's figure, and `sia show` gives both
    (tmp_path / "gen1.py").write_text(writer_scaffold(submission))
    (tmp_path / "script.json").write_text(json.dumps({"meta": {"scaffold": "gen1.py"}}))
    runs = tmp_path / "runs"
    proc = sia(
        *("--task_dir", str(folder), "--max_gen", "1", "--backend", "scripted"),
        *("--backend-opt", f"script={tmp_path / 'script.json'}", "--runs-dir", str(runs)),
    )
    assert proc.returncode == 0, proc.stderr
    recorded = json.loads((runs / "run_1/gen_1/metrics.json").read_text())["dev"]
    assert recorded["score"] == pytest.approx(dev.score)
    shown = sia("show", "1", "1", "--runs-dir", str(runs)).stdout
    assert f"task's own figure {{'accuracy': {own}}}: accuracy divides by the items" in shown


def test_results_without_a_metric_stop_with_one_line(sia_tasks: Path, tmp_path: Path) -> None:
    folder = tmp_path / "lawbench"
    shutil.copytree(sia_tasks / "lawbench", folder)
    (folder / "data/public/evaluate.py").write_text(
        "import json, sys, pathlib\n"
        "gen = pathlib.Path(sys.argv[sys.argv.index('--gen-dir') + 1])\n"
        "(gen / 'results.json').write_text(json.dumps({'name': 'x', 'done': True}))\n"
    )
    with pytest.raises(TaskError, match="no number sia can use as the metric") as caught:
        load_task(folder).score_program_output(tmp_path)
    assert "top-level keys: done, name" in str(caught.value)
    proc = sia(
        *("--task_dir", str(folder), "--max_gen", "1", "--backend", "scripted"),
        *("--runs-dir", str(tmp_path / "runs")),
    )
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("sia: error:") and "no number sia can use as the metric" in last
    assert "Traceback" not in proc.stderr


def test_a_planted_leak_is_refused_naming_file_and_line(sia_tasks: Path, tmp_path: Path) -> None:
    """Private labels copied next to their ids into a public file (any name, any order)."""
    folder = tmp_path / "lawbench"
    shutil.copytree(sia_tasks / "lawbench", folder)
    rows = list(csv.DictReader((folder / "data/private/test.csv").open(encoding="utf-8")))
    rows.reverse()
    with (folder / "data/public/notes.csv").open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["case", "answer"])
        writer.writerows([r["id"], r["label"]] for r in rows)
    problems = [str(p) for p in validate_task(folder)]
    assert len(problems) == 1, problems
    assert "data/public/notes.csv" in problems[0] and "private `label`" in problems[0]
    assert f"line {len(rows) + 1}" in problems[0]  # id 0, written last
