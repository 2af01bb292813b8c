"""The task model behind the gateway when it is an OpenAI-compatible HTTP server.

:class:`HTTPTaskModel` forwards chat calls to a server such as llama.cpp or vLLM over pooled
keep-alive connections; :class:`UpstreamError` is what it (and any task model) raises when that
server answers non-2xx, cannot be reached or times out.
"""

from __future__ import annotations

import http.client
import json
import threading
import urllib.parse
from typing import Any

from sia_core.contracts.backend import TaskModel

__all__ = ["HTTPTaskModel", "UpstreamError"]


class UpstreamError(Exception):
    """The task model's server answered non-2xx, or could not be reached (502) or timed out (504)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(status, message)
        self.status = status
        self.message = message

    def __str__(self) -> str:
        return f"upstream error {self.status}: {self.message}"


class HTTPTaskModel(TaskModel):
    """A :class:`~sia_core.contracts.backend.TaskModel` that forwards to an OpenAI-compatible server.

    ``base_url`` is the API root, e.g. ``http://127.0.0.1:8080/v1`` (llama.cpp server, vLLM, the
    test stub). ``body["model"]`` is replaced by ``model``; streaming is always off. Keep-alive
    connections are pooled, so each concurrent caller holds its own connection and reuses it.
    """

    #: idle keep-alive connections kept for reuse; more concurrent callers still work
    max_idle_connections = 32

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str = "sk-none",
        trainable: bool = False,
        timeout_s: float = 600.0,
    ) -> None:
        parts = urllib.parse.urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(
                f"base_url must be an http(s) URL like http://127.0.0.1:8080/v1, got {base_url!r}"
            )
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.name = model
        self.trainable = trainable
        self.timeout_s = timeout_s
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port
        self._path = parts.path.rstrip("/") + "/chat/completions"
        self._headers = {
            "Content-Type": "application/json",
            "Accept": "application/json",
            "Authorization": f"Bearer {api_key}",
        }
        self._lock = threading.Lock()
        self._idle: list[http.client.HTTPConnection] = []

    def __repr__(self) -> str:
        return f"HTTPTaskModel({self.base_url!r}, {self.model!r}, trainable={self.trainable})"

    def chat(self, body: dict[str, Any]) -> dict[str, Any]:
        """POST ``body`` to ``{base_url}/chat/completions`` and return the parsed response body.

        Raises :class:`UpstreamError` on a non-2xx answer, a connection failure or a timeout.
        """
        payload = dict(body)
        payload["model"] = self.model
        payload["stream"] = False
        payload.pop("stream_options", None)  # vLLM rejects it when stream is off
        status, raw = self._post(json.dumps(payload).encode())
        if not 200 <= status < 300:
            raise UpstreamError(status, _error_message(raw))
        try:
            out = json.loads(raw)
        except ValueError:
            raise UpstreamError(502, f"invalid JSON from {self.base_url}: {raw[:200]!r}") from None
        if not isinstance(out, dict):
            raise UpstreamError(
                502, f"expected a JSON object from {self.base_url}, got {out!r:.200}"
            )
        return out

    def close(self) -> None:
        """Close the idle connections (later calls open new ones)."""
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    def _connect(self) -> http.client.HTTPConnection:
        cls = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
        return cls(self._host, self._port, timeout=self.timeout_s)

    def _post(self, data: bytes) -> tuple[int, bytes]:
        with self._lock:
            conn = self._idle.pop() if self._idle else None
        if conn is None:
            conn = self._connect()
        for attempt in range(2):
            reused = conn.sock is not None
            try:
                conn.request("POST", self._path, body=data, headers=self._headers)
                resp = conn.getresponse()
                raw = resp.read()
            except TimeoutError as exc:
                conn.close()
                raise UpstreamError(
                    504, f"{self.base_url} did not answer within {self.timeout_s:g} s"
                ) from exc
            except (http.client.HTTPException, OSError) as exc:
                conn.close()
                # the server may have closed an idle keep-alive connection: retry once, fresh
                if reused and attempt == 0 and _is_stale_connection_error(exc):
                    continue
                raise UpstreamError(
                    502, f"cannot reach {self.base_url}: {type(exc).__name__}: {exc}"
                ) from exc
            self._release(conn)
            return resp.status, raw
        raise AssertionError("unreachable")  # pragma: no cover

    def _release(self, conn: http.client.HTTPConnection) -> None:
        if conn.sock is not None:
            with self._lock:
                if len(self._idle) < self.max_idle_connections:
                    self._idle.append(conn)
                    return
        conn.close()


def _is_stale_connection_error(exc: BaseException) -> bool:
    return isinstance(
        exc,
        http.client.RemoteDisconnected
        | http.client.BadStatusLine
        | ConnectionResetError
        | ConnectionAbortedError
        | BrokenPipeError,
    )


def _error_message(raw: bytes) -> str:
    """The ``error.message`` of an OpenAI error body, else the body's text."""
    try:
        data = json.loads(raw)
    except ValueError:
        return raw[:500].decode("utf-8", "replace").strip() or "(empty body)"
    if isinstance(data, dict):
        err = data.get("error")
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])
        if isinstance(err, str):
            return err
        if data.get("message"):
            return str(data["message"])
    return json.dumps(data)[:500]
