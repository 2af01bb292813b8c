"""A protocol-faithful OpenAI-compatible stub server on loopback, for tests and benchmarks.

It speaks the parts of the OpenAI HTTP API that sia uses, with deterministic replies::

    with OpenAIStub(reply=lambda body: "42") as stub:
        model = HTTPTaskModel(stub.url, "any-model")
        model.chat({"messages": [{"role": "user", "content": "6 x 7?"}]})

Routes: ``GET /v1/models``, ``POST /v1/chat/completions`` and ``POST /v1/completions`` (both also
with ``stream: true``, sent as real server-sent events over chunked transfer encoding and ending
with ``data: [DONE]``). ``usage`` counts whitespace-separated words. The stub can be told to fail
the next N calls with a status (:meth:`OpenAIStub.fail_next`) or to answer slowly (``delay_s``).

``fault`` picks a fault per request, so faults follow the request's content (deterministic for
a resumed run): a function from the request body (chat shape) to ``None`` (answer normally) or
one of :data:`FAULTS`::

    OpenAIStub(fault=lambda body: "status:429" if "95 + 80" in echo_last_user(body) else None)

The answers' bodies are built by :mod:`.openai_stub_answers`; the HTTP plumbing shared with the
Anthropic stub is :mod:`.stub_http`. Only the standard library is used.
"""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable
from typing import Any

from sia_core.services.serving import ThreadedServer

from .openai_stub_answers import completion_body, error_body, message_text, stream_chunks
from .stub_http import StubHTTPServer, StubRequestHandler, count_tokens

__all__ = [
    "FAULTS",
    "Fault",
    "OpenAIStub",
    "Reply",
    "count_tokens",
    "echo_last_user",
    "message_text",
]

#: a reply function: the request body (chat shape) in, the assistant's text out
Reply = Callable[[dict[str, Any]], str]

#: a fault function: the request body (chat shape) in, a fault of FAULTS (or None) out
Fault = Callable[[dict[str, Any]], str | None]

#: the faults a ``fault`` function may name
FAULTS = {
    "hang": "answer only after hang_s seconds (a client with a shorter timeout gives up)",
    "drop": "close the connection without answering",
    "garbage": "200 with an HTML body that is not JSON (a proxy's error page)",
    "empty": "a normal completion whose content is the empty string",
    "null": "a normal completion whose content is null (no stream)",
    "status:NNN": "an OpenAI error body with HTTP status NNN (429 also sends Retry-After)",
}


def echo_last_user(body: dict[str, Any]) -> str:
    """The default reply: the text of the last ``user`` message ("" when there is none)."""
    for message in reversed(body.get("messages") or []):
        if isinstance(message, dict) and message.get("role") == "user":
            return message_text(message)
    return ""


def _chat_shaped(body: dict[str, Any], chat: bool) -> dict[str, Any]:
    """A request body in chat shape (a completion's ``prompt`` as one user message)."""
    return body if chat else {**body, "messages": [{"role": "user", "content": body["prompt"]}]}


class _StubServer(StubHTTPServer):
    def __init__(self, address: tuple[str, int], stub: OpenAIStub) -> None:
        self.stub = stub
        self.open_sockets: set[socket.socket] = set()
        self.sockets_lock = threading.Lock()
        super().__init__(address, _StubHandler)


class _StubHandler(StubRequestHandler):
    server_version = "openai-stub"
    disable_nagle_algorithm = True
    server: _StubServer

    def setup(self) -> None:
        super().setup()
        with self.server.sockets_lock:
            self.server.open_sockets.add(self.connection)
        self.server.stub._count_connection()

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            with self.server.sockets_lock:
                self.server.open_sockets.discard(self.connection)

    def version_string(self) -> str:
        """The ``Server`` header: just the name."""
        return self.server_version

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def _serve(self, method: str) -> None:
        try:
            self.server.stub._handle(self, method, self.read_body())
        except OSError:
            self.close_connection = True
        except Exception as exc:  # answer rather than drop the connection
            self.send_json(500, error_body(500, f"stub failed: {type(exc).__name__}: {exc}"))


class OpenAIStub(ThreadedServer):
    """An OpenAI-compatible server on a free loopback port, answering deterministically.

    ``reply`` maps the request body to the assistant's text (default: echo the last user message).
    ``api_key``, when set, is required as ``Authorization: Bearer <api_key>`` (else 401).
    ``delay_s`` (settable at any time) is slept before every completion is answered.
    ``fault`` names a fault per request (see :data:`FAULTS`); ``hang_s`` is how long "hang" waits
    (cut short by :meth:`stop`). ``max_model_len``, when set, is reported on ``/v1/models`` the
    way vLLM reports a model's context length.
    """

    def __init__(
        self,
        reply: Reply | None = None,
        *,
        model: str = "stub-model",
        host: str = "127.0.0.1",
        port: int = 0,
        api_key: str | None = None,
        delay_s: float = 0.0,
        fault: Fault | None = None,
        hang_s: float = 30.0,
        max_model_len: int | None = None,
    ) -> None:
        self.reply: Reply = reply or echo_last_user
        self.max_model_len = max_model_len
        self.fault = fault
        self.hang_s = hang_s
        self._stopping = threading.Event()
        self._faults: list[tuple[int, str]] = []
        self.model = model
        self.api_key = api_key
        self.delay_s = delay_s
        self._address = (host, port)
        self._lock = threading.Lock()
        self._fail_left = 0
        self._fail_status = 500
        self._fail_message = ""
        self._requests: list[dict[str, Any]] = []
        self._connections = 0
        self._server: _StubServer | None = None

    # -- lifecycle -----------------------------------------------------------------------------

    server_label = "stub"

    def _make_server(self) -> _StubServer:
        self._stopping.clear()
        return _StubServer(self._address, self)

    def stop(self) -> None:
        """Stop serving, close the port and every open client connection."""
        self._stopping.set()
        super().stop()

    def _close_connections(self, server: _StubServer) -> None:
        self._close_sockets(server)

    @property
    def port(self) -> int:
        """The bound port (valid after :meth:`start`)."""
        return self._bound_address()[1]

    @property
    def url(self) -> str:
        """The base URL, ``http://127.0.0.1:PORT/v1`` (valid after :meth:`start`)."""
        return f"http://{self._address[0]}:{self.port}/v1"

    # -- controls and observations -------------------------------------------------------------

    def fail_next(self, n: int, status: int = 500, message: str | None = None) -> None:
        """Answer the next ``n`` completion requests with ``status`` and an OpenAI error body."""
        with self._lock:
            self._fail_left = n
            self._fail_status = status
            self._fail_message = message or f"stub: injected failure ({status})"

    @property
    def requests(self) -> list[dict[str, Any]]:
        """The bodies of every completion request received, in arrival order."""
        with self._lock:
            return list(self._requests)

    @property
    def faults(self) -> list[tuple[int, str]]:
        """``(request number, fault)`` for every fault served, in arrival order."""
        with self._lock:
            return list(self._faults)

    @property
    def n_connections(self) -> int:
        """How many TCP connections clients have opened so far."""
        with self._lock:
            return self._connections

    def drop_connections(self) -> None:
        """Close every open client connection (as an idle-timeout on a real server would)."""
        if self._server is not None:
            self._close_sockets(self._server)

    @staticmethod
    def _close_sockets(server: _StubServer) -> None:
        with server.sockets_lock:
            sockets = list(server.open_sockets)
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _count_connection(self) -> None:
        with self._lock:
            self._connections += 1

    # -- request handling ----------------------------------------------------------------------

    def _handle(self, handler: _StubHandler, method: str, raw: bytes) -> None:
        path = urllib.parse.urlsplit(handler.path).path.rstrip("/")
        routes = {
            "/v1/models": "GET",
            "/v1/chat/completions": "POST",
            "/v1/completions": "POST",
        }
        if path not in routes:
            handler.send_json(404, error_body(404, f"unknown route {method} {path}"))
            return
        if method != routes[path]:
            handler.send_json(405, error_body(405, f"{path} takes {routes[path]}"))
            return
        if self.api_key is not None:
            auth = handler.headers.get("Authorization") or ""
            if auth != f"Bearer {self.api_key}":
                handler.send_json(401, error_body(401, "Incorrect API key provided."))
                return
        if path == "/v1/models":
            model: dict[str, Any] = {
                "id": self.model,
                "object": "model",
                "created": 0,
                "owned_by": "stub",
            }
            if self.max_model_len is not None:
                model["max_model_len"] = self.max_model_len
            handler.send_json(200, {"object": "list", "data": [model]})
            return
        try:
            body = json.loads(raw or b"null")
        except ValueError:
            handler.send_json(400, error_body(400, "request body is not valid JSON"))
            return
        if not isinstance(body, dict):
            handler.send_json(400, error_body(400, "request body must be a JSON object"))
            return
        chat = path == "/v1/chat/completions"
        if chat and not isinstance(body.get("messages"), list):
            handler.send_json(400, error_body(400, "'messages' is a required property"))
            return
        if not chat and not isinstance(body.get("prompt"), str):
            handler.send_json(400, error_body(400, "'prompt' must be a string"))
            return
        with self._lock:
            self._requests.append(body)
            seq = len(self._requests)
            failing = self._fail_left > 0
            if failing:
                self._fail_left -= 1
            status, message = self._fail_status, self._fail_message
        if self.delay_s > 0:
            time.sleep(self.delay_s)
        if failing:
            handler.send_json(status, error_body(status, message))
            return
        fault = self.fault(_chat_shaped(body, chat)) if self.fault is not None else None
        if fault is None:
            self._answer(handler, body, seq, chat)
            return
        with self._lock:
            self._faults.append((seq, fault))
        self._inject(handler, fault, body, seq, chat)

    def _inject(
        self, handler: _StubHandler, fault: str, body: dict[str, Any], seq: int, chat: bool
    ) -> None:
        if fault == "hang":
            self._stopping.wait(self.hang_s)
            self._answer(handler, body, seq, chat)
        elif fault == "drop":
            handler.close_connection = True
            handler.connection.shutdown(socket.SHUT_RDWR)
        elif fault == "garbage":
            page = b"<html><body><h1>502 Bad Gateway</h1></body></html>"
            handler.send_bytes(200, page, "text/html")
        elif fault in ("empty", "null"):
            self._answer(handler, body, seq, chat, text="", null=fault == "null")
        elif fault.startswith("status:") and fault[7:].isdigit():
            status = int(fault[7:])
            retry = {"Retry-After": "1"} if status == 429 else None
            handler.send_json(status, error_body(status, f"stub: injected {fault}"), retry)
        else:
            raise ValueError(f"unknown stub fault {fault!r}; choose one of: {', '.join(FAULTS)}")

    def _answer(
        self,
        handler: _StubHandler,
        body: dict[str, Any],
        seq: int,
        chat: bool,
        *,
        text: str | None = None,
        null: bool = False,
    ) -> None:
        """Answer ``body``; ``text`` replaces the reply; ``null`` sends ``content: null``."""
        if text is None and not null:
            text = self.reply(_chat_shaped(body, chat))
        completion = completion_body(
            body, seq=seq, chat=chat, text=text or "", null=null, default_model=self.model
        )
        if not body.get("stream"):
            handler.send_json(200, completion)
            return
        options = body.get("stream_options")
        include_usage = isinstance(options, dict) and bool(options.get("include_usage"))
        handler.send_event_stream(stream_chunks(completion, include_usage))
