"""A protocol-faithful Anthropic Messages API stub on loopback, for tests.

It answers ``POST /v1/messages`` like the real API, non-streamed (a ``message`` object) or with
``"stream": true`` as server-sent events (``message_start``, ``content_block_start``,
``content_block_delta`` with ``text_delta`` / ``input_json_delta``, ``content_block_stop``,
``message_delta``, ``message_stop``, and a ``ping``), so the ``anthropic`` SDK runs unchanged
against it (``base_url=stub.url`` or ``ANTHROPIC_BASE_URL``)::

    with AnthropicStub(reply=[{"text": "hi"}, {"tool_use": {"name": "decide", "input": {...}}}]):
        ...

``api_key``, when set, is required as ``x-api-key`` or ``Authorization: Bearer`` (SDK 2.x sends
the latter). ``reply`` is a list of scripted replies used in order (the last repeats) or a function of the
request body. A reply is a dict with ``text`` (str), ``tool_use`` (a dict or a list of dicts with
``name`` and ``input``; ``raw_input`` sends a string as the input JSON verbatim, for malformed
input), and ``stop_reason``. Without a script the reply echoes the last user text.

Usage counts whitespace-separated words. Blocks marked with ``cache_control`` (tools, system,
messages) cache the prefix up to them: a later request whose blocks start with a cached prefix
reports it as ``cache_read_input_tokens``, the rest up to its last mark as
``cache_creation_input_tokens``, and only what follows as ``input_tokens``.
Failures: :meth:`AnthropicStub.fail_next` answers the next requests with an HTTP error (429, 500,
529 ``overloaded_error`` ...); :meth:`AnthropicStub.stream_error_next` sends an ``error`` event in
the middle of the next streams. Every request's path, headers and body is kept in ``requests``.
Only the standard library is used.
"""

from __future__ import annotations

import json
import threading
import urllib.parse
from collections.abc import Callable, Iterable
from typing import Any

from sia_core.services.serving import ThreadedServer

from .stub_http import StubHTTPServer, StubRequestHandler, count_tokens

__all__ = ["AnthropicStub", "count_tokens"]

ReplyFn = Callable[[dict[str, Any]], dict[str, Any]]

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}


def _text_of(value: Any) -> str:
    """All text in a system/message/content value (strings, text blocks, tool results...)."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return " ".join(_text_of(v) for v in value)
    if isinstance(value, dict):
        parts = [_text_of(value.get(k)) for k in ("text", "content") if k in value]
        if "input" in value:
            parts.append(json.dumps(value["input"]))
        return " ".join(parts)
    return ""


def _error(status: int, message: str) -> dict[str, Any]:
    kind = _ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
    return {"type": "error", "error": {"type": kind, "message": message}}


class _Server(StubHTTPServer):
    def __init__(self, address: tuple[str, int], stub: AnthropicStub) -> None:
        self.stub = stub
        super().__init__(address, _Handler)


class _Handler(StubRequestHandler):
    server_version = "anthropic-stub"
    json_headers = (("request-id", "req_stub"),)
    server: _Server

    def do_POST(self) -> None:
        try:
            self.server.stub._handle(self, self.read_body())
        except OSError:
            self.close_connection = True

    def send_sse(self, events: Iterable[tuple[str, dict[str, Any]]]) -> None:
        """Answer with ``(event name, data)`` pairs as server-sent events."""
        self.send_event_stream(
            f"event: {name}\ndata: {json.dumps(data)}\n\n".encode() for name, data in events
        )


class AnthropicStub(ThreadedServer):
    """An Anthropic Messages API server on a free loopback port (see the module docstring)."""

    def __init__(
        self,
        reply: list[dict[str, Any]] | ReplyFn | None = None,
        *,
        api_key: str | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        self.reply = reply
        self.api_key = api_key
        self._address = (host, 0)
        self._lock = threading.Lock()
        self._requests: list[dict[str, Any]] = []
        self._failures: list[tuple[int, str, dict[str, str]]] = []
        self._stream_errors: list[str] = []
        self._cached: set[str] = set()
        self._n_replies = 0
        self._server: _Server | None = None

    # -- lifecycle -----------------------------------------------------------------------------

    server_label = "stub"

    def _make_server(self) -> _Server:
        return _Server(self._address, self)

    @property
    def url(self) -> str:
        """The base URL the SDK takes (``http://127.0.0.1:PORT``; it adds ``/v1/messages``)."""
        return f"http://{self._address[0]}:{self._bound_address()[1]}"

    # -- controls and observations -------------------------------------------------------------

    def fail_next(
        self, n: int, status: int = 500, message: str = "", headers: dict[str, str] | None = None
    ) -> None:
        """Answer the next ``n`` requests with ``status`` and an Anthropic error body.

        ``headers`` default to ``retry-after-ms: 1`` so a retrying client does not wait long.
        """
        hdrs = {"retry-after-ms": "1"} if headers is None else headers
        with self._lock:
            for _ in range(n):
                self._failures.append((status, message or f"stub: injected {status}", hdrs))

    def stream_error_next(self, n: int, kind: str = "overloaded_error") -> None:
        """Break the next ``n`` streamed replies with an ``error`` event after the first delta."""
        with self._lock:
            self._stream_errors.extend([kind] * n)

    @property
    def requests(self) -> list[dict[str, Any]]:
        """Every request: ``{"path", "headers" (lower-case names), "body"}``, in order."""
        with self._lock:
            return list(self._requests)

    # -- request handling ----------------------------------------------------------------------

    def _handle(self, handler: _Handler, raw: bytes) -> None:
        path = urllib.parse.urlsplit(handler.path).path
        headers = {k.lower(): v for k, v in handler.headers.items()}
        try:
            body = json.loads(raw or b"null")
        except ValueError:
            body = None
        with self._lock:
            self._requests.append({"path": path, "headers": headers, "body": body})
            failure = self._failures.pop(0) if self._failures else None
        if path != "/v1/messages":
            handler.send_json(404, _error(404, f"no route POST {path}"))
            return
        keys = (headers.get("x-api-key"), headers.get("authorization"))
        if self.api_key is not None and not {self.api_key, f"Bearer {self.api_key}"} & set(keys):
            handler.send_json(401, _error(401, "invalid API key (x-api-key or Bearer)"))
            return
        if failure is not None:
            status, message, extra = failure
            handler.send_json(status, _error(status, message), extra)
            return
        problem = self._check(body, headers)
        if problem:
            handler.send_json(400, _error(400, problem))
            return
        assert isinstance(body, dict)
        reply = self._message(body)
        if body.get("stream"):
            with self._lock:
                broken = self._stream_errors.pop(0) if self._stream_errors else None
            handler.send_sse(self._events(reply, broken))
        else:
            handler.send_json(200, self._plain(reply))

    @staticmethod
    def _plain(message: dict[str, Any]) -> dict[str, Any]:
        """The non-streamed form: a ``raw_input`` is sent as the (string) input, unparsed."""
        content = []
        for block in message["content"]:
            block = dict(block)
            if "_raw_input" in block:
                block["input"] = block.pop("_raw_input")
            content.append(block)
        return {**message, "content": content}

    @staticmethod
    def _check(body: Any, headers: dict[str, str]) -> str:
        """What the real API would refuse with a 400, or ''."""
        if not isinstance(body, dict):
            return "request body must be a JSON object"
        if not headers.get("anthropic-version"):
            return "anthropic-version: header is required"
        for field in ("model", "max_tokens", "messages"):
            if field not in body:
                return f"{field}: Field required"
        if not isinstance(body["max_tokens"], int) or body["max_tokens"] < 1:
            return "max_tokens: must be a positive integer"
        messages = body["messages"]
        if not isinstance(messages, list) or not messages:
            return "messages: at least one message is required"
        for i, m in enumerate(messages):
            if not isinstance(m, dict) or m.get("role") not in ("user", "assistant"):
                return f"messages.{i}.role: must be 'user' or 'assistant'"
            if i and m["role"] == messages[i - 1]["role"]:
                return f"messages.{i}: roles must alternate between 'user' and 'assistant'"
        if messages[0]["role"] != "user":
            return "messages.0.role: the first message must use the 'user' role"
        # every tool_use must be answered by a tool_result in the next user message
        for i, m in enumerate(messages[:-1]):
            content = m.get("content")
            if m["role"] != "assistant" or not isinstance(content, list):
                continue
            ids = {b.get("id") for b in content if isinstance(b, dict) and b["type"] == "tool_use"}
            nxt = messages[i + 1].get("content")
            got = {
                b.get("tool_use_id")
                for b in (nxt if isinstance(nxt, list) else [])
                if isinstance(b, dict) and b.get("type") == "tool_result"
            }
            if ids - got:  # the API refuses this with a 400
                return f"messages.{i + 1}: tool_use ids {sorted(map(str, ids - got))} have no tool_result"
        return ""

    def _scripted(self, body: dict[str, Any]) -> dict[str, Any]:
        if callable(self.reply):
            return self.reply(body)
        with self._lock:
            k = self._n_replies
            self._n_replies += 1
        if not self.reply:
            last = body["messages"][-1]
            return {"text": _text_of(last.get("content"))}
        return self.reply[min(k, len(self.reply) - 1)]

    def _usage(self, body: dict[str, Any], output: int) -> dict[str, Any]:
        """Input tokens split into uncached, cache-written and cache-read, like the API."""
        pieces: list[tuple[str, bool]] = []
        for tool in body.get("tools") or []:
            pieces.append((json.dumps(tool), "cache_control" in tool))
        system = body.get("system")
        for block in [system] if isinstance(system, str) else system or []:
            pieces.append((_text_of(block), isinstance(block, dict) and "cache_control" in block))
        for m in body["messages"]:
            content = m.get("content")
            blocks = content if isinstance(content, list) else [content]
            for b in blocks:
                pieces.append((_text_of(b), isinstance(b, dict) and "cache_control" in b))
        total = sum(count_tokens(t) for t, _ in pieces)
        usage = {
            "input_tokens": total,
            "output_tokens": output,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
        }
        last = max((i for i, (_, marked) in enumerate(pieces) if marked), default=-1)
        if last < 0:
            return usage
        # a breakpoint caches the prefix up to it; a later request reads the longest cached
        # prefix of its own blocks (the API looks back from its breakpoints)
        keys, sizes, key, size = [], [], "", 0
        for text, _ in pieces[: last + 1]:
            key, size = key + "\x00" + text, size + count_tokens(text)
            keys.append(key)
            sizes.append(size)
        with self._lock:
            hit = max((i for i, k in enumerate(keys) if k in self._cached), default=-1)
            self._cached.update(k for k, (_, marked) in zip(keys, pieces, strict=False) if marked)
        read = sizes[hit] if hit >= 0 else 0
        usage["cache_read_input_tokens"] = read
        usage["cache_creation_input_tokens"] = sizes[last] - read
        usage["input_tokens"] = total - sizes[last]
        return usage

    def _message(self, body: dict[str, Any]) -> dict[str, Any]:
        spec = self._scripted(body)
        with self._lock:
            seq = len(self._requests)
        content: list[dict[str, Any]] = []
        if spec.get("text"):
            content.append({"type": "text", "text": str(spec["text"])})
        uses = spec.get("tool_use") or []
        for j, use in enumerate([uses] if isinstance(uses, dict) else uses):
            block: dict[str, Any] = {
                "type": "tool_use",
                "id": f"toolu_stub_{seq}_{j}",
                "name": use["name"],
            }
            block["input"] = use.get("input", {})
            if "raw_input" in use:
                block["_raw_input"] = use["raw_input"]
            content.append(block)
        has_tool = any(b["type"] == "tool_use" for b in content)
        stop = spec.get("stop_reason") or ("tool_use" if has_tool else "end_turn")
        output = count_tokens(" ".join(_text_of(b) for b in content))
        return {
            "id": f"msg_stub_{seq}",
            "type": "message",
            "role": "assistant",
            "model": body["model"],
            "content": content,
            "stop_reason": stop,
            "stop_sequence": None,
            "usage": self._usage(body, output),
        }

    @staticmethod
    def _events(message: dict[str, Any], broken: str | None) -> list[tuple[str, dict[str, Any]]]:
        usage = message["usage"]
        start = {**message, "content": [], "stop_reason": None}
        start["usage"] = {**usage, "output_tokens": 1}
        events: list[tuple[str, dict[str, Any]]] = [
            ("message_start", {"type": "message_start", "message": start}),
            ("ping", {"type": "ping"}),
        ]
        for i, block in enumerate(message["content"]):
            first: dict[str, Any]
            if block["type"] == "text":
                first = {"type": "text", "text": ""}
                words = block["text"].split(" ")
                deltas = [
                    {"type": "text_delta", "text": w + (" " if k < len(words) - 1 else "")}
                    for k, w in enumerate(words)
                ]
            else:
                first = {"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}
                raw = block.get("_raw_input", json.dumps(block["input"]))
                cut = max(1, len(raw) // 2)
                deltas = [
                    {"type": "input_json_delta", "partial_json": part}
                    for part in (raw[:cut], raw[cut:])
                    if part
                ]
            events.append(
                (
                    "content_block_start",
                    {"type": "content_block_start", "index": i, "content_block": first},
                )
            )
            for delta in deltas:
                events.append(
                    (
                        "content_block_delta",
                        {"type": "content_block_delta", "index": i, "delta": delta},
                    )
                )
                if broken:
                    events.append(("error", _error(529 if "overloaded" in broken else 500, broken)))
                    events[-1][1]["error"]["type"] = broken
                    return events
            events.append(("content_block_stop", {"type": "content_block_stop", "index": i}))
        events.append(
            (
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": message["stop_reason"], "stop_sequence": None},
                    "usage": {"output_tokens": usage["output_tokens"]},
                },
            )
        )
        events.append(("message_stop", {"type": "message_stop"}))
        return events
