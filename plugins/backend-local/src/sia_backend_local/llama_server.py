"""llama.cpp's OpenAI-compatible server in a subprocess on loopback.

:class:`LlamaServer` starts one ``python -m llama_cpp.server`` for a GGUF (plus an optional LoRA
GGUF), waits until it answers and stops exactly that process. The server dies with the
orchestrator (``PR_SET_PDEATHSIG`` on Linux, forked from :mod:`sia_backend_local.spawner`'s
long-lived thread, plus ``atexit``). The orchestrator never imports ``llama_cpp``.

Standard library + sia_core only.
"""

from __future__ import annotations

import atexit
import http.client
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import TracebackType

from sia_core.contracts.errors import SiaError
from sia_core.machinery.fs import die_with_parent

from .llama_config import default_threads, server_environment
from .spawner import spawn

__all__ = ["LlamaServer"]

_LOG_TAIL_BYTES = 4000


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
        flash_attn: bool = False,
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
        self.flash_attn = flash_attn
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
            # the server's default keeps the logits of every prompt token (49,152 floats each
            # for SmolLM2); sia never asks for logprobs, and the last token's logits are kept
            "--logits_all",
            "false",
        ]
        if self.chat_format is not None:
            argv += ["--chat_format", self.chat_format]
        if self.flash_attn:
            argv += ["--flash_attn", "true"]
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

        Raises :class:`~sia_core.contracts.errors.SiaError` (quoting the server's log) if the model file
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
        env = server_environment()
        argv = self.command()
        with open(self._log, "ab") as log:
            log.write(f"$ {' '.join(argv)}\n".encode())
            log.flush()
            # A new session keeps the terminal's Ctrl-C away from the server: this process
            # decides when it stops (and it still dies with this process, see sia_core.machinery.fs.die_with_parent).
            self._proc = spawn(
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


class _PortTaken(Exception):
    """The auto-picked port was taken before the server bound it."""


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


_LIVE: set[LlamaServer] = set()  # started and not yet stopped; stopped at exit


@atexit.register
def _stop_live_servers() -> None:
    for server in list(_LIVE):
        if server._owner_pid == os.getpid():
            server.stop(timeout_s=5.0)
