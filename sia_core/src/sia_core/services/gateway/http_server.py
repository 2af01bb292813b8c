"""The gateway's HTTP plumbing: a threading server and a request handler on loopback.

The handler reads each request's body (plain or chunked, at most :data:`MAX_BODY_BYTES`), hands
it to the gateway's ``_dispatch`` and writes the reply; the server tracks open connections so
that stopping the gateway can close them.
"""

from __future__ import annotations

import logging
import socket
import socketserver
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol

from sia_core.services.gateway.wire import _BadRequest, _error, _Headers, _int, _Reply

__all__ = ["MAX_BODY_BYTES"]

log = logging.getLogger(__name__)

#: request bodies above this size are refused with 413
MAX_BODY_BYTES = 64 * 1024 * 1024


class _Dispatcher(Protocol):
    """What the server needs of the gateway: the reply to one request."""

    def _dispatch(self, method: str, target: str, headers: _Headers, raw: bytes) -> _Reply: ...


class _GatewayServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], gateway: _Dispatcher) -> None:
        self.gateway = gateway
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the host's FQDN, which can stall without DNS
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)

    def track(self, sock: socket.socket, is_open: bool) -> None:
        with self._open_lock:
            if is_open:
                self._open.add(sock)
            else:
                self._open.discard(sock)

    def close_connections(self) -> None:
        """Shut every client connection, waking handler threads parked on keep-alive reads."""
        with self._open_lock:
            sockets = list(self._open)
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def handle_error(self, request: Any, client_address: Any) -> None:
        # only connection-level failures get here; every request is answered by _Handler
        log.debug("gateway connection from %s failed", client_address, exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "sia-gateway"
    disable_nagle_algorithm = True
    wbufsize = 1 << 16  # headers and body leave in one send (flushed after each request)
    server: _GatewayServer

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection, True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.track(self.connection, False)

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the per-request log."""

    def version_string(self) -> str:
        """The ``Server`` header: just the name."""
        return self.server_version

    def handle_expect_100(self) -> bool:
        """Send ``100 Continue`` now: the buffered writer would otherwise hold it back."""
        ok = super().handle_expect_100()
        self.wfile.flush()
        return ok

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_PUT(self) -> None:
        self._serve("PUT")

    def do_DELETE(self) -> None:
        self._serve("DELETE")

    def _serve(self, method: str) -> None:
        try:
            raw = self._read_body()
        except _BadRequest as exc:
            self.close_connection = True  # the rest of the body is still on the wire
            reply = _error(exc.status, exc.message, "invalid_request_error")
        except OSError:
            self.close_connection = True
            return
        else:
            try:
                reply = self.server.gateway._dispatch(method, self.path, self.headers, raw)
            except Exception as exc:
                log.exception("gateway failed on %s %s", method, self.path)
                reply = _error(
                    500, f"gateway internal error: {type(exc).__name__}: {exc}", "server_error"
                )
        try:
            self.send_response(reply.status)
            self.send_header("Content-Type", reply.content_type)
            self.send_header("Content-Length", str(len(reply.body)))
            for name, value in reply.headers:
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(reply.body)
        except OSError:
            self.close_connection = True

    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            return self._read_chunked()
        length = _int(self.headers.get("Content-Length") or 0)
        if length is None or length < 0:
            raise _BadRequest(400, "invalid Content-Length")
        if length > MAX_BODY_BYTES:
            raise _BadRequest(413, f"request body over {MAX_BODY_BYTES} bytes")
        return self.rfile.read(length) if length else b""

    def _read_chunked(self) -> bytes:
        data = bytearray()
        while True:
            line = self.rfile.readline(1024)
            size = _int_hex(line.split(b";", 1)[0].strip())
            if size is None:
                raise _BadRequest(400, "malformed chunked request body")
            if size == 0:
                while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return bytes(data)
            if len(data) + size > MAX_BODY_BYTES:
                raise _BadRequest(413, f"request body over {MAX_BODY_BYTES} bytes")
            data += self.rfile.read(size)
            self.rfile.readline(1024)


def _int_hex(text: bytes) -> int | None:
    try:
        return int(text, 16)
    except ValueError:
        return None
