"""The two roles: :func:`meta_step` and :func:`feedback_step` put together tools, prompts and
the turn loop, and turn what the agent left into an
:class:`~sia_core.contracts.backend.AgentOutcome`. An agent that produces nothing usable (no
decision, an error) yields an outcome that keeps the parent scaffold and says why."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from sia_core.contracts.backend import AgentOutcome, FeedbackRequest, MetaRequest
from sia_core.contracts.records import Decision
from sia_core.services.agents.prompts import (
    FEEDBACK_TEXT,
    META_TEXT,
    SYSTEM,
    clip_text,
    feedback_prompt,
)
from sia_core.services.agents.protocol import AgentLimits, ModelAdapter
from sia_core.services.agents.tools import AgentTools
from sia_core.services.agents.turns import AgentRun, run_agent
from sia_core.services.agents.workspace import Workspace


def _no_decision(role: str, run: AgentRun) -> str:
    return f"the {role} agent produced no usable decision ({run.stop})"


def meta_tools(request: MetaRequest, limits: AgentLimits) -> AgentTools:
    """The Meta-Agent's tools: the task's public files, its task.md and reference scaffold."""
    documents = {
        "task/task.md": request.task_md,
        "task/reference/reference_target_agent.py": request.reference_scaffold,
    }
    if request.sample_task_descriptions:
        documents["task/reference/SAMPLE_TASK_DESCRIPTIONS.md"] = request.sample_task_descriptions
    return AgentTools(
        role="meta",
        workspace=Workspace(public_dir=request.public_dir, documents=documents),
        parent_scaffold=request.reference_scaffold,
        try_scaffold=request.try_scaffold,
        limits=limits,
    )


def meta_outcome(
    request: MetaRequest, tools: AgentTools, run: AgentRun, agent: str = "meta"
) -> AgentOutcome:
    """What a Meta step left in ``tools``; without a decision the reference is generation 1."""
    decision = tools.decision
    if decision is None:
        why = _no_decision(agent, run) + "; the reference scaffold is generation 1"
        return AgentOutcome(
            decision=Decision(lever="harness", source="meta", rationale=why),
            improvement_md=f"{why}.\n",
            scaffold=request.reference_scaffold,
            transcript=tuple(run.transcript),
            usage=run.usage,
        )
    return AgentOutcome(
        decision=Decision(lever="harness", source="meta", rationale=decision["rationale"]),
        improvement_md=decision["improvement_md"],
        scaffold=tools.scaffold if tools.scaffold is not None else request.reference_scaffold,
        transcript=tuple(run.transcript),
        usage=run.usage,
    )


def meta_step(
    adapter: ModelAdapter, request: MetaRequest, limits: AgentLimits | None = None
) -> AgentOutcome:
    """Generation 1 by a tool-using agent; without a decision the reference scaffold is used."""
    limits = limits or AgentLimits()
    tools = meta_tools(request, limits)
    prompt = (
        f"Task: {request.task_name}\n\n## task.md\n\n{clip_text(request.task_md, 20_000)}\n\n"
        f"## reference_target_agent.py\n\n```python\n{request.reference_scaffold}\n```\n\n"
        "Other files: call list_files."
    )
    system = SYSTEM.format(title="Meta-Agent", role_text=META_TEXT)
    run = run_agent(adapter, system=system, prompt=prompt, tools=tools, limits=limits)
    return meta_outcome(request, tools, run)


def feedback_tools(request: FeedbackRequest, limits: AgentLimits) -> AgentTools:
    """The Feedback-Agent's tools: the run's readable files, the task's public files."""
    workspace = Workspace(
        run_dir=request.run_dir or Path(request.parent_gen_dir).parent,
        public_dir=request.public_dir,
        documents={"task/task.md": request.task_md},
    )
    return AgentTools(
        role="feedback",
        workspace=workspace,
        parent_scaffold=request.parent_scaffold,
        try_scaffold=request.try_scaffold,
        limits=limits,
    )


def feedback_outcome(
    request: FeedbackRequest, tools: AgentTools, run: AgentRun, agent: str = "feedback"
) -> AgentOutcome:
    """What a Feedback step left in ``tools``; without a decision the parent scaffold stays."""
    decision = tools.decision
    if decision is None:
        why = _no_decision(agent, run) + (
            f"; generation {request.next_gen} keeps the parent's scaffold (gen {request.parent_gen})"
        )
        return AgentOutcome(
            decision=Decision(
                lever="harness", source="feedback", rationale=why, parent_gen=request.parent_gen
            ),
            improvement_md=f"{why}.\n",
            scaffold=request.parent_scaffold,
            transcript=tuple(run.transcript),
            usage=run.usage,
        )
    return AgentOutcome(
        decision=Decision(
            lever=decision["lever"],
            source="feedback",
            rationale=decision["rationale"],
            parent_gen=request.parent_gen,
            rl_algorithm=decision["rl_algorithm"],
        ),
        improvement_md=decision["improvement_md"],
        scaffold=tools.scaffold,
        transcript=tuple(run.transcript),
        usage=run.usage,
    )


def feedback_step(
    adapter: ModelAdapter, request: FeedbackRequest, limits: AgentLimits | None = None
) -> AgentOutcome:
    """The Feedback-Agent by a tool-using agent; without a decision the parent scaffold stays."""
    limits = limits or AgentLimits()
    tools = feedback_tools(request, limits)
    system = SYSTEM.format(title="Feedback-Agent", role_text=FEEDBACK_TEXT)
    run = run_agent(
        adapter, system=system, prompt=feedback_prompt(request), tools=tools, limits=limits
    )
    return feedback_outcome(request, tools, run)


def call_role(
    role: str,
    call: Callable[[], AgentOutcome],
    *,
    fallback_text: str,
    parent_gen: int | None,
    fallback_why: str,
) -> AgentOutcome:
    """``call()``'s outcome; if it raises or returns something else, an outcome that keeps
    ``fallback_text`` and says why (a broken backend never stops the run)."""
    try:
        outcome = call()
        if not isinstance(outcome, AgentOutcome):
            raise TypeError(f"expected AgentOutcome, got {type(outcome).__name__}")
        return outcome
    except Exception as exc:
        why = f"the {role} agent failed ({type(exc).__name__}: {exc}); {fallback_why}"
        return AgentOutcome(
            decision=Decision(lever="harness", source="core", rationale=why, parent_gen=parent_gen),
            improvement_md=f"{why}.\n",
            scaffold=fallback_text,
            transcript=({"role": role, "error": f"{type(exc).__name__}: {exc}"},),
        )


NOTES_HEADING = "## Notes from sia"


def improvement_md(outcome: AgentOutcome, decision: Decision) -> str:
    """``improvement.md``: the agent's account, then sia's notes on what it changed."""
    return with_notes(outcome.improvement_md, decision.notes)


def with_notes(text: str, notes: Sequence[str]) -> str:
    """``text`` (an ``improvement.md``) with ``notes`` added under sia's heading."""
    text = text.rstrip() + "\n"
    if notes:
        text += ("" if NOTES_HEADING in text else f"\n{NOTES_HEADING}\n\n") + "".join(
            f"- {n}\n" for n in notes
        )
    return text
