"""The event catalogue: every event the loop emits has a payload record, the hookspec documents
each, and a real run's events all fit their records."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from sia_core.contracts import hookspecs
from sia_core.contracts.events import CATALOGUE, event_data

from .test_cli import sia
from .test_loop import write_script

LOOP = Path(hookspecs.__file__).parents[1] / "loop"


def emitted_in_source() -> dict[str, bool]:
    """event type -> logged, for each ``emit("type"`` / ``_progress("type"`` in the loop."""
    found: dict[str, bool] = {}
    for path in LOOP.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        for call, name in re.findall(r"(emit|_progress)\(\s*\"(\w+)\"", text):
            found[name] = call == "emit"
        for name in re.findall(r"\"(run_resumed|run_started)\" if", text):
            found[name] = True
    return found


def test_every_event_the_loop_emits_is_in_the_catalogue() -> None:
    emitted = emitted_in_source()
    assert len(emitted) >= 12  # the scan sees the loop
    assert {name: CATALOGUE[name].LOGGED for name in emitted if name in CATALOGUE} == emitted


def test_the_hookspec_documents_every_event_type() -> None:
    doc = hookspecs.sia_on_event.__doc__ or ""
    missing = [name for name in CATALOGUE if f"``{name}``" not in doc]
    assert missing == []


@pytest.mark.parametrize(
    ("type", "data", "logged", "error"),
    [
        ("gen_begun", {}, True, "unknown event type 'gen_begun'"),
        ("warning", {"message": "m", "extra": 1}, True, "has no field(s) extra"),
        ("warning", {}, True, "warning"),
        ("step_started", {"step": "run"}, True, "goes to observers only"),
        ("gen_started", {}, False, "goes to events.jsonl"),
    ],
)
def test_event_data_refuses_what_the_catalogue_does_not_say(
    type: str, data: dict[str, object], logged: bool, error: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(error)):
        event_data(type, data, logged=logged)


def test_an_open_payload_takes_its_figures() -> None:
    data = {"step": "score", "seconds": 1.5, "dev_score": 0.5}
    assert event_data("step_finished", data, logged=True) == data


def test_a_real_runs_events_fit_their_records(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    script = write_script(tmp_path)
    proc = sia(
        *("--task", "tiny-add", "--max_gen", "2", "--backend", "scripted"),
        *("--backend-opt", f"script={script}", "--runs-dir", str(runs)),
    )
    assert proc.returncode == 0, proc.stderr
    lines = (runs / "run_1" / "events.jsonl").read_text().splitlines()
    events = [json.loads(line) for line in lines]
    assert {e["type"] for e in events} >= {"run_started", "step_finished", "run_finished"}
    for e in events:
        event_data(e["type"], e["data"], logged=True)
