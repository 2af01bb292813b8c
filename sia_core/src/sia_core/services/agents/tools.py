"""The tools of one Meta/Feedback step: ``list_files``, ``read_file``, ``write_scaffold``
(syntax-checked), ``test_scaffold`` (the candidate on a few public train items, through the
run's sandbox and gateway, via the request's ``try_scaffold`` callback) and ``decide``."""

from __future__ import annotations

import ast
import json
from typing import Any

from sia_core.contracts.backend import TryScaffold
from sia_core.contracts.records import LEVERS
from sia_core.services.agents.protocol import AgentLimits, ToolCall, ToolError, ToolSpec
from sia_core.services.agents.workspace import Workspace

MAX_LISTED = 400


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
