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

Only the standard library is used.
"""

from __future__ import annotations

import json
import re
import socket
import socketserver
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from sia_core.serving import ThreadedServer

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

_PIECE = re.compile(r"\S+\s*|\s+")


def count_tokens(text: str) -> int:
    """The stub's token count: the number of whitespace-separated words."""
    return len(text.split())


def message_text(message: dict[str, Any]) -> str:
    """The text of one chat message (a string ``content`` or its ``text`` parts joined)."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            str(part.get("text", ""))
            for part in content
            if isinstance(part, dict) and part.get("type") == "text"
        )
    return ""


def echo_last_user(body: dict[str, Any]) -> str:
    """The default reply: the text of the last ``user`` message ("" when there is none)."""
    for message in reversed(body.get("messages") or []):
        if isinstance(message, dict) and message.get("role") == "user":
            return message_text(message)
    return ""


def _error_body(status: int, message: str) -> dict[str, Any]:
    if status == 429:
        kind, code = "requests", "rate_limit_exceeded"
    elif status >= 500:
        kind, code = "server_error", None
    elif status == 401:
        kind, code = "invalid_request_error", "invalid_api_key"
    else:
        kind, code = "invalid_request_error", None
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


class _StubServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], stub: OpenAIStub) -> None:
        self.stub = stub
        self.open_sockets: set[socket.socket] = set()
        self.sockets_lock = threading.Lock()
        super().__init__(address, _StubHandler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the host's FQDN, which can stall without DNS
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Client hang-ups are expected in tests; stay quiet."""


class _StubHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
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

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the per-request log."""

    def version_string(self) -> str:
        """The ``Server`` header: just the name."""
        return self.server_version

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    # -- plumbing ------------------------------------------------------------------------------

    def _serve(self, method: str) -> None:
        try:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length > 0 else b""
            self.server.stub._handle(self, method, raw)
        except OSError:
            self.close_connection = True
        except Exception as exc:  # answer rather than drop the connection
            self.send_json(500, _error_body(500, f"stub failed: {type(exc).__name__}: {exc}"))

    def send_json(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def send_raw(self, status: int, data: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def send_sse(self, events: Iterable[dict[str, Any]]) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for event in events:
            self._write_chunk(f"data: {json.dumps(event)}\n\n".encode())
        self._write_chunk(b"data: [DONE]\n\n")
        self.wfile.write(b"0\r\n\r\n")

    def _write_chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")


class OpenAIStub(ThreadedServer):
    """An OpenAI-compatible server on a free loopback port, answering deterministically.

    ``reply`` maps the request body to the assistant's text (default: echo the last user message).
    ``api_key``, when set, is required as ``Authorization: Bearer <api_key>`` (else 401).
    ``delay_s`` (settable at any time) is slept before every completion is answered.
    ``fault`` names a fault per request (see :data:`FAULTS`); ``hang_s`` is how long "hang" waits
    (cut short by :meth:`stop`).
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
    ) -> None:
        self.reply: Reply = reply or echo_last_user
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
            handler.send_json(404, _error_body(404, f"unknown route {method} {path}"))
            return
        if method != routes[path]:
            handler.send_json(405, _error_body(405, f"{path} takes {routes[path]}"))
            return
        if self.api_key is not None:
            auth = handler.headers.get("Authorization") or ""
            if auth != f"Bearer {self.api_key}":
                handler.send_json(401, _error_body(401, "Incorrect API key provided."))
                return
        if path == "/v1/models":
            model = {"id": self.model, "object": "model", "created": 0, "owned_by": "stub"}
            handler.send_json(200, {"object": "list", "data": [model]})
            return
        try:
            body = json.loads(raw or b"null")
        except ValueError:
            handler.send_json(400, _error_body(400, "request body is not valid JSON"))
            return
        if not isinstance(body, dict):
            handler.send_json(400, _error_body(400, "request body must be a JSON object"))
            return
        chat = path == "/v1/chat/completions"
        if chat and not isinstance(body.get("messages"), list):
            handler.send_json(400, _error_body(400, "'messages' is a required property"))
            return
        if not chat and not isinstance(body.get("prompt"), str):
            handler.send_json(400, _error_body(400, "'prompt' must be a string"))
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
            handler.send_json(status, _error_body(status, message))
            return
        chat_body = (
            body if chat else {**body, "messages": [{"role": "user", "content": body["prompt"]}]}
        )
        fault = self.fault(chat_body) if self.fault is not None else None
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
            handler.send_raw(200, page, "text/html")
        elif fault in ("empty", "null"):
            self._answer(handler, body, seq, chat, text="", null=fault == "null")
        elif fault.startswith("status:") and fault[7:].isdigit():
            status = int(fault[7:])
            data = json.dumps(_error_body(status, f"stub: injected {fault}")).encode()
            handler.send_response(status)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(len(data)))
            if status == 429:
                handler.send_header("Retry-After", "1")
            handler.end_headers()
            handler.wfile.write(data)
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
        if chat:
            prompt_tokens = sum(
                count_tokens(message_text(m)) for m in body["messages"] if isinstance(m, dict)
            )
        else:
            prompt_tokens = count_tokens(body["prompt"])
        if text is None and not null:
            chat_body = (
                body
                if chat
                else {**body, "messages": [{"role": "user", "content": body["prompt"]}]}
            )
            text = self.reply(chat_body)
        text = text or ""
        finish = "stop"
        limit = body.get("max_completion_tokens") or body.get("max_tokens")
        if isinstance(limit, int) and count_tokens(text) > limit:
            text, finish = " ".join(text.split()[:limit]), "length"
        completion_tokens = count_tokens(text)
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }
        n = body.get("n")
        n_choices = n if isinstance(n, int) and n > 0 else 1
        model = body.get("model") or self.model
        created = int(time.time())
        if chat:
            ident, obj = f"chatcmpl-stub-{seq}", "chat.completion"
            choices: list[dict[str, Any]] = [
                {
                    "index": i,
                    "message": {"role": "assistant", "content": None if null else text},
                    "logprobs": None,
                    "finish_reason": finish,
                }
                for i in range(n_choices)
            ]
        else:
            ident, obj = f"cmpl-stub-{seq}", "text_completion"
            choices = [
                {"index": i, "text": text, "logprobs": None, "finish_reason": finish}
                for i in range(n_choices)
            ]
        if not body.get("stream"):
            handler.send_json(
                200,
                {
                    "id": ident,
                    "object": obj,
                    "created": created,
                    "model": model,
                    "system_fingerprint": "stub",
                    "choices": choices,
                    "usage": usage,
                },
            )
            return
        options = body.get("stream_options")
        include_usage = isinstance(options, dict) and bool(options.get("include_usage"))
        handler.send_sse(
            _stream_events(
                ident,
                created,
                model,
                text,
                finish,
                n_choices,
                chat,
                usage if include_usage else None,
            )
        )


def _stream_events(
    ident: str,
    created: int,
    model: str,
    text: str,
    finish: str,
    n_choices: int,
    chat: bool,
    usage: dict[str, int] | None,
) -> Iterable[dict[str, Any]]:
    obj = "chat.completion.chunk" if chat else "text_completion"
    head = {"id": ident, "object": obj, "created": created, "model": model}

    def chunk(index: int, piece: str | None, finish_reason: str | None) -> dict[str, Any]:
        if chat:
            delta: dict[str, Any] = {} if piece is None else {"content": piece}
            if piece == "" and finish_reason is None:
                delta["role"] = "assistant"
            choice = {"index": index, "delta": delta, "logprobs": None}
        else:
            choice = {"index": index, "text": piece or "", "logprobs": None}
        return {**head, "choices": [{**choice, "finish_reason": finish_reason}]}

    for index in range(n_choices):
        if chat:
            yield chunk(index, "", None)
        for piece in _PIECE.findall(text):
            yield chunk(index, piece, None)
        yield chunk(index, None, finish)
    if usage is not None:
        yield {**head, "choices": [], "usage": usage}
