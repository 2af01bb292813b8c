"""The cost ledger on a real run: the scripted Meta/Feedback roles, a task model behind a loopback
OpenAI stub that reports usage, the real gateway, sandbox and loop. Ledger totals must equal the
sum of the gateway's own per-call records."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import attrs
import pytest

from sia_core import hookimpl
from sia_core.contracts.backend import AgentOutcome, BackendOptions, FeedbackRequest, MetaRequest
from sia_core.contracts.records import BackendSpec
from sia_core.loop import Loop
from sia_core.machinery.ledger import LEDGER, Ledger, totals
from sia_core.machinery.pricing import Pricer, litellm_price_table
from sia_core.machinery.runstore import RunStore
from sia_core.services.gateway import HTTPTaskModel
from sia_core.surface.builtin.scripted import ScriptedBackend
from sia_core.testing.openai_stub import OpenAIStub

from .test_loop import make_config, write_script

TASK_MODEL = "stub-priced-task-model"
META_MODEL = "stub-priced-meta-model"
#: USD per token (litellm's format), given to the run with SIA_MODEL_PRICES
PRICES = {
    TASK_MODEL: {"input_cost_per_token": 2e-6, "output_cost_per_token": 8e-6},
    META_MODEL: {"input_cost_per_token": 3e-6, "output_cost_per_token": 1.5e-5},
}
#: what the (scripted) Meta/Feedback role reports for its own calls, per step
AGENT_USAGE = {"input_tokens": 1200, "output_tokens": 300, "calls": 2, "model": META_MODEL}

#: gen 2 asks the model and adds the numbers it names; gen 3 keeps it
SCRIPT = {
    "meta": {"scaffold": "reference"},
    "feedback": {
        "2": {"lever": "harness", "scaffold": "llm_calc_scaffold.py", "rationale": "add"},
        "3": {"lever": "harness", "rationale": "keep"},
    },
}


def add_reply(body: dict[str, Any]) -> str:
    """The stub model: names the two numbers of the question and their sum."""
    text = " ".join(str(m.get("content", "")) for m in body.get("messages", []))
    nums = [int(x) for x in re.findall(r"\d+", text)][:2]
    return f"{nums[0]} and {nums[1]} make {sum(nums)}" if len(nums) == 2 else "no idea"


class StubBackend(ScriptedBackend):
    """The scripted roles (reporting their usage, as an LLM backend does) + an HTTP task model."""

    name = "stub-http"

    def __init__(self, options: BackendOptions | None = None) -> None:
        super().__init__(options)
        assert options is not None
        self._http = HTTPTaskModel(options.settings["url"], TASK_MODEL)
        self.meta_model = META_MODEL

    def meta(self, request: MetaRequest) -> AgentOutcome:
        out = super().meta(request)
        return AgentOutcome(
            decision=out.decision,
            improvement_md=out.improvement_md,
            scaffold=out.scaffold,
            transcript=out.transcript,
            usage=dict(AGENT_USAGE),
        )

    def feedback(self, request: FeedbackRequest) -> AgentOutcome:
        out = super().feedback(request)
        usage = dict(AGENT_USAGE)
        if request.next_gen == 3:
            usage["cost_usd"] = 0.5  # a provider-reported cost wins over the price table
        return AgentOutcome(
            decision=out.decision,
            improvement_md=out.improvement_md,
            scaffold=out.scaffold,
            transcript=out.transcript,
            usage=usage,
        )

    def task_model(self) -> HTTPTaskModel:  # type: ignore[override]
        return self._http

    def close(self) -> None:
        self._http.close()


class StubBackendPlugin:
    @hookimpl
    def sia_backends(self):
        yield BackendSpec(name="stub-http", factory=f"{__name__}:StubBackend")


@pytest.fixture
def stub():
    with OpenAIStub(reply=add_reply) as s:
        yield s


@pytest.fixture
def prices(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "prices.json"
    path.write_text(json.dumps(PRICES))
    monkeypatch.setenv("SIA_MODEL_PRICES", str(path))
    return path


def stub_config(task_dir: Path, tmp_path: Path, url: str, **kw: Any):
    config = make_config(task_dir, write_script(tmp_path, SCRIPT), **kw)
    return attrs.evolve(
        config, backend="stub-http", backend_settings={**config.backend_settings, "url": url}
    )


def gateway_calls(root: Path) -> list[dict[str, Any]]:
    """Every per-call record the gateway wrote, dev and sealed test."""
    calls = []
    for g in sorted(root.glob("gen_*")):
        for path in (g / "agent_execution.json", g / "sealed/agent_execution_test.json"):
            if path.exists():
                calls += json.loads(path.read_text())["calls"]
    return calls


def test_ledger_totals_equal_the_gateways_per_call_records(
    sia_pm, register_plugin, tiny_task_dir, tmp_path, stub, prices
):
    register_plugin(StubBackendPlugin(), "stub-http")
    store = RunStore.open(tmp_path / "runs", "1", create=True)
    config = stub_config(tiny_task_dir, tmp_path, stub.url, max_gen=3, test_eval="every")
    rows = Loop(config, store, sia_pm).run()
    root = store.root
    assert [r.dev for r in rows][1:] == [1.0, 1.0]  # the stub model really answered

    calls = [c for c in gateway_calls(root) if c["status"] != "over_budget"]
    assert len(calls) == len(stub.requests) == 3 * 24  # 12 dev + 12 test items per generation
    # each call is priced by the gateway from the price table
    for c in calls:
        price = PRICES[TASK_MODEL]
        expected = (
            c["prompt_tokens"] * price["input_cost_per_token"]
            + c["completion_tokens"] * price["output_cost_per_token"]
        )
        assert c["cost_usd"] == pytest.approx(expected) and c["cost_usd"] > 0

    lines = [json.loads(x) for x in (root / LEDGER).read_text().splitlines()]
    task_lines = [e for e in lines if e["role"] == "task_model"]
    assert len(task_lines) == len(calls)
    assert sum(e["input_tokens"] for e in task_lines) == sum(c["prompt_tokens"] for c in calls)
    assert sum(e["output_tokens"] for e in task_lines) == sum(c["completion_tokens"] for c in calls)
    assert sum(e["cost_usd"] for e in task_lines) == pytest.approx(
        sum(c["cost_usd"] for c in calls)
    )
    assert {e["cost_source"] for e in task_lines} == {"price_table"}
    assert {e["split"] for e in task_lines} == {"dev", "test"}

    # the Meta/Feedback roles' own calls: priced from the table, or the provider's figure
    agent = {e["key"]: e for e in lines if e["role"] in ("meta", "feedback")}
    assert set(agent) == {"1/propose/meta", "2/propose/feedback", "3/propose/feedback"}
    meta_price = 1200 * 3e-6 + 300 * 1.5e-5
    assert agent["1/propose/meta"]["cost_usd"] == pytest.approx(meta_price)
    assert agent["2/propose/feedback"]["cost_source"] == "price_table"
    assert agent["3/propose/feedback"]["cost_usd"] == 0.5
    assert agent["3/propose/feedback"]["cost_source"] == "provider"

    # run.json and every gen_n/cost.json agree with the ledger
    run_json = json.loads((root / "run.json").read_text())
    cost = run_json["cost"]
    expected_usd = sum(c["cost_usd"] for c in calls) + 2 * meta_price + 0.5
    assert cost["cost_usd"] == pytest.approx(expected_usd)
    assert cost["llm_calls"] == len(calls) + 3 * 2
    assert cost["tokens"] == sum(c["prompt_tokens"] + c["completion_tokens"] for c in calls) + 4500
    gen_costs = [json.loads((root / f"gen_{g}/cost.json").read_text()) for g in (1, 2, 3)]
    assert sum(g["cost_usd"] for g in gen_costs) == pytest.approx(cost["cost_usd"])
    assert [g["wall_seconds"] > 0 for g in gen_costs] == [True] * 3
    for g in gen_costs:
        assert g == {**g, **{k: v for k, v in cost["generations"][str(g["gen"])].items()}}
        assert g["by_role"]["task_model"]["llm_calls"] == 24
    # per-generation metrics.json (the gateway's own usage) agrees too
    metrics = json.loads((root / "gen_2/metrics.json").read_text())
    assert metrics["cost_usd"] == pytest.approx(gen_costs[1]["by_role"]["task_model"]["cost_usd"])
    # the step events carry the step's totals, and the summary rows the generation's
    run_events = [
        json.loads(x)
        for x in (root / "events.jsonl").read_text().splitlines()
        if '"step": "run"' in x
    ]
    assert [e["data"]["cost"]["llm_calls"] for e in run_events] == [24, 24, 24]
    assert [r.cost_usd for r in rows] == pytest.approx([g["cost_usd"] for g in gen_costs])
    assert run_json["estimate"]["usd"] > 0


def test_a_resume_rebuilds_the_ledger_and_counts_nothing_twice(
    sia_pm, register_plugin, tiny_task_dir, tmp_path, stub, prices
):
    register_plugin(StubBackendPlugin(), "stub-http")
    store = RunStore.open(tmp_path / "runs", "1", create=True)
    config = stub_config(tiny_task_dir, tmp_path, stub.url, max_gen=2, test_eval="every")
    Loop(config, store, sia_pm).run()
    path = store.root / LEDGER
    clean = path.read_text()
    # a crash left: a line of a step that never finished, a duplicate, and a half line
    lines = clean.splitlines()
    ghost = {**json.loads(lines[0]), "key": "3/run/call/1", "gen": 3}
    path.write_text(clean + json.dumps(ghost) + "\n" + lines[1] + "\n" + lines[2][:40])
    ledger = Ledger.open(RunStore.open(tmp_path / "runs", "1"))
    assert path.read_text() == clean  # rewritten as it was
    assert ledger.totals() == totals(json.loads(x) for x in lines)
    # a resume to a third generation adds that generation's lines and nothing else
    store2 = RunStore.open(tmp_path / "runs", "1")
    Loop(
        stub_config(tiny_task_dir, tmp_path, stub.url, max_gen=3, test_eval="every"), store2, sia_pm
    ).run()
    after = [json.loads(x) for x in path.read_text().splitlines()]
    assert len({e["key"] for e in after}) == len(after)
    assert sorted({e["gen"] for e in after}) == [1, 2, 3]
    calls = [c for c in gateway_calls(store2.root) if c["status"] != "over_budget"]
    task_lines = [e for e in after if e["role"] == "task_model"]
    assert len(task_lines) == len(calls)
    assert sum(e["cost_usd"] for e in task_lines) == pytest.approx(
        sum(c["cost_usd"] for c in calls)
    )

    # a lost or corrupt ledger is made anew from the finished steps' events and artifacts
    def without_ts(text: str) -> list[dict[str, Any]]:
        return sorted(
            ({k: v for k, v in json.loads(x).items() if k != "ts"} for x in text.splitlines()),
            key=lambda e: e["key"],
        )

    full = path.read_text()
    for damage in ("", "{not json\n" + full):
        path.unlink()
        if damage:
            path.write_text(damage)
        config3 = stub_config(tiny_task_dir, tmp_path, stub.url, max_gen=3, test_eval="every")
        Loop(config3, RunStore.open(tmp_path / "runs", "1"), sia_pm).run()
        assert without_ts(path.read_text()) == without_ts(full)


def test_free_models_never_look_a_price_up(sia_pm, tiny_task_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("SIA_MODEL_PRICES", str(tmp_path / "missing.json"))  # never read
    store = RunStore.open(tmp_path / "runs", "1", create=True)
    Loop(make_config(tiny_task_dir, write_script(tmp_path, SCRIPT), max_gen=1), store, sia_pm).run()
    lines = [json.loads(x) for x in (store.root / LEDGER).read_text().splitlines()]
    assert lines and {e["cost_source"] for e in lines} == {"free"}
    run_json = json.loads((store.root / "run.json").read_text())
    assert run_json["cost"]["cost_usd"] == 0 and run_json["cost"]["tokens"] > 0
    assert "estimate" not in run_json


def test_price_lookup_strips_a_provider_prefix_and_reads_litellms_table(tmp_path):
    path = tmp_path / "prices.json"
    path.write_text(json.dumps(PRICES))
    pricer = Pricer(str(path))
    assert pricer.price(f"openai/{TASK_MODEL}") == (2e-6, 8e-6)
    assert pricer.cost("no-such-model", 10, 10) is None
    # litellm's bundled table (litellm comes with sia-backend-litellm), read offline as a file
    table = litellm_price_table()
    assert len(table) > 100, "litellm's price table was not found"
    name, entry = next(
        (k, v)
        for k, v in table.items()
        if isinstance(v, dict) and v.get("input_cost_per_token") and "/" not in k
    )
    assert Pricer("").price(name) == (
        float(entry["input_cost_per_token"]),
        float(entry.get("output_cost_per_token") or 0.0),
    )
    # ... without importing litellm (a heavy import) to read it
    code = (
        "import sys; from sia_core.machinery.pricing import Pricer; p = Pricer('').price('gpt-4o-mini'); "
        "print(p is not None, 'litellm' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == ["True", "False"], out.stderr


@pytest.mark.slow
def test_a_crash_between_the_ledger_and_the_step_event_counts_the_step_once(tmp_path):
    """SIGKILL while `step_finished` of gen 1's `run` is half appended: its ledger lines are
    already written; the resumed run redoes the step and the ledger equals an uninterrupted
    run's."""
    from .test_resume import run_args

    script = write_script(tmp_path)

    def sia(runs: Path, *extra: str, fault: str = "") -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "SIA_TEST_FAULT": fault}
        args = run_args(script, runs, max_gen=3) if not extra else list(extra)
        return subprocess.run(
            [sys.executable, "-m", "sia_core.surface.cli", *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
        )

    def ledger(root: Path) -> list[dict[str, Any]]:
        """The ledger's lines without timings and call ids (parallel workers call in any order)."""
        lines = [json.loads(x) for x in (root / LEDGER).read_text().splitlines()]
        lines = [{k: v for k, v in e.items() if k not in ("ts", "key", "call_id")} for e in lines]
        return sorted(lines, key=lambda e: json.dumps(e, sort_keys=True))

    assert sia(tmp_path / "ref").returncode == 0
    runs = tmp_path / "runs"
    killed = sia(runs, fault="kill-mid-append:step_finished:1:run")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    root = runs / "run_1"
    assert any(e["gen"] == 1 and e["step"] == "run" for e in ledger(root))  # written, uncounted
    resumed = sia(runs, "resume", "1", "--runs-dir", str(runs))
    assert resumed.returncode == 0, resumed.stderr
    expected = ledger(tmp_path / "ref/run_1")
    assert ledger(root) == expected
    run_cost = json.loads((root / "run.json").read_text())["cost"]
    assert run_cost["llm_calls"] == sum(e["calls"] for e in expected)
