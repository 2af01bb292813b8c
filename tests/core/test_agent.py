"""The provider-neutral agent toolkit: what it may read, its tools, its turn loop and outcomes."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from sia_core.contracts.backend import FeedbackRequest, MetaRequest
from sia_core.services.agents import (
    AgentLimits,
    AgentTools,
    ToolCall,
    ToolSpec,
    Turn,
    Workspace,
    feedback_step,
    meta_step,
)

PARENT = "def solve(item, ctx):\n    return ctx.llm(str(item.input))\n"
BETTER = "def solve(item, ctx):\n    return ctx.llm('Sum only: ' + str(item.input))\n"


@pytest.fixture
def layout(tmp_path: Path) -> tuple[Path, Path]:
    """A run folder and a task folder with everything an agent must and must not see."""
    task = tmp_path / "task"
    (task / "data/public/sub").mkdir(parents=True)
    (task / "data/private").mkdir(parents=True)
    (task / "data/public/task.md").write_text("# the task\n")
    (task / "data/public/train.jsonl").write_text('{"id": "t1", "input": "1+1", "label": 2}\n')
    (task / "data/public/sub/notes.txt").write_text("public notes\n")
    (task / "data/private/dev_labels.jsonl").write_text('{"id": "d1", "label": 7}\n')
    (task / "data/public/private").mkdir()  # a folder named private inside public: refused too
    (task / "data/public/private/x.txt").write_text("hidden\n")
    os.symlink(task / "data/private/dev_labels.jsonl", task / "data/public/labels_link.jsonl")
    os.symlink("../private", task / "data/public/priv_dir")
    run = tmp_path / "runs/run_1"
    gen = run / "gen_1"
    (gen / "sealed").mkdir(parents=True)
    (gen / "work").mkdir()
    (gen / "trials/trial_1").mkdir(parents=True)
    (gen / "target_agent.py").write_text(PARENT)
    (gen / "agent_execution.json").write_text(json.dumps({"items": [{"id": "d1"}]}))
    (gen / "metrics.json").write_text(json.dumps({"dev": {"score": 0.5}}))
    (gen / "sealed/metrics_test.json").write_text(json.dumps({"score": 0.9}))
    (gen / "sealed/agent_execution_test.json").write_text("{}")
    (gen / "work/answers_test.json").write_text("{}")
    (gen / "trials/trial_1/target_agent.py").write_text(PARENT)
    (run / "context.md").write_text("# log\n")
    (run / "run.json").write_text("{}")
    (run / "events.jsonl").write_text("")
    os.symlink(gen / "sealed/metrics_test.json", gen / "decision.json")  # escape by link
    return run, task / "data/public"


def test_workspace_lists_only_allowed_files(layout: tuple[Path, Path]) -> None:
    run, public = layout
    ws = Workspace(run_dir=run, public_dir=public, documents={"task/task.md": "# t"})
    names = [n for n, _ in ws.list()]
    assert names == [
        "run/context.md",
        "run/gen_1/agent_execution.json",
        "run/gen_1/metrics.json",
        "run/gen_1/target_agent.py",
        "task/public/sub/notes.txt",
        "task/public/task.md",
        "task/public/train.jsonl",
        "task/task.md",
    ]
    assert "2" in ws.read("task/public/train.jsonl")


@pytest.mark.parametrize(
    "path",
    [
        "run/gen_1/sealed/metrics_test.json",
        "run/gen_1/sealed/agent_execution_test.json",
        "run/gen_1/work/answers_test.json",
        "run/gen_1/trials/trial_1/target_agent.py",
        "run/gen_1/decision.json",  # a symlink into sealed/
        "run/run.json",
        "run/events.jsonl",
        "task/public/labels_link.jsonl",  # a symlink to data/private
        "task/public/priv_dir/dev_labels.jsonl",  # a symlinked folder
        "task/public/private/x.txt",
        "task/public/../private/dev_labels.jsonl",
        "run/../../task/data/private/dev_labels.jsonl",
        "run/gen_1/../gen_1/sealed/metrics_test.json",
        "/etc/passwd",
        "task/public",
        "nowhere.txt",
    ],
)
def test_workspace_refuses_private_sealed_and_escapes(layout: tuple[Path, Path], path: str) -> None:
    run, public = layout
    tools = AgentTools(
        role="feedback",
        workspace=Workspace(run_dir=run, public_dir=public),
        parent_scaffold=PARENT,
        try_scaffold=None,
        limits=AgentLimits(),
    )
    text, is_error = tools.call(ToolCall(id="1", name="read_file", arguments={"path": path}))
    assert is_error
    assert "7" not in text and "0.9" not in text and "hidden" not in text


def test_read_file_pages(layout: tuple[Path, Path]) -> None:
    run, public = layout
    ws = Workspace(run_dir=run, public_dir=public)
    first = ws.read("run/gen_1/target_agent.py", 0, 10)
    assert first.startswith("[run/gen_1/target_agent.py: characters 0-10 of ")
    assert "read on with offset=10" in first
    assert ws.read("./run/gen_1/target_agent.py", 10, 1000).endswith(PARENT[10:])


# --------------------------------------------------------------------------------------------
# The turn loop, driven by a scripted adapter (the provider boundary is the adapter protocol)
# --------------------------------------------------------------------------------------------


class ScriptAdapter:
    """Replies from a list (the last repeats); records what it was sent."""

    model = "script"

    def __init__(self, replies: list[Turn | Exception]) -> None:
        self.replies = replies
        self.sent: list[list[dict[str, Any]]] = []
        self.tools: list[ToolSpec] = []

    def send(
        self, system: str, messages: list[dict[str, Any]], tools: list[ToolSpec], max_out: int
    ) -> Turn:
        self.sent.append([dict(m) for m in messages])
        self.tools = tools
        reply = self.replies[min(len(self.sent) - 1, len(self.replies) - 1)]
        if isinstance(reply, Exception):
            raise reply
        return reply


def call(name: str, **args: Any) -> Turn:
    return Turn(
        tool_calls=(ToolCall(id=f"c{name}", name=name, arguments=args),),
        usage={"input_tokens": 100, "output_tokens": 10, "cost_usd": 0.001},
    )


def feedback_request(run: Path, public: Path, **kw: Any) -> FeedbackRequest:
    return FeedbackRequest(
        next_gen=2,
        next_gen_dir=run / "gen_2",
        parent_gen=1,
        parent_gen_dir=run / "gen_1",
        parent_scaffold=PARENT,
        dev_metrics={"dev": {"score": 0.5}},
        context_md="# log\n",
        task_md="# the task\n",
        task_name="t",
        public_dir=public,
        **kw,
    )


DECIDE = {"lever": "harness", "rationale": "clearer prompt", "improvement_md": "# better\n"}


def test_full_feedback_step(layout: tuple[Path, Path]) -> None:
    run, public = layout
    seen: list[tuple[str, int]] = []

    def try_scaffold(code: str, n: int) -> dict[str, Any]:
        seen.append((code, n))
        return {"score": 1.0, "n_items": n, "items": [], "usage": {"calls": n}}

    adapter = ScriptAdapter(
        [
            call("read_file", path="run/gen_1/agent_execution.json"),
            call("write_scaffold", code=BETTER),
            call("test_scaffold", n_items=2),
            call("decide", **DECIDE, rl_algorithm="auto"),
        ]
    )
    out = feedback_step(adapter, feedback_request(run, public, try_scaffold=try_scaffold))
    assert out.scaffold == BETTER
    assert out.decision.lever == "harness" and out.decision.rationale == "clearer prompt"
    assert out.decision.rl_algorithm is None and out.decision.parent_gen == 1
    assert out.improvement_md == "# better\n"
    assert seen == [(BETTER, 2)]
    assert out.usage == {
        "input_tokens": 400,
        "output_tokens": 40,
        "cost_usd": 0.004,
        "calls": 4,
        "trials": {"calls": 2},
    }
    kinds = [t["type"] for t in out.transcript]
    assert kinds[:2] == ["start", "message"] and kinds[-1] == "end"
    assert [t["name"] for t in out.transcript if t["type"] == "tool"] == [
        "read_file",
        "write_scaffold",
        "test_scaffold",
        "decide",
    ]
    # every tool result went back to the model, paired with its call id
    last = adapter.sent[-1][-1]
    assert last["role"] == "tool" and last["results"][0]["id"] == "ctest_scaffold"
    assert '"score": 1.0' in last["results"][0]["content"]


def test_no_decision_keeps_the_parent(layout: tuple[Path, Path]) -> None:
    run, public = layout
    adapter = ScriptAdapter([call("write_scaffold", code=BETTER), Turn(text="done, I think")])
    out = feedback_step(adapter, feedback_request(run, public))
    assert out.scaffold == PARENT
    assert out.decision.lever == "harness"
    assert "produced no usable decision" in out.decision.rationale
    assert "2 times in a row without calling a tool" in out.decision.rationale
    assert "keeps the parent's scaffold (gen 1)" in out.decision.rationale


def test_model_error_keeps_the_parent(layout: tuple[Path, Path]) -> None:
    run, public = layout
    adapter = ScriptAdapter([RuntimeError("HTTP 500 after 4 retries")])
    out = feedback_step(adapter, feedback_request(run, public))
    assert out.scaffold == PARENT
    assert "HTTP 500 after 4 retries" in out.decision.rationale
    assert out.transcript[-2]["type"] == "error"


@pytest.mark.parametrize(
    ("limits", "reason"),
    [
        (AgentLimits(max_turns=3), "turn limit reached (max_turns=3)"),
        (AgentLimits(max_tokens=250), "token limit reached (330 of max_tokens=250)"),
    ],
)
def test_limits_end_the_step(layout: tuple[Path, Path], limits: AgentLimits, reason: str) -> None:
    run, public = layout
    adapter = ScriptAdapter([call("list_files")])
    out = feedback_step(adapter, feedback_request(run, public), limits)
    assert reason in out.decision.rationale
    assert out.scaffold == PARENT


def test_tool_errors_go_back_to_the_model(layout: tuple[Path, Path]) -> None:
    run, public = layout
    adapter = ScriptAdapter(
        [
            Turn(tool_calls=(ToolCall(id="a", name="read_file", arguments=None, raw="{bad"),)),
            call("write_scaffold", code="def solve(:"),
            call("no_such_tool"),
            call("test_scaffold"),
            call("decide", lever="harness", rationale="r", improvement_md="m"),
            call("decide", lever="harness", rationale="r", improvement_md="m"),
        ]
    )
    out = feedback_step(adapter, feedback_request(run, public))
    errors = [t["result"] for t in out.transcript if t["type"] == "tool" and t["is_error"]]
    assert "not a JSON object" in errors[0]
    assert "syntax error at line 1" in errors[1]
    assert "unknown tool 'no_such_tool'" in errors[2]
    assert "test_scaffold is not available" in errors[3]
    assert "keeps the parent's unchanged" in errors[4]  # asked once to confirm
    assert len(errors) == 5
    assert out.decision.lever == "harness" and out.scaffold is None


def test_trials_are_capped(layout: tuple[Path, Path]) -> None:
    run, public = layout
    n = {"trials": 0}

    def try_scaffold(code: str, k: int) -> dict[str, Any]:
        n["trials"] += 1
        return {"score": 0.0}

    adapter = ScriptAdapter([call("test_scaffold")] * 3 + [call("decide", **DECIDE)])
    out = feedback_step(
        adapter,
        feedback_request(run, public, try_scaffold=try_scaffold),
        AgentLimits(max_trials=2),
    )
    assert n["trials"] == 2
    assert any("the limit" in t["result"] for t in out.transcript if t["type"] == "tool")


def test_meta_step_tools_and_fallback(layout: tuple[Path, Path]) -> None:
    _, public = layout
    request = MetaRequest(
        gen=1,
        gen_dir=public.parent,
        task_name="t",
        task_md="# the task\n",
        reference_scaffold=PARENT,
        public_dir=public,
    )
    adapter = ScriptAdapter([call("decide", rationale="reference is fine", improvement_md="m")])
    out = meta_step(adapter, request)
    assert out.scaffold == PARENT and out.decision.source == "meta"
    decide = next(t for t in adapter.tools if t.name == "decide")
    assert "lever" not in decide.parameters["properties"]  # gen 1 is always harness
    silent = meta_step(ScriptAdapter([Turn(text="hmm")]), request)
    assert silent.scaffold == PARENT
    assert "the reference scaffold is generation 1" in silent.decision.rationale


def test_limits_from_settings() -> None:
    limits = AgentLimits.from_settings({"max_turns": "5", "stream": "1"})
    assert limits.max_turns == 5 and limits.max_tokens == AgentLimits().max_tokens
    with pytest.raises(Exception, match="max_turns='many': expected a whole number"):
        AgentLimits.from_settings({"max_turns": "many"})


def test_cut_off_tool_call_is_not_run(layout: tuple[Path, Path]) -> None:
    run, public = layout
    cut = Turn(
        tool_calls=(ToolCall(id="w", name="write_scaffold", arguments={"code": "def solve(i"}),),
        stop_reason="max_tokens",
    )
    adapter = ScriptAdapter([cut, call("decide", lever="stop", rationale="r", improvement_md="m")])
    out = feedback_step(adapter, feedback_request(run, public), AgentLimits(max_output_tokens=99))
    first = next(t for t in out.transcript if t["type"] == "tool")
    assert first["is_error"] and "output limit (max_output_tokens=99)" in first["result"]
    assert out.scaffold is None and out.decision.lever == "stop"
