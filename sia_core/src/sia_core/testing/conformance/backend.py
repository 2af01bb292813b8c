"""Conformance suite for backend plugins.

Subclass it and supply a ``backend`` fixture returning a ready backend object::

    class TestMyBackend(BackendConformance):
        @pytest.fixture
        def backend(self):
            b = MyBackend(BackendOptions(...))
            yield b
            b.close()
"""

from __future__ import annotations

import ast
import math
from pathlib import Path
from typing import Any

import pytest

from sia_core.contracts.backend import AgentOutcome, FeedbackRequest, MetaRequest, TaskModel
from sia_core.contracts.records import LEVERS
from sia_core.testing.fixtures import tiny_task_source


class BackendConformance:
    """Checks every backend must pass: roles return well-formed outcomes, the task model speaks
    the OpenAI chat shape, and ``close`` is safe to call twice."""

    @pytest.fixture
    def backend(self) -> Any:  # pragma: no cover - supplied by subclasses
        raise NotImplementedError("subclass BackendConformance and define a `backend` fixture")

    def _meta_request(self, tmp_path: Path) -> MetaRequest:
        src = tiny_task_source()
        return MetaRequest(
            gen=1,
            gen_dir=tmp_path,
            task_name="tiny-add",
            task_md=(src / "data/public/task.md").read_text(encoding="utf-8"),
            reference_scaffold=(src / "reference/reference_target_agent.py").read_text(
                encoding="utf-8"
            ),
        )

    def test_has_a_name(self, backend: Any) -> None:
        assert isinstance(backend.name, str) and backend.name

    def test_meta_returns_a_runnable_scaffold(self, backend: Any, tmp_path: Path) -> None:
        out = backend.meta(self._meta_request(tmp_path))
        assert isinstance(out, AgentOutcome)
        assert out.decision.lever in LEVERS
        assert isinstance(out.improvement_md, str)
        if out.scaffold is not None:
            ast.parse(out.scaffold)

    def test_feedback_returns_a_valid_decision(self, backend: Any, tmp_path: Path) -> None:
        meta = self._meta_request(tmp_path)
        parent = tmp_path / "gen_1"
        parent.mkdir()
        request = FeedbackRequest(
            next_gen=2,
            next_gen_dir=tmp_path / "gen_2",
            parent_gen=1,
            parent_gen_dir=parent,
            parent_scaffold=meta.reference_scaffold,
            dev_metrics={"dev": {"score": 0.25, "n_items": 4}},
            context_md="# log\n",
            task_md=meta.task_md,
            task_name="tiny-add",
        )
        out = backend.feedback(request)
        assert isinstance(out, AgentOutcome)
        assert out.decision.lever in LEVERS
        assert out.decision.rationale.strip(), "a decision must say why"
        if out.scaffold is not None:
            ast.parse(out.scaffold)

    def test_task_model_speaks_openai_chat(self, backend: Any) -> None:
        model = backend.task_model()
        assert isinstance(model, TaskModel)
        reply = model.chat(
            {
                "model": model.name,
                "messages": [{"role": "user", "content": "What is 2 + 3?"}],
                "max_tokens": 8,
                "temperature": 0,
            }
        )
        content = reply["choices"][0]["message"]["content"]
        assert isinstance(content, str)
        usage = reply.get("usage", {})
        assert usage.get("prompt_tokens", 0) >= 1
        assert math.isfinite(float(usage.get("completion_tokens", 0)))

    def test_task_model_declares_its_abilities(self, backend: Any) -> None:
        model = backend.task_model()
        assert isinstance(model.name, str) and model.name
        assert isinstance(model.trainable, bool) and isinstance(model.free, bool)
        if model.trainable:  # what training starts from, and a way to serve what it made
            assert isinstance(model.base_model, str) and model.base_model
            assert type(model).with_adapter is not TaskModel.with_adapter

    def test_close_is_idempotent(self, backend: Any) -> None:
        backend.close()
        backend.close()
