"""The HTTP plumbing the API stubs share (:mod:`.openai_stub`, :mod:`.anthropic_stub`).

:class:`StubHTTPServer` is a threading HTTP server that binds without a DNS lookup and stays
quiet when clients hang up; :class:`StubRequestHandler` reads request bodies and answers with
JSON, raw bytes or server-sent events over chunked transfer encoding. :func:`count_tokens` is the
stubs' token count. Only the standard library is used.
"""

from __future__ import annotations

import json
import socketserver
from collections.abc import Iterable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["StubHTTPServer", "StubRequestHandler", "count_tokens"]


def count_tokens(text: str) -> int:
    """The stubs' token count: the number of whitespace-separated words."""
    return len(text.split())


class StubHTTPServer(ThreadingHTTPServer):
    """A stub's server: a thread per connection (daemon threads), the address reusable."""

    daemon_threads = True
    allow_reuse_address = True

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the host's FQDN, which can stall without DNS
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Client hang-ups are expected in tests; stay quiet."""


class StubRequestHandler(BaseHTTPRequestHandler):
    """HTTP/1.1 keep-alive, no request log; ``json_headers`` go with every JSON answer."""

    protocol_version = "HTTP/1.1"
    json_headers: tuple[tuple[str, str], ...] = ()

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the per-request log."""

    def read_body(self) -> bytes:
        """The request body (``Content-Length`` bytes; empty without one)."""
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def send_json(
        self, status: int, body: dict[str, Any], headers: Mapping[str, str] | None = None
    ) -> None:
        """Answer ``status`` with ``body`` as JSON, then ``json_headers`` and ``headers``."""
        extra = [*self.json_headers, *(headers or {}).items()]
        self.send_bytes(status, json.dumps(body).encode(), "application/json", extra)

    def send_bytes(
        self,
        status: int,
        data: bytes,
        content_type: str,
        headers: Iterable[tuple[str, str]] = (),
    ) -> None:
        """Answer ``status`` with ``data`` as ``content_type`` (and ``headers``)."""
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def send_event_stream(self, chunks: Iterable[bytes]) -> None:
        """Answer 200 ``text/event-stream``: each of ``chunks`` as one chunk, as it comes."""
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for chunk in chunks:
            self.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")
