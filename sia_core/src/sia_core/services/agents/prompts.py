"""What the Meta-Agent and Feedback-Agent are told: the system prompt, each role's brief and
the Feedback-Agent's first message."""

from __future__ import annotations

import json
from typing import Any

from sia_core.contracts.backend import FeedbackRequest

SYSTEM = """\
You are the {title} of sia, a framework in which an AI system improves itself on a benchmark
task, generation after generation. The task agent is a Python scaffold, target_agent.py, that
runs in a sandbox and calls the task model only through a gateway.

The scaffold contract (per item):
    PARAMS = {{...}}                  # optional tunable settings
    def setup(ctx): ...              # optional, once per worker; ctx.train = train items
    def solve(item, ctx):            # required; item.id, item.input; return the answer
        reply = ctx.llm([{{"role": "user", "content": str(item.input)}}], max_tokens=64)
        ctx.log("note", "anything worth seeing in the trajectory")
        return reply.strip()
ctx.llm(prompt_or_messages, **params) -> str and ctx.chat(messages, **params) -> dict call the
task model; ctx.params, ctx.public_dir, ctx.work_dir and ctx.log(kind, content) are there too.
Only the standard library is sure to be installed. Missing or unparsable answers score as wrong.

{role_text}

Work with the tools: list_files and read_file to study the task and the evidence,
write_scaffold to save the whole next target_agent.py (syntax-checked), test_scaffold to run it
on a few public train items before you commit to it, and decide to finish. Private labels and
test results are never available to you, and no decision may rely on them. Be concrete: every
change should follow from something you read (a failure pattern in the trajectories, the
answer format, the metric).
"""

META_TEXT = """\
Your job (generation 1): write the first scaffold from the task description and the reference
scaffold. Start from the reference unless you see a clear improvement; keep it robust. Then call
decide with a rationale and improvement.md."""

FEEDBACK_TEXT = """\
Your job: read the parent generation (its code, its trajectories in agent_execution.json, its
dev metrics in metrics.json, the evolution log context.md) and decide how the next generation
is made. Levers: harness (write a better scaffold; the weights stay), weights (LoRA RL on the
task model through the parent scaffold, which stays frozen; choose an RL objective or 'auto'),
both, or stop (no further gain expected). Then call decide."""


def clip_text(text: str, limit: int) -> str:
    """``text`` cut at ``limit`` characters, with a note of how much more there was."""
    return text if len(text) <= limit else text[:limit] + f"\n[... {len(text) - limit} more]"


def dev_summary(metrics: dict[str, Any]) -> str:
    """A generation's metrics as JSON without the per-item scores (they are in metrics.json)."""
    dev = dict(metrics.get("dev") or {})
    dev.pop("per_item", None)
    keep = {k: v for k, v in metrics.items() if k not in ("dev", "test")}
    return json.dumps({**keep, "dev": dev}, default=str)


def feedback_prompt(
    request: FeedbackRequest, *, max_chars: int = 12_000, with_task_md: bool = True
) -> str:
    """The Feedback-Agent's first message (every backend's): the parent's dev metrics, the
    dev-only history, what the lever may be, where the evidence is, context.md and the parent's
    scaffold; each part clipped so the whole stays near ``max_chars`` times three."""
    parent = f"run/gen_{request.parent_gen}"
    third = max_chars // 3
    history = json.dumps(list(request.history), default=str)
    lines = [
        f"Task: {request.task_name} (metric direction: {request.direction}). You are making "
        f"generation {request.next_gen} from its parent, generation {request.parent_gen}.",
        "",
        f"Parent's dev metrics: {clip_text(dev_summary(request.dev_metrics), third)}",
        "",
        f"History (dev only): {clip_text(history, third)}",
        "",
    ]
    if request.weights_blockers:
        lines.append("The weights lever is NOT possible: " + "; ".join(request.weights_blockers))
    elif request.trainable_task_model:
        lines.append("The task model is trainable: the weights lever is possible.")
    if request.lever_override:
        lines.append(f"The user fixed the lever to {request.lever_override!r}.")
    lines += [
        "",
        f"Evidence: {parent}/agent_execution.json (full trajectories of every dev item), "
        f"{parent}/metrics.json, run/context.md, task/public/ (task data). Read before you act.",
        "",
        f"## context.md\n\n{clip_text(request.context_md, max_chars)}",
    ]
    if with_task_md:
        lines += ["", f"## task.md\n\n{clip_text(request.task_md, max_chars)}"]
    lines += [
        "",
        f"## Parent scaffold ({parent}/target_agent.py)\n\n```python\n"
        f"{clip_text(request.parent_scaffold, max_chars)}\n```",
        "",
        "Finish by calling decide.",
    ]
    return "\n".join(lines)
