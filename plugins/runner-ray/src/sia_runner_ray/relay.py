"""The gateway relay on a node: what a batch's sandboxed workers call instead of the gateway.

The run's gateway lives with the orchestrator, maybe on another host. For each batch the
orchestrator mints one gateway key per item, bound to that item, and sends them with the batch
(never anywhere else). On the node, :class:`NodeRelay` listens on loopback (where every sandbox
reaches it: bwrap relays a loopback gateway address into its network namespace), gives each
worker its own node-local key, and forwards a worker's call with the key of the item that worker
is on. A scaffold only ever sees a node-local key: it cannot reach the gateway with it, and
cannot have its calls counted against an item it is not working on. ``X-Sia-Item`` is passed on
as sent, so the gateway still records a forged one.

Standard library + sia_core only.
"""

from __future__ import annotations

import http.client
import http.server
import json
import secrets
import socketserver
import threading
import urllib.parse
from collections.abc import Mapping
from typing import Any

from sia_core.services.serving import ThreadedServer

__all__ = ["NodeRelay"]

#: the largest request or response the relay carries (a chat request with a long context fits)
MAX_BODY = 64 << 20
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "authorization"}


class NodeRelay(ThreadedServer):
    """A loopback HTTP relay to ``gateway_url`` that implements the runner's Gateway protocol.

    ``item_keys`` maps each item id of the batch to its gateway key; ``idle_key`` (optional) is
    used for calls a worker makes while on no item (during ``setup``).
    """

    server_label = "gateway relay"

    def __init__(
        self,
        gateway_url: str,
        item_keys: Mapping[str, str],
        *,
        idle_key: str = "",
        timeout_s: float = 900.0,
    ) -> None:
        parts = urllib.parse.urlsplit(gateway_url)
        if parts.scheme != "http" or not parts.hostname or not parts.port:
            raise ValueError(f"gateway URL must be http://HOST:PORT/v1, got {gateway_url!r}")
        self._upstream = (parts.hostname, parts.port)
        self._item_keys = dict(item_keys)
        self._idle_key = idle_key
        self._timeout_s = timeout_s
        self._lock = threading.Lock()
        self._workers: dict[str, str | None] = {}  # node-local key -> item id

    # -- the Gateway protocol of sia_core.services.runner ----------------------------------------

    @property
    def url(self) -> str:
        host, port = self._bound_address()
        return f"http://{host}:{port}/v1"

    def new_token(self) -> str:
        key = "sia-node-" + secrets.token_urlsafe(24)
        with self._lock:
            self._workers[key] = None
        return key

    def assign(self, token: str, item_id: str | None) -> None:
        with self._lock:
            if token not in self._workers:
                raise KeyError(f"unknown relay key {token[:12]}...")
            if item_id is not None and item_id not in self._item_keys:
                raise KeyError(f"item {item_id!r} is not in this batch")
            self._workers[token] = item_id

    def revoke(self, token: str) -> None:
        with self._lock:
            self._workers.pop(token, None)

    # -- serving --------------------------------------------------------------------------------

    def _make_server(self) -> socketserver.BaseServer:
        relay = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass  # the gateway records every call; nothing to add here

            def do_GET(self) -> None:
                relay._forward(self)

            def do_POST(self) -> None:
                relay._forward(self)

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        return server

    def _upstream_key(self, headers: Any) -> str | None:
        auth = headers.get("Authorization") or ""
        key = auth[7:].strip() if auth[:7].lower() == "bearer " else ""
        with self._lock:
            if key not in self._workers:
                return None
            item = self._workers[key]
        return self._item_keys[item] if item is not None else self._idle_key

    def _forward(self, handler: http.server.BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        if length < 0 or length > MAX_BODY:
            return _reply(handler, 413, {"error": {"message": f"request over {MAX_BODY} bytes"}})
        body = handler.rfile.read(length) if length else b""
        key = self._upstream_key(handler.headers)
        if not key:
            message = "unknown API key: send the key this sandbox worker was given"
            return _reply(handler, 401, {"error": {"message": message, "code": "invalid_api_key"}})
        headers = {k: v for k, v in handler.headers.items() if k.lower() not in _HOP_BY_HOP}
        headers["Authorization"] = f"Bearer {key}"
        conn = http.client.HTTPConnection(*self._upstream, timeout=self._timeout_s)
        try:
            conn.request(handler.command, handler.path, body=body, headers=headers)
            response = conn.getresponse()
            data = response.read(MAX_BODY + 1)
            if len(data) > MAX_BODY:
                raise OSError(f"gateway response over {MAX_BODY} bytes")
            status, content_type = response.status, response.getheader("Content-Type")
        except (OSError, http.client.HTTPException) as exc:
            message = f"the run's gateway at {self._upstream[0]}:{self._upstream[1]}: {exc}"
            return _reply(handler, 502, {"error": {"message": message}})
        finally:
            conn.close()
        handler.send_response(status)
        handler.send_header("Content-Type", content_type or "application/json")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)


def _reply(handler: http.server.BaseHTTPRequestHandler, status: int, body: dict[str, Any]) -> None:
    data = json.dumps(body).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)
