"""A provider-neutral tool-using agent for the Meta-Agent and Feedback-Agent roles.

An LLM backend supplies a small :class:`ModelAdapter` (send the conversation and the tool
definitions, get back text, tool calls and usage); everything else is shared here:

- :class:`Workspace`: the files of the run the agent may read, by an allowlist. Never the task's
  ``data/private``, a generation's ``sealed/`` folder or its working folders (where test outputs
  live); ``..`` and symlinks that leave an allowed folder are refused.
- :class:`AgentTools`: ``list_files``, ``read_file``, ``write_scaffold`` (syntax-checked),
  ``test_scaffold`` (the candidate on a few public train items, through the run's sandbox and
  gateway, via the request's ``try_scaffold`` callback) and ``decide``.
- :func:`run_agent`: the turn loop with limits on turns and tokens; every turn, tool call and
  result goes into the transcript the loop saves as ``gen_N/agent_transcript.json``.
- :func:`meta_step` / :func:`feedback_step`: prompts, tools, loop and the resulting
  :class:`~sia_core.backend.AgentOutcome`. An agent that produces nothing usable (no decision,
  an error) yields an outcome that keeps the parent scaffold and says why.

Neutral messages: ``{"role": "user", "content": str}``, ``{"role": "assistant", "content": str,
"tool_calls": [{"id", "name", "arguments"}]}`` and ``{"role": "tool", "results": [{"id", "name",
"content", "is_error"}]}``; adapters translate them to their provider's format.
"""

from __future__ import annotations

import ast
import json
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path, PurePosixPath
from typing import Any, Protocol

import attrs

from .backend import AgentOutcome, FeedbackRequest, MetaRequest, TryScaffold
from .errors import SiaError
from .records import LEVERS, Decision, _tuple

__all__ = [
    "AgentLimits",
    "AgentRun",
    "AgentTools",
    "ModelAdapter",
    "ToolCall",
    "ToolSpec",
    "Turn",
    "Workspace",
    "clip_text",
    "dev_summary",
    "feedback_outcome",
    "feedback_prompt",
    "feedback_step",
    "feedback_tools",
    "meta_outcome",
    "meta_step",
    "meta_tools",
    "run_agent",
    "usage_total",
]

#: files of a generation folder an agent may read (dev-only artifacts)
GEN_FILES = frozenset(
    {
        "target_agent.py",
        "diff.patch",
        "decision.json",
        "improvement.md",
        "agent_execution.json",
        "metrics.json",
        "agent_transcript.json",
        "train_result.json",
        "rejected_target_agent.py",
    }
)
#: files at the top of the run folder an agent may read
RUN_FILES = frozenset({"context.md", "archive.json"})
#: path parts that are never readable, wherever they occur
FORBIDDEN_PARTS = frozenset({"private", "sealed"})
MAX_LISTED = 400


# --------------------------------------------------------------------------------------------
# What an adapter sends and returns
# --------------------------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class ToolSpec:
    """A tool the model may call: name, description and a JSON schema of its arguments."""

    name: str
    description: str
    parameters: dict[str, Any]


@attrs.frozen(kw_only=True)
class ToolCall:
    """One tool call of the model. ``arguments`` is ``None`` when they were not a JSON object
    (``raw`` then holds what the model sent)."""

    id: str
    name: str
    arguments: dict[str, Any] | None
    raw: str = ""


@attrs.frozen(kw_only=True)
class Turn:
    """One model reply: text, tool calls, and usage (``input_tokens``, ``output_tokens``,
    ``cost_usd`` and provider extras such as cache token counts)."""

    text: str = ""
    tool_calls: tuple[ToolCall, ...] = attrs.field(default=(), converter=_tuple)
    usage: dict[str, Any] = attrs.field(factory=dict)
    stop_reason: str = ""
    model: str = ""


class ModelAdapter(Protocol):
    """A provider behind the agent loop. ``send`` may raise; the loop records the error."""

    model: str

    def send(
        self,
        system: str,
        messages: list[dict[str, Any]],
        tools: list[ToolSpec],
        max_output_tokens: int,
    ) -> Turn: ...


def _int_setting(settings: Mapping[str, Any], key: str, default: int) -> int:
    try:
        value = int(settings.get(key, default))
    except (TypeError, ValueError):
        raise SiaError(
            f"--backend-opt {key}={settings.get(key)!r}: expected a whole number"
        ) from None
    if value < 1:
        raise SiaError(f"--backend-opt {key}={value}: expected a number of 1 or more")
    return value


@attrs.frozen(kw_only=True)
class AgentLimits:
    """Limits of one Meta/Feedback step (``--backend-opt KEY=VALUE`` sets each)."""

    max_turns: int = 30  # model calls
    max_tokens: int = 1_000_000  # input + output tokens over the step
    max_output_tokens: int = 16_000  # per model call (a whole scaffold fits)
    max_trials: int = 4  # test_scaffold calls
    trial_items: int = 3  # train items per trial, by default
    max_read_chars: int = 40_000  # per read_file call
    max_no_tool_replies: int = 2  # consecutive replies without a tool call before giving up

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> AgentLimits:
        """Limits from backend settings; unknown keys are left to the backend."""
        default = cls()
        values = {
            f.name: _int_setting(settings, f.name, getattr(default, f.name))
            for f in attrs.fields(cls)
        }
        return cls(**values)


# --------------------------------------------------------------------------------------------
# Readable files
# --------------------------------------------------------------------------------------------


def _run_rule(rel: PurePosixPath) -> bool:
    """Whether a path inside the run folder is agent-readable (dev artifacts only)."""
    parts = rel.parts
    if len(parts) == 1:
        return parts[0] in RUN_FILES
    return len(parts) == 2 and parts[0].startswith("gen_") and parts[1] in GEN_FILES


def _any_rule(rel: PurePosixPath) -> bool:
    return True


class Workspace:
    """The files an agent may read, under virtual names: ``run/...`` (the run folder),
    ``task/public/...`` (the task's public data) and in-memory ``documents``."""

    def __init__(
        self,
        *,
        run_dir: Path | None = None,
        public_dir: Path | None = None,
        documents: Mapping[str, str] | None = None,
    ) -> None:
        self.roots: dict[str, tuple[Path, Callable[[PurePosixPath], bool]]] = {}
        if run_dir is not None:
            self.roots["run"] = (Path(run_dir), _run_rule)
        if public_dir is not None:
            self.roots["task/public"] = (Path(public_dir), _any_rule)
        self.documents = dict(documents or {})

    def _allowed(self, prefix: str, path: Path) -> bool:
        """``path`` (inside root ``prefix``) is a regular file whose real location stays in the
        root and passes the root's rule, with no forbidden part, before or after symlinks."""
        root, rule = self.roots[prefix]
        try:
            real_root = root.resolve(strict=True)
            rel = path.relative_to(root)
            real = path.resolve(strict=True)
            real_rel = real.relative_to(real_root)
        except (OSError, ValueError, RuntimeError):
            return False
        for candidate in (rel, real_rel):
            posix = PurePosixPath(candidate.as_posix())
            if FORBIDDEN_PARTS.intersection(posix.parts) or not rule(posix):
                return False
        return real.is_file()

    def list(self) -> list[tuple[str, int]]:
        """Every readable file as ``(virtual path, size in bytes)``, sorted."""
        found: list[tuple[str, int]] = [(n, len(t.encode())) for n, t in self.documents.items()]
        for prefix, (root, _) in self.roots.items():
            if not root.is_dir():
                continue
            for dirpath, dirnames, filenames in os.walk(root):
                dirnames[:] = [d for d in dirnames if d not in FORBIDDEN_PARTS]
                for name in filenames:
                    path = Path(dirpath) / name
                    if self._allowed(prefix, path):
                        rel = path.relative_to(root).as_posix()
                        found.append((f"{prefix}/{rel}", path.stat().st_size))
        return sorted(found)

    def resolve(self, name: str) -> Path | str:
        """The file (or document text) behind a virtual path; :class:`ToolError` if refused."""
        clean = str(name).strip()
        clean = clean[2:] if clean.startswith("./") else clean
        if clean in self.documents:
            return self.documents[clean]
        posix = PurePosixPath(clean)
        if posix.is_absolute() or ".." in posix.parts:
            raise ToolError(f"{name!r}: give a path from list_files (no absolute paths, no '..')")
        for prefix in sorted(self.roots, key=len, reverse=True):
            if clean.startswith(prefix + "/"):
                root, _ = self.roots[prefix]
                path = root / clean[len(prefix) + 1 :]
                if self._allowed(prefix, path):
                    return path
                break
        raise ToolError(f"{name!r} is not a readable file; call list_files to see which are")

    def read(self, name: str, offset: int = 0, limit: int = 40_000) -> str:
        """Up to ``limit`` characters of a file from ``offset``, with a header saying where."""
        target = self.resolve(name)
        if isinstance(target, Path):
            text = target.read_bytes().decode("utf-8", errors="replace")
        else:
            text = target
        offset = max(0, int(offset))
        chunk = text[offset : offset + max(1, int(limit))]
        end = offset + len(chunk)
        more = f"; read on with offset={end}" if end < len(text) else ""
        return f"[{name}: characters {offset}-{end} of {len(text)}{more}]\n{chunk}"


# --------------------------------------------------------------------------------------------
# Tools
# --------------------------------------------------------------------------------------------


class ToolError(Exception):
    """A tool call that cannot be done; the message goes back to the model."""


def _defines_solve(tree: ast.Module) -> bool:
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == "solve":
            return True
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "solve" for t in node.targets
        ):
            return True
    return False


def _line_delta(old: str, new: str) -> str:
    import difflib

    plus = minus = 0
    for line in difflib.unified_diff(old.splitlines(), new.splitlines(), lineterm="", n=0):
        if line.startswith("+") and not line.startswith("+++"):
            plus += 1
        elif line.startswith("-") and not line.startswith("---"):
            minus += 1
    return f"+{plus} -{minus} lines vs the parent"


class AgentTools:
    """The tools of one step and the state they build: the scaffold written and the decision."""

    def __init__(
        self,
        *,
        role: str,
        workspace: Workspace,
        parent_scaffold: str,
        try_scaffold: TryScaffold | None,
        limits: AgentLimits,
    ) -> None:
        self.role = role
        self.workspace = workspace
        self.parent_scaffold = parent_scaffold
        self.try_scaffold = try_scaffold
        self.limits = limits
        self.scaffold: str | None = None
        self.decision: dict[str, Any] | None = None
        self.trials: list[dict[str, Any]] = []
        self.trial_usage: dict[str, Any] = {}
        self._warned_unchanged = False

    def specs(self) -> list[ToolSpec]:
        """The tool definitions sent to the model."""
        decide_props: dict[str, Any] = {
            "rationale": {"type": "string", "description": "why, citing what you read"},
            "improvement_md": {
                "type": "string",
                "description": "markdown for improvement.md: what changed and what to expect",
            },
        }
        required = ["rationale", "improvement_md"]
        if self.role == "feedback":
            decide_props = {
                "lever": {
                    "type": "string",
                    "enum": list(LEVERS),
                    "description": "harness: use the scaffold you wrote; weights: LoRA RL on "
                    "the task model through the frozen parent scaffold; both; stop: end the run",
                },
                "rl_algorithm": {
                    "type": "string",
                    "description": "for weights/both: an RL objective name (grpo, ppo, "
                    "entropic, ...) or 'auto' to choose by the reward's shape",
                },
                **decide_props,
            }
            required = ["lever", *required]
        return [
            ToolSpec(
                name="list_files",
                description="List the files you may read (run artifacts, the task's public "
                "data, reference documents) with their sizes.",
                parameters={"type": "object", "properties": {}},
            ),
            ToolSpec(
                name="read_file",
                description="Read a file from list_files, in pages of characters.",
                parameters={
                    "type": "object",
                    "properties": {
                        "path": {"type": "string"},
                        "offset": {"type": "integer", "minimum": 0},
                        "limit": {"type": "integer", "minimum": 1},
                    },
                    "required": ["path"],
                },
            ),
            ToolSpec(
                name="write_scaffold",
                description="Write the next target_agent.py (the whole file). It is "
                "syntax-checked; the last one written is used.",
                parameters={
                    "type": "object",
                    "properties": {"code": {"type": "string"}},
                    "required": ["code"],
                },
            ),
            ToolSpec(
                name="test_scaffold",
                description="Run the scaffold you wrote (else the parent's) on a few public "
                "train items in the sandbox: answers, errors and the score on those items.",
                parameters={
                    "type": "object",
                    "properties": {"n_items": {"type": "integer", "minimum": 1, "maximum": 10}},
                },
            ),
            ToolSpec(
                name="decide",
                description="Finish with your decision. Call it once, last.",
                parameters={"type": "object", "properties": decide_props, "required": required},
            ),
        ]

    def call(self, call: ToolCall) -> tuple[str, bool]:
        """Run one tool call: ``(result text, is_error)``. Never raises."""
        if call.arguments is None:
            return (
                f"the arguments of {call.name} were not a JSON object ({call.raw[:200]!r}); "
                "call it again with valid JSON arguments",
                True,
            )
        handler = getattr(self, f"_tool_{call.name}", None)
        if handler is None:
            names = ", ".join(s.name for s in self.specs())
            return f"unknown tool {call.name!r}; the tools are: {names}", True
        try:
            return str(handler(**call.arguments)), False
        except ToolError as exc:
            return str(exc), True
        except TypeError as exc:
            return f"bad arguments for {call.name}: {exc}", True
        except Exception as exc:  # a tool bug must reach the model, not end the step
            return f"{call.name} failed: {type(exc).__name__}: {exc}", True

    def _tool_list_files(self) -> str:
        files = self.workspace.list()
        lines = [f"{name}\t{size}" for name, size in files[:MAX_LISTED]]
        if len(files) > MAX_LISTED:
            lines.append(f"... and {len(files) - MAX_LISTED} more")
        return "\n".join(lines) or "(no readable files)"

    def _tool_read_file(self, path: str, offset: int = 0, limit: int | None = None) -> str:
        cap = self.limits.max_read_chars
        return self.workspace.read(path, offset, min(int(limit or cap), cap))

    def _tool_write_scaffold(self, code: str) -> str:
        if not isinstance(code, str) or not code.strip():
            raise ToolError("write_scaffold needs 'code': the whole target_agent.py as a string")
        try:
            tree = ast.parse(code)
        except SyntaxError as exc:
            raise ToolError(
                f"syntax error at line {exc.lineno}: {exc.msg}; nothing was saved, fix it"
            ) from None
        self.scaffold = code
        kind = "per-item (defines solve)" if _defines_solve(tree) else "program-style (no solve)"
        delta = _line_delta(self.parent_scaffold, code)
        return f"saved target_agent.py: {len(code.splitlines())} lines, {kind}, {delta}"

    def _tool_test_scaffold(self, n_items: int | None = None) -> str:
        if self.try_scaffold is None:
            raise ToolError("test_scaffold is not available in this run; decide without it")
        if len(self.trials) >= self.limits.max_trials:
            raise ToolError(f"test_scaffold was used {len(self.trials)} times, the limit")
        n = max(1, min(int(n_items or self.limits.trial_items), 10))
        code = self.scaffold if self.scaffold is not None else self.parent_scaffold
        result = self.try_scaffold(code, n)
        self.trials.append(result)
        for key, value in (result.get("usage") or {}).items():
            if isinstance(value, int | float):
                self.trial_usage[key] = self.trial_usage.get(key, 0) + value
        which = "your scaffold" if self.scaffold is not None else "the parent scaffold"
        return f"{which} on {n} train item(s):\n" + json.dumps(result, indent=1, default=str)

    def _tool_decide(
        self,
        rationale: str,
        improvement_md: str,
        lever: str = "harness",
        rl_algorithm: str | None = None,
    ) -> str:
        if self.role == "meta":
            lever = "harness"
        if lever not in LEVERS:
            raise ToolError(f"lever must be one of {', '.join(LEVERS)}, not {lever!r}")
        if not str(rationale).strip():
            raise ToolError("decide needs a non-empty rationale")
        if (
            lever in ("harness", "both")
            and self.scaffold is None
            and self.role == "feedback"
            and not self._warned_unchanged
        ):
            self._warned_unchanged = True
            raise ToolError(
                f"lever {lever} with no scaffold written keeps the parent's unchanged; call "
                "write_scaffold first, choose another lever, or call decide again to confirm"
            )
        algo = str(rl_algorithm).strip() if rl_algorithm else None
        self.decision = {
            "lever": lever,
            "rl_algorithm": None if algo in (None, "", "auto") else algo,
            "rationale": str(rationale).strip(),
            "improvement_md": str(improvement_md),
        }
        return f"decision recorded: {lever}"


# --------------------------------------------------------------------------------------------
# The turn loop
# --------------------------------------------------------------------------------------------


@attrs.define
class AgentRun:
    """What one step's loop produced."""

    transcript: list[dict[str, Any]] = attrs.field(factory=list)
    usage: dict[str, Any] = attrs.field(factory=dict)
    stop: str = ""  # why the loop ended


USAGE_KEYS = ("input_tokens", "output_tokens", "cost_usd", "calls")
#: stop reasons of a reply cut off by the output limit (Anthropic, OpenAI)
TRUNCATED = ("max_tokens", "length")


def usage_total(turns: list[dict[str, Any]]) -> dict[str, Any]:
    """Sum of per-call usage dicts: ``input_tokens``, ``output_tokens``, ``cost_usd``, ``calls``
    and any other numeric key (e.g. cache token counts)."""
    total: dict[str, Any] = {"input_tokens": 0, "output_tokens": 0, "cost_usd": 0.0, "calls": 0}
    for usage in turns:
        total["calls"] += 1
        for key, value in usage.items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                total[key] = total.get(key, 0) + value
    total["cost_usd"] = round(float(total["cost_usd"]), 8)
    return total


def run_agent(
    adapter: ModelAdapter,
    *,
    system: str,
    prompt: str,
    tools: AgentTools,
    limits: AgentLimits,
) -> AgentRun:
    """Talk with the model until it decides, or a limit, an error or silence ends the step."""
    run = AgentRun()
    specs = tools.specs()
    messages: list[dict[str, Any]] = [{"role": "user", "content": prompt}]
    run.transcript.append({"type": "start", "model": adapter.model, "system": system})
    run.transcript.append({"type": "message", "role": "user", "content": prompt})
    per_call: list[dict[str, Any]] = []
    silent = 0
    for turn_no in range(1, limits.max_turns + 1):
        used = sum(int(u.get("input_tokens", 0)) + int(u.get("output_tokens", 0)) for u in per_call)
        if used >= limits.max_tokens:
            run.stop = f"token limit reached ({used} of max_tokens={limits.max_tokens})"
            break
        t0 = time.monotonic()
        try:
            turn = adapter.send(system, messages, specs, limits.max_output_tokens)
        except Exception as exc:
            run.stop = f"the model call failed: {type(exc).__name__}: {exc}"
            run.transcript.append({"type": "error", "turn": turn_no, "error": run.stop})
            break
        per_call.append(dict(turn.usage))
        run.transcript.append(
            {
                "type": "assistant",
                "turn": turn_no,
                "text": turn.text,
                "tool_calls": [attrs.asdict(c) for c in turn.tool_calls],
                "stop_reason": turn.stop_reason,
                "usage": dict(turn.usage),
                "seconds": round(time.monotonic() - t0, 3),
            }
        )
        messages.append(
            {
                "role": "assistant",
                "content": turn.text,
                "tool_calls": [
                    {"id": c.id, "name": c.name, "arguments": c.arguments or {}}
                    for c in turn.tool_calls
                ],
            }
        )
        if not turn.tool_calls:
            silent += 1
            if silent >= limits.max_no_tool_replies:
                run.stop = f"the model replied {silent} times in a row without calling a tool"
                break
            nudge = "Use the tools: call them to work, and finish with the decide tool."
            messages.append({"role": "user", "content": nudge})
            run.transcript.append({"type": "message", "role": "user", "content": nudge})
            continue
        silent = 0
        results = []
        cut_off = turn.stop_reason in TRUNCATED
        for call in turn.tool_calls:
            t1 = time.monotonic()
            if cut_off:  # the arguments may parse but are incomplete: never act on them
                content, is_error = (
                    f"your reply hit the output limit (max_output_tokens="
                    f"{limits.max_output_tokens}), so this call's arguments are cut off and it "
                    "was not run; make it shorter (e.g. a more compact scaffold)",
                    True,
                )
            else:
                content, is_error = tools.call(call)
            results.append(
                {"id": call.id, "name": call.name, "content": content, "is_error": is_error}
            )
            run.transcript.append(
                {
                    "type": "tool",
                    "turn": turn_no,
                    "id": call.id,
                    "name": call.name,
                    "arguments": call.arguments if call.arguments is not None else call.raw,
                    "result": content,
                    "is_error": is_error,
                    "seconds": round(time.monotonic() - t1, 3),
                }
            )
        messages.append({"role": "tool", "results": results})
        if tools.decision is not None:
            run.stop = "decided"
            break
    else:
        run.stop = f"turn limit reached (max_turns={limits.max_turns})"
    run.usage = usage_total(per_call)
    if tools.trial_usage:
        run.usage["trials"] = dict(tools.trial_usage)
    run.transcript.append({"type": "end", "stop": run.stop, "usage": run.usage})
    return run


# --------------------------------------------------------------------------------------------
# The two roles
# --------------------------------------------------------------------------------------------

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
