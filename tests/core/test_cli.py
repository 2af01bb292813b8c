"""The `sia` command, run as a user runs it: in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .test_loop import write_script

HEAVY = ("torch", "litellm", "anthropic", "openhands", "modal", "transformers", "trl", "peft")
#: what plugin entry points must not pull in just to list themselves: their real work
#: (the report's renderer, the bwrap sandbox, the training objective, the core's services)
PLUGIN_INSIDES = (
    "sia_report.report",
    "sia_report.data",
    "sia_sandbox_bwrap.sandbox",
    "sia_train.objective",
    "sia_core.loop",
    "sia_core.services.runner",
)


def sia(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sia_core.surface.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, **(env or {})},
        timeout=timeout,
    )


def test_help_imports_nothing_heavy_and_no_plugin_module() -> None:
    """`sia --help` loads no plugin (not even its entry-point module), yet lists `report`."""
    import importlib.metadata as md

    tops = sorted({ep.value.split(":")[0].split(".")[0] for ep in md.entry_points(group="sia")})
    assert "sia_report" in tops and "sia_backend_local" in tops  # the check has something to find
    code = (
        "import sys; from sia_core.surface.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        f"print([m for m in sys.modules if m.split('.')[0] in {tops!r} or m in {HEAVY + PLUGIN_INSIDES!r}])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "--task" in out.stdout and "validate-task" in out.stdout
    assert out.stdout.strip().splitlines()[-1] == "[]"
    assert "  report " in out.stdout  # from sia-report's metadata, not from importing it
    helped = sia("report", "--help", timeout=60)
    assert helped.returncode == 0 and "--no-png" in helped.stdout, helped.stderr


@pytest.mark.benchmark
def test_help_wall_time_figure() -> None:
    """A benchmark figure, not a pass/fail speed check: prints `sia --help` wall time."""
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        proc = sia("--help")
        times.append(time.perf_counter() - t0)
        assert proc.returncode == 0
    times.sort()
    print(
        f"\nBENCHMARK sia --help wall time: median {times[2] * 1000:.0f} ms "
        f"(min {times[0] * 1000:.0f}, max {times[-1] * 1000:.0f}) over 5 runs"
    )


def test_version() -> None:
    proc = sia("--version")
    assert proc.returncode == 0 and "0.1.0" in proc.stdout


def test_tasks_and_plugins_json() -> None:
    tasks = json.loads(sia("tasks", "--json").stdout)["tasks"]
    assert "tiny-add" in {t["name"] for t in tasks}
    plugins = json.loads(sia("plugins", "--json").stdout)["plugins"]
    builtin = next(p for p in plugins if p["name"] == "sia_core.surface.builtin")
    assert builtin["provides"]["backends"] == ["scripted"]
    assert builtin["provides"]["sandboxes"] == ["process"]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--task", "nope"], "unknown task 'nope'; choose one of:"),
        (["--task", "tiny-add", "--backend", "nope"], "unknown backend 'nope'; choose one of:"),
        (["--task", "tiny-add", "--sandbox", "nope"], "unknown sandbox 'nope'; choose one of:"),
        (["--task", "tiny-add", "--rl-algorithm", "dpo9"], "unknown RL algorithm 'dpo9'"),
        (["--task", "tiny-add", "--task_dir", "."], "not both"),
        (["--task_dir", "/nonexistent"], "no such directory"),
        (["--max_gen", "0", "--task", "tiny-add"], "0 is not in the range x>=1"),
        (["--lever", "sideways", "--task", "tiny-add"], "'sideways' is not one of"),
        (["show", "99"], "no run '99'"),
        (
            ["--task", "tiny-add", "--train-opt", "stepz=2"],
            "unknown --train-opt key(s): stepz (did you mean steps?); known: ",
        ),
    ],
)
def test_bad_input_is_one_clear_line(tmp_path: Path, args: list[str], expected: str) -> None:
    proc = sia(*args, "--runs-dir", str(tmp_path / "runs"))
    assert proc.returncode in (1, 2)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("sia: error:") and expected in lines[0], lines[0]
    assert "Traceback" not in proc.stderr


def test_declared_train_opts_are_accepted(tmp_path: Path) -> None:
    """Keys of the worker (micro_batch_tokens), an objective (kl_target) and the core (steps)."""
    script = write_script(tmp_path)
    proc = sia(
        *("--task", "tiny-add", "--max_gen", "1", "--backend", "scripted"),
        *("--backend-opt", f"script={script}", "--runs-dir", str(tmp_path / "runs")),
        *("--train-opt", "steps=2", "--train-opt", "micro_batch_tokens=512"),
        *("--train-opt", "kl_target=0.5", "--train-opt", "modal_gpu=A10G"),
    )
    assert proc.returncode == 0, proc.stderr


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    proc = sia("--debug", "--task", "nope", "--runs-dir", str(tmp_path))
    assert "Traceback" in proc.stderr and "unknown task" in proc.stderr


def test_validate_task(tmp_path: Path, tiny_task_dir: Path) -> None:
    ok = sia("validate-task", str(tiny_task_dir))
    assert ok.returncode == 0 and "ok" in ok.stdout
    assert sia("validate-task", "tiny-add").returncode == 0
    (tiny_task_dir / "reference/reference_target_agent.py").unlink()
    (tiny_task_dir / "data/public/task.md").unlink()
    bad = sia("validate-task", str(tiny_task_dir))
    assert bad.returncode == 1
    assert "reference_target_agent.py" in bad.stdout and "task.md" in bad.stdout
    assert "2 problem(s)" in bad.stderr


def test_run_show_runs_and_same_command_resumes(tmp_path: Path) -> None:
    script = write_script(tmp_path)
    runs = tmp_path / "runs"
    cmd = [
        "--task",
        "tiny-add",
        "--max_gen",
        "2",
        "--run_id",
        "7",
        "--backend",
        "scripted",
        "--backend-opt",
        f"script={script}",
        "--runs-dir",
        str(runs),
        "--test-eval",
        "every",
    ]
    first = sia(*cmd)
    assert first.returncode == 0, first.stderr
    assert "backend scripted: chosen with --backend" in first.stderr
    assert "sandbox bwrap" in first.stderr or "sandbox process" in first.stderr
    assert "run 7" in first.stdout  # the summary table
    # why the weights lever was not pulled, under the table
    assert "weights lever: not pulled: the Feedback-Agent chose harness in 1 decision(s)" in (
        first.stdout
    )
    # progress lines (not a terminal: plain lines on stderr)
    assert "run started: task tiny-add, task model scripted-echo" in first.stderr
    assert "gen 2: score done in" in first.stderr and "dev=1.0000" in first.stderr
    shown = json.loads(sia("show", "7", "--json", "--runs-dir", str(runs)).stdout)
    assert shown["weights_lever"].startswith("weights lever: not pulled: the Feedback-Agent")
    assert shown["status"] == "finished" and shown["best_gen"] == 2 and shown["best_dev"] == 1.0
    assert [g["lever"] for g in shown["gens"]] == ["harness", "harness"]
    assert all(g["test"] is not None for g in shown["gens"])
    runs_json = json.loads(sia("runs", "--json", "--runs-dir", str(runs)).stdout)["runs"]
    assert runs_json[0]["run_id"] == "7" and runs_json[0]["best_dev"] == 1.0
    gen = json.loads(sia("show", "7", "2", "--json", "--runs-dir", str(runs)).stdout)
    assert gen["decision"]["rationale"] == "compute the sum"
    # the same command again: resumes (nothing to do), and a bigger max_gen continues
    again = sia(*[c if c != "2" else "3" for c in cmd])
    assert again.returncode == 0 and "resuming" in again.stderr
    shown = json.loads(sia("show", "7", "--json", "--runs-dir", str(runs)).stdout)
    assert len(shown["gens"]) == 3
    # a different setting with the same run id is refused, naming the difference
    clash = sia(*cmd, "--seed", "5")
    assert clash.returncode == 1 and "different settings (seed)" in clash.stderr


def test_default_runs_dir_is_relative_to_the_working_directory(tmp_path: Path) -> None:
    proc = sia("--task", "tiny-add", "--max_gen", "1", "--backend", "scripted", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "runs/run_1/gen_1/metrics.json").is_file()
    listed = json.loads(sia("runs", "--json", cwd=tmp_path).stdout)["runs"]
    assert [r["run_id"] for r in listed] == ["1"]


def test_sealed_test_is_scored_once_at_the_end_by_default(tmp_path: Path) -> None:
    """--test-eval final: only the first generation and the incumbent touch the test split."""
    script = write_script(tmp_path)
    runs = tmp_path / "runs"
    proc = sia(
        "--task",
        "tiny-add",
        "--max_gen",
        "3",
        "--backend",
        "scripted",
        "--backend-opt",
        f"script={script}",
        "--runs-dir",
        str(runs),
        "--run_id",
        "1",
    )
    assert proc.returncode == 0, proc.stderr
    shown = json.loads(sia("show", "1", "--json", "--runs-dir", str(runs)).stdout)
    tests = {g["gen"]: g["test"] for g in shown["gens"]}
    assert tests[2] == 1.0 and tests[1] is not None and tests[3] is None
    execution = json.loads((runs / "run_1/gen_3/agent_execution.json").read_text())
    assert all(i["split"] == "dev" for i in execution["items"])


def test_auto_backend_prefers_a_configured_key(sia_pm, register_plugin, monkeypatch) -> None:
    from sia_core import hookimpl
    from sia_core.contracts.records import BackendSpec
    from sia_core.surface.cli.running import choose_backend

    class Backends:
        @hookimpl
        def sia_backends(self):
            yield BackendSpec(name="cloud", factory="x:y", key_env_vars=("SIA_TEST_KEY",))
            yield BackendSpec(name="offline", factory="x:y", auto_priority=10)

    assert choose_backend(sia_pm, "auto")[0] == "scripted"
    assert "no local-model backend is installed" in choose_backend(sia_pm, "auto")[1]
    register_plugin(Backends(), "backends")
    monkeypatch.delenv("SIA_TEST_KEY", raising=False)
    assert choose_backend(sia_pm, "auto") == ("offline", "no provider API key is set")
    monkeypatch.setenv("SIA_TEST_KEY", "k")
    assert choose_backend(sia_pm, "auto") == ("cloud", "SIA_TEST_KEY is set")
    assert choose_backend(sia_pm, "offline") == ("offline", "chosen with --backend")


def test_doctor_says_what_runs_here_and_how_to_fix_the_rest() -> None:
    env = {k: v for k, v in os.environ.items() if k != "ANTHROPIC_API_KEY"}
    proc = subprocess.run(
        [sys.executable, "-m", "sia_core.surface.cli", "doctor"],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert all(line[:4] in ("ok  ", "--  ") for line in lines), lines
    assert "ok  sandbox process: plain process with its own session and rlimits" in lines
    assert any(line.startswith("ok  executor local:") for line in lines)
    assert "--  backend claude: set ANTHROPIC_API_KEY to use it" in lines
    # OpenHands lives in .venv312 (Python >= 3.12), never in this environment
    (openhands,) = [line for line in lines if "OpenHands" in line]
    assert openhands.startswith("--") and "scripts/setup-py312" in openhands
