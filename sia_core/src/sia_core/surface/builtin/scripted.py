"""The ``scripted`` backend: deterministic Meta/Feedback roles and task model, for tests and demos.

It replays canned scaffolds and decisions from a script file (JSON), keyed by generation number
so a resumed run replays exactly what an uninterrupted one would. Without a script it keeps the
reference scaffold and decides ``harness`` with no change. Script format::

    {
      "meta": {"scaffold": "reference" | "gen1.py", "improvement": "..."},
      "feedback": {
        "2": {"lever": "harness", "scaffold": "gen2.py", "rationale": "why"},
        "3": {"lever": "weights", "rl_algorithm": "grpo", "rationale": "why"},
        "4": {"lever": "stop", "rationale": "why"},
        "5": {"fail": "raise this error"}
      },
      "task_model": {
        "name": "scripted", "trainable": false,
        "rules": [{"match": "What is (\\\\d+)", "reply": "It is \\\\1"}],
        "default": "echo",
        "adapter_rules": [...]       # replies once a (fake) adapter is served
      }
    }

Scaffold paths are relative to the script file; ``{"text": "..."}`` gives a scaffold inline.
Select it with ``--backend scripted --backend-opt script=PATH``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from sia_core.contracts.backend import (
    AgentOutcome,
    BackendOptions,
    FeedbackRequest,
    MetaRequest,
    TaskModel,
)
from sia_core.contracts.errors import SiaError
from sia_core.contracts.records import Decision


class ScriptedTaskModel(TaskModel):
    """A task model answering by regex rules; the default reply echoes the last user message."""

    free = True

    def __init__(self, spec: dict[str, Any] | None = None, adapter: str | None = None) -> None:
        spec = spec or {}
        self.spec = spec
        self.name: str = spec.get("name", "scripted")
        self.trainable: bool = bool(spec.get("trainable", False))
        self.base_model: str = spec.get("base_model", "scripted-base")
        self.adapter = adapter
        # with an adapter, "adapter_rules"/"adapter_default" stand for the trained weights
        prefix = "adapter_" if adapter and "adapter_rules" in spec else ""
        self.rules = [
            (re.compile(r["match"], re.S), r["reply"]) for r in spec.get(f"{prefix}rules", [])
        ]
        self.default: str = spec.get(f"{prefix}default", spec.get("default", "echo"))

    def with_adapter(self, adapter: str | None) -> ScriptedTaskModel:
        """The same model serving ``adapter`` (its replies follow ``adapter_rules``)."""
        return ScriptedTaskModel(self.spec, adapter)

    def reply(self, prompt: str) -> str:
        for pattern, template in self.rules:
            m = pattern.search(prompt)
            if m:
                return m.expand(template)
        return prompt if self.default == "echo" else self.default

    def chat(self, body: dict[str, Any]) -> dict[str, Any]:
        messages = body.get("messages") or []
        user = [m for m in messages if m.get("role") == "user"]
        content = user[-1].get("content", "") if user else ""
        if isinstance(content, list):  # OpenAI content parts
            content = " ".join(p.get("text", "") for p in content if isinstance(p, dict))
        text = self.reply(str(content))
        prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in messages)
        completion_tokens = len(text.split())
        return {
            "id": "scripted",
            "object": "chat.completion",
            "model": self.name,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": "stop",
                }
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }


class ScriptedBackend:
    """Replays a script: see the module docstring."""

    name = "scripted"

    def __init__(self, options: BackendOptions | None = None) -> None:
        options = options or BackendOptions()
        path = options.settings.get("script")
        self.script: dict[str, Any] = {}
        self.base = Path.cwd()
        if path:
            p = Path(path)
            try:
                self.script = json.loads(p.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError) as exc:
                raise SiaError(f"cannot read the scripted backend's script {p}: {exc}") from exc
            self.base = p.parent
        self._task_model = ScriptedTaskModel(self.script.get("task_model"))

    def _scaffold(self, ref: Any, reference: str) -> str | None:
        if ref is None:
            return None
        if ref == "reference":
            return reference
        if isinstance(ref, dict):
            return str(ref["text"])
        return (self.base / str(ref)).read_text(encoding="utf-8")

    def meta(self, request: MetaRequest) -> AgentOutcome:
        step = self.script.get("meta", {})
        if "fail" in step:
            raise RuntimeError(step["fail"])
        scaffold = self._scaffold(step.get("scaffold", "reference"), request.reference_scaffold)
        return AgentOutcome(
            decision=Decision(
                lever="harness",
                source="meta",
                rationale=step.get(
                    "rationale", "scripted Meta-Agent: the reference scaffold is generation 1"
                ),
            ),
            improvement_md=step.get("improvement", "Generation 1: the reference scaffold.\n"),
            scaffold=scaffold,
            transcript=({"role": "scripted", "step": "meta", "script": step},),
        )

    def feedback(self, request: FeedbackRequest) -> AgentOutcome:
        step = self.script.get("feedback", {}).get(str(request.next_gen))
        if step is None:
            step = self.script.get("default_feedback", {"lever": "harness"})
        if "fail" in step:
            raise RuntimeError(step["fail"])
        lever = step.get("lever", "harness")
        scaffold = self._scaffold(step.get("scaffold"), request.parent_scaffold)
        rationale = step.get("rationale", "scripted decision")
        return AgentOutcome(
            decision=Decision(
                lever=lever,
                source="feedback",
                parent_gen=request.parent_gen,
                rl_algorithm=step.get("rl_algorithm"),
                rationale=rationale,
            ),
            improvement_md=step.get(
                "improvement", f"Generation {request.next_gen}: {lever}. {rationale}\n"
            ),
            scaffold=scaffold,
            transcript=(
                {"role": "scripted", "step": "feedback", "gen": request.next_gen, "script": step},
            ),
        )

    def task_model(self) -> ScriptedTaskModel:
        return self._task_model

    def close(self) -> None:
        return None
