"""A stand-in for vLLM's OpenAI server, over real HTTP on loopback (test support).

Faithful to the parts the worker uses (vLLM 0.10's ``vllm serve --enable-lora``):
``GET /v1/models`` (the base model and every loaded adapter), ``POST /v1/completions`` with a
token-id ``prompt``, ``logprobs`` and ``return_tokens_as_token_ids`` (tokens come back as
``"token_id:N"``), ``POST /v1/load_lora_adapter`` / ``/v1/unload_lora_adapter`` (200 with a
plain-text message; 400 for a missing path or a name already loaded, 404 for an unknown one;
a request naming a model that is not loaded gets 404 as in vLLM). Completions are drawn from a
seeded generator (ids in ``[100, 1000)``, log-probabilities in ``[-3, -0.5]``) whose text is a
number, so a task scoring numbers sees varied rewards. :meth:`die` stops answering mid-run;
``die_after=N`` dies on its own at the completion after the N-th (that request gets no answer).
"""

from __future__ import annotations

import http.server
import json
import random
import socketserver
import threading
from pathlib import Path
from typing import Any

from sia_core.services.serving import ThreadedServer

__all__ = ["VLLMStub"]


class VLLMStub(ThreadedServer):
    """``with VLLMStub("base") as stub: stub.url`` — see the module docstring."""

    server_label = "vllm stub"

    def __init__(
        self, base: str = "base-model", seed: int = 0, port: int = 0, die_after: int | None = None
    ) -> None:
        self.base = base
        self.port = port
        #: completions answered before the server dies (drops the next request, then stops)
        self.die_after = die_after
        self.answered = 0
        self.adapters: dict[str, str] = {}  # name -> path
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self.load_order: list[str] = []
        self._rng = random.Random(seed)
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        host, port = self._bound_address()
        return f"http://{host}:{port}/v1"

    def die(self) -> None:
        """Stop answering: later requests are refused, as when the server process dies."""
        self.stop()

    def _make_server(self) -> socketserver.BaseServer:
        stub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                if self.path.rstrip("/") != "/v1/models":
                    return self._send(404, {"error": {"message": "Not Found"}})
                with stub._lock:
                    names = [stub.base, *stub.adapters]
                data = [{"id": n, "object": "model", "root": stub.base} for n in names]
                self._send(200, {"object": "list", "data": data})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                try:
                    body = json.loads(self.rfile.read(length) or b"{}")
                except ValueError:
                    return self._send(400, {"error": {"message": "invalid JSON"}})
                route = self.path.rstrip("/")
                with stub._lock:
                    stub.requests.append((route, body))
                if route == "/v1/completions":
                    if stub.die_after is not None and stub.answered >= stub.die_after:
                        self.close_connection = True  # no answer: the process is gone
                        threading.Thread(target=stub.die, daemon=True).start()
                        return None
                    stub.answered += 1
                    return self._send(*stub._complete(body))
                if route == "/v1/load_lora_adapter":
                    return self._send(*stub._load(body))
                if route == "/v1/unload_lora_adapter":
                    return self._send(*stub._unload(body))
                self._send(404, {"error": {"message": "Not Found"}})

            def _send(self, status: int, payload: Any) -> None:
                raw = payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header(
                    "Content-Type", "text/plain" if isinstance(payload, str) else "application/json"
                )
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

        server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        server.daemon_threads = True
        return server

    def _complete(self, body: dict[str, Any]) -> tuple[int, Any]:
        model = body.get("model")
        with self._lock:
            known = model == self.base or model in self.adapters
            n = max(1, int(body.get("max_tokens") or 16))
            ids = [self._rng.randrange(100, 1000) for _ in range(self._rng.randint(1, n))]
            logps = [round(-self._rng.uniform(0.5, 3.0), 4) for _ in ids]
        if not known:
            message = f"The model `{model}` does not exist."
            return 404, {
                "object": "error",
                "message": message,
                "type": "NotFoundError",
                "code": 404,
            }
        if not isinstance(body.get("prompt"), list):
            return 400, {"object": "error", "message": "prompt must be token ids here", "code": 400}
        tokens = [
            f"token_id:{i}" if body.get("return_tokens_as_token_ids") else f"t{i}" for i in ids
        ]
        text = str(sum(ids) % 100)  # a number: a numeric task sees varied rewards
        choice = {
            "index": 0,
            "text": text,
            "logprobs": {"tokens": tokens, "token_logprobs": logps, "top_logprobs": None},
            "finish_reason": "length" if len(ids) == n else "stop",
        }
        usage = {"prompt_tokens": len(body["prompt"]), "completion_tokens": len(ids)}
        return 200, {"id": "cmpl-stub", "object": "text_completion", "model": model,
                     "choices": [choice], "usage": usage}  # fmt: skip

    def _load(self, body: dict[str, Any]) -> tuple[int, Any]:
        name, path = str(body.get("lora_name") or ""), str(body.get("lora_path") or "")
        with self._lock:
            if name in self.adapters:
                return 400, {"object": "error", "message": f"The lora adapter '{name}' has already been loaded.", "code": 400}  # fmt: skip
            if not (Path(path) / "adapter_config.json").is_file():
                return 400, {"object": "error", "message": f"No adapter found at {path}", "code": 400}  # fmt: skip
            self.adapters[name] = path
            self.load_order.append(name)
        return 200, f"Success: LoRA adapter '{name}' added successfully."

    def _unload(self, body: dict[str, Any]) -> tuple[int, Any]:
        name = str(body.get("lora_name") or "")
        with self._lock:
            if self.adapters.pop(name, None) is None:
                return 404, {"object": "error", "message": f"The lora adapter '{name}' cannot be found.", "code": 404}  # fmt: skip
        return 200, f"Success: LoRA adapter '{name}' removed successfully."
