"""RunConfig is the one list of run settings: the CLI options, run.json and the caps all come
from its fields."""

from __future__ import annotations

import json
from pathlib import Path

import attrs

from sia_core.contracts.config import CAP_FIELDS, CAPS, RunConfig, settings
from sia_core.machinery.caps import caps_of

from .test_cli import sia
from .test_loop import write_script


def test_every_setting_is_an_option_of_sia_and_of_sia_run() -> None:
    for command in ((), ("run",)):
        help_text = sia(*command, "--help").stdout
        missing = [flag.names[0] for _, flag in settings() if flag.names[0] not in help_text]
        assert missing == []
    assert [f.name for f, _ in settings()] == [f.name for f in attrs.fields(RunConfig)]


def test_resume_offers_exactly_the_caps() -> None:
    help_text = sia("resume", "--help").stdout
    assert all(cap.flag in help_text for cap in CAPS)
    assert "--seed" not in help_text and "--backend" not in help_text
    assert CAP_FIELDS == ("max_usd", "max_run_tokens", "max_train_seconds")


def test_run_json_holds_every_setting_and_the_caps(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    script = write_script(tmp_path)
    proc = sia(
        *("--task", "tiny-add", "--max_gen", "1", "--backend", "scripted"),
        *("--backend-opt", f"script={script}", "--train-opt", "steps=2", "--max-usd", "3"),
        *("--seed", "5", "--runs-dir", str(runs)),
    )
    assert proc.returncode == 0, proc.stderr
    run_json = json.loads((runs / "run_1" / "run.json").read_text())
    assert set(run_json["config"]) == {f.name for f in attrs.fields(RunConfig)}
    config = RunConfig.from_run_json(run_json)
    assert (config.seed, config.max_usd, config.train_settings) == (5, 3.0, {"steps": 2})
    assert (
        run_json["caps"]
        == caps_of(config)
        == {
            "max_usd": 3.0,
            "max_tokens": None,
            "max_train_seconds": None,
        }
    )
