"""The model gateway: the only way scaffold code reaches the task model.

The orchestrator serves one :class:`Gateway` per run: an OpenAI-compatible HTTP endpoint on
loopback. Each sandbox worker gets its own API key (:meth:`Gateway.new_token`) and sends
``Authorization: Bearer <key>``; the gateway routes the call to the configured
:class:`~sia_core.backend.TaskModel`, records it as a :class:`~sia_core.records.ModelCall`
attributed to the task item the key is bound to (:meth:`Gateway.assign`; never to what the
scaffold claims: a request whose ``X-Sia-Item`` header names another item is refused with 403 and
recorded as ``refused``), and enforces the generation's :class:`Budget`::

    with Gateway(HTTPTaskModel("http://127.0.0.1:8080/v1", "qwen")) as gw:
        gw.begin(gen=1, budget=Budget(max_calls=500))
        key = gw.new_token()
        gw.assign(key, "item-7")
        ...  # the scaffold calls gw.url with api_key=key
        calls = gw.calls_for("item-7")

Routes: ``GET /v1/models``, ``POST /v1/chat/completions``, ``POST /v1/completions``. With
``stream: true`` the task model is still called non-streamed and the reply is sent back as
server-sent events, so unmodified OpenAI clients work either way. Standard library + attrs only.
"""

from __future__ import annotations

import http.client
import json
import logging
import re
import secrets
import socket
import socketserver
import threading
import time
import urllib.parse
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol

import attrs

from .backend import TaskModel
from .records import ModelCall
from .serving import ThreadedServer

__all__ = ["Budget", "Gateway", "HTTPTaskModel", "UpstreamError"]

log = logging.getLogger(__name__)

#: request bodies above this size are refused with 413
MAX_BODY_BYTES = 64 * 1024 * 1024
_PIECE = re.compile(r"\S+\s*|\s+")
_STREAM_PIECE_CHARS = 64
# completions-only fields that have no (or a differently typed) chat counterpart
_COMPLETIONS_ONLY = ("prompt", "echo", "best_of", "suffix", "logprobs")


@attrs.frozen(kw_only=True)
class Budget:
    """Limits on one generation's model calls; ``None`` means unlimited.

    ``max_calls`` counts calls forwarded to the task model (successful or failed);
    ``max_tokens`` counts prompt + completion tokens of the generation's successful calls.
    """

    max_calls: int | None = None
    max_tokens: int | None = None


class UpstreamError(Exception):
    """The task model's server answered non-2xx, or could not be reached (502) or timed out (504)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(status, message)
        self.status = status
        self.message = message

    def __str__(self) -> str:
        return f"upstream error {self.status}: {self.message}"


# --------------------------------------------------------------------------------------------
# HTTPTaskModel: a TaskModel forwarding to an OpenAI-compatible server
# --------------------------------------------------------------------------------------------


class HTTPTaskModel:
    """A :class:`~sia_core.backend.TaskModel` that forwards to an OpenAI-compatible server.

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


# --------------------------------------------------------------------------------------------
# Gateway
# --------------------------------------------------------------------------------------------


class _Headers(Protocol):
    def get(self, name: str, /) -> str | None: ...


@attrs.frozen
class _Reply:
    status: int
    body: bytes
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()


class _BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _error(
    status: int,
    message: str,
    kind: str,
    code: str | None = None,
    headers: tuple[tuple[str, str], ...] = (),
) -> _Reply:
    body = {"error": {"message": message, "type": kind, "param": None, "code": code}}
    return _Reply(status, json.dumps(body).encode(), headers=headers)


def _json(body: Any) -> _Reply:
    return _Reply(200, json.dumps(body).encode())


def _estimate_tokens(text: str) -> int:
    return (len(text) + 3) // 4


def _prompt_text(body: dict[str, Any]) -> str:
    parts: list[str] = []
    for message in body.get("messages") or ():
        if not isinstance(message, dict):
            continue
        content = message.get("content")
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):
            parts.extend(
                str(p.get("text", "")) for p in content if isinstance(p, dict) and "text" in p
            )
    return "\n".join(parts)


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _float(value: Any) -> float:
    try:
        return float(value or 0)
    except (TypeError, ValueError):
        return 0.0


class Gateway(ThreadedServer):
    """An OpenAI-compatible endpoint on loopback that records and budgets the scaffold's calls.

    Thread-safe: the orchestrator may call :meth:`assign`, :meth:`calls` etc. while the server
    threads answer calls. A call still running when :meth:`begin` starts a new generation is
    answered but not recorded in the new generation.
    """

    def __init__(
        self,
        task_model: TaskModel,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        budget: Budget = Budget(),
        pricer: Callable[[str, int, int], float | None] | None = None,
    ) -> None:
        self._task_model = task_model
        # USD of a call (model, prompt tokens, completion tokens) when the provider reports none
        self._pricer = pricer
        self._host = host
        self._port = port
        self._default_budget = budget
        self._budget = budget
        self._lock = threading.Lock()
        self._tokens: dict[str, str | None] = {}
        self._gen = 0
        self._epoch = 0  # bumped by begin(); calls from an older epoch are not recorded
        self._reset_counters()
        self._server: _GatewayServer | None = None

    def _reset_counters(self) -> None:
        self._calls: list[ModelCall] = []
        self._next_id = 0
        self._admitted = 0  # forwarded to the task model, including calls still running
        self._prompt_tokens = 0
        self._completion_tokens = 0
        self._cost_usd = 0.0
        self._n_ok = 0
        self._n_errors = 0
        self._n_over_budget = 0
        self._n_refused = 0

    # -- lifecycle -----------------------------------------------------------------------------

    server_label = "gateway"

    def _make_server(self) -> _GatewayServer:
        return _GatewayServer((self._host, self._port), self)

    def _close_connections(self, server: _GatewayServer) -> None:
        server.close_connections()

    @property
    def url(self) -> str:
        """The OpenAI base URL, ``http://127.0.0.1:PORT/v1`` (valid after :meth:`start`)."""
        host, port = self._bound_address()
        return f"http://[{host}]:{port}/v1" if ":" in host else f"http://{host}:{port}/v1"

    # -- orchestrator API ----------------------------------------------------------------------

    @property
    def task_model(self) -> TaskModel:
        """The task model calls are routed to."""
        return self._task_model

    def set_task_model(self, task_model: TaskModel) -> None:
        """Route later calls to ``task_model`` (calls already running finish on the old one)."""
        with self._lock:
            self._task_model = task_model

    def begin(self, gen: int, budget: Budget | None = None) -> None:
        """Start generation ``gen``: clear the call log and counters; ``budget`` (default: the
        constructor's) applies until the next :meth:`begin`."""
        with self._lock:
            self._gen = gen
            self._epoch += 1
            self._budget = budget if budget is not None else self._default_budget
            self._reset_counters()

    def new_token(self) -> str:
        """A new API key for one sandbox worker (random, unguessable), assigned to no item."""
        token = "sia-" + secrets.token_urlsafe(24)
        with self._lock:
            self._tokens[token] = None
        return token

    def revoke(self, token: str) -> None:
        """Forget a worker's token once the worker is gone (later calls with it are refused)."""
        with self._lock:
            self._tokens.pop(token, None)

    def assign(self, token: str, item_id: str | None) -> None:
        """Attribute later calls made with ``token`` to ``item_id`` (``None``: to no item)."""
        with self._lock:
            if token not in self._tokens:
                raise KeyError(f"unknown gateway token {token[:8]}...: make it with new_token()")
            self._tokens[token] = item_id

    def calls(self) -> list[ModelCall]:
        """The calls finished since :meth:`begin`, ordered by ``call_id`` (1, 2, ...)."""
        with self._lock:
            calls = list(self._calls)
        return sorted(calls, key=lambda c: c.call_id)

    def calls_for(self, item_id: str) -> list[ModelCall]:
        """The calls attributed to ``item_id``, ordered by ``call_id``."""
        return [c for c in self.calls() if c.item_id == item_id]

    def usage(self) -> dict[str, Any]:
        """Totals since :meth:`begin`.

        ``calls`` counts calls that reached the task model (ok or error); ``errors`` counts the
        failed ones, ``over_budget`` the calls refused by the budget and ``refused`` those refused
        for naming an item other than their key's; tokens and cost sum the successful calls.
        """
        with self._lock:
            return {
                "calls": self._n_ok + self._n_errors,
                "prompt_tokens": self._prompt_tokens,
                "completion_tokens": self._completion_tokens,
                "cost_usd": self._cost_usd,
                "errors": self._n_errors,
                "over_budget": self._n_over_budget,
                "refused": self._n_refused,
            }

    # -- request handling (called from the server threads) -------------------------------------

    def _dispatch(self, method: str, target: str, headers: _Headers, raw: bytes) -> _Reply:
        path = urllib.parse.urlsplit(target).path.rstrip("/")
        routes = {"/v1/models": "GET", "/v1/chat/completions": "POST", "/v1/completions": "POST"}
        if path not in routes:
            return _error(
                404,
                f"no route {method} {path or '/'}: this gateway serves GET /v1/models, "
                "POST /v1/chat/completions and POST /v1/completions",
                "invalid_request_error",
                "not_found",
            )
        if method != routes[path]:
            return _error(
                405, f"{path} takes {routes[path]}, not {method}", "invalid_request_error"
            )
        auth = headers.get("Authorization") or ""
        token = auth[7:].strip() if auth[:7].lower() == "bearer " else ""
        with self._lock:
            known = token in self._tokens
            assigned = self._tokens.get(token)
            model = self._task_model
        if not known:
            reason = "no API key given" if not token else "unknown API key"
            return _error(
                401,
                f"{reason}: send 'Authorization: Bearer <key>' with the key this sandbox "
                "worker was given (OPENAI_API_KEY)",
                "invalid_request_error",
                "invalid_api_key",
            )
        if path == "/v1/models":
            return _json({"object": "list", "data": [{"id": model.name, "object": "model"}]})
        try:
            body = json.loads(raw) if raw else None
        except ValueError as exc:
            return _error(400, f"request body is not valid JSON: {exc}", "invalid_request_error")
        if not isinstance(body, dict):
            return _error(400, "request body must be a JSON object", "invalid_request_error")
        # the item comes from the key alone: the scaffold controls every header it sends
        claimed = (headers.get("X-Sia-Item") or "").strip()
        forged = ""
        if claimed and claimed != assigned:
            bound = "no item" if assigned is None else f"item {assigned!r}"
            forged = f"X-Sia-Item names item {claimed[:200]!r} but this key is bound to {bound}"
        try:
            if path == "/v1/chat/completions":
                if not isinstance(body.get("messages"), list) or not body["messages"]:
                    raise _BadRequest(400, "'messages' must be a non-empty list")
                return self._call(body, body, assigned, completions=False, forged=forged)
            chat = _completions_to_chat(body)
            return self._call(body, chat, assigned, completions=True, forged=forged)
        except _BadRequest as exc:
            return _error(exc.status, exc.message, "invalid_request_error")

    def _call(
        self,
        received: dict[str, Any],
        chat: dict[str, Any],
        item_id: str | None,
        *,
        completions: bool,
        forged: str = "",
    ) -> _Reply:
        """Forward one call to the task model and record it for ``item_id``; a call refused by
        the budget (429) or for naming another item (``forged``, 403) is recorded, never sent."""
        started_at = time.time()
        t0 = time.perf_counter()
        with self._lock:
            model = self._task_model
            epoch = self._epoch
            self._next_id += 1
            call_id = self._next_id
            refusal = None if forged else self._budget_refusal()
            if refusal is None and not forged:
                self._admitted += 1
        adapter = getattr(model, "adapter", None)
        record: dict[str, Any] = {
            "call_id": call_id,
            "item_id": item_id,
            "model": model.name,
            "request": received,
            "adapter": adapter if adapter is None else str(adapter),
            "started_at": started_at,
        }
        if forged:  # the item it named is charged nothing, and no budget is used
            self._record(
                epoch, ModelCall(completion=None, status="refused", error=forged, **record)
            )
            return _error(403, forged, "permission_error", "item_mismatch")
        if refusal is not None:
            self._record(
                epoch, ModelCall(completion=None, status="over_budget", error=refusal, **record)
            )
            # the openai client would otherwise retry a 429 that cannot succeed
            return _error(
                429, refusal, "budget_exceeded", "budget_exceeded", (("x-should-retry", "false"),)
            )

        forward = {k: v for k, v in chat.items() if k not in ("stream", "stream_options")}
        try:
            resp = model.chat(forward)
            if not isinstance(resp, dict) or not isinstance(resp.get("choices"), list):
                raise ValueError(f"task model returned no 'choices' list: {resp!r:.300}")
            if not resp["choices"] or not all(isinstance(c, dict) for c in resp["choices"]):
                raise ValueError(
                    f"task model returned malformed 'choices': {resp['choices']!r:.300}"
                )
        except Exception as exc:
            latency = time.perf_counter() - t0
            if isinstance(exc, UpstreamError):
                status, message = (
                    (429 if exc.status == 429 else 502),
                    f"task model {model.name}: {exc}",
                )
            else:
                status, message = (
                    502,
                    f"task model {model.name} failed: {type(exc).__name__}: {exc}",
                )
            call = ModelCall(
                completion=None, status="error", error=message, latency_s=latency, **record
            )
            self._record(epoch, call)
            # a 4xx from upstream (bad request, context too long) will fail again if retried
            no_retry = (
                isinstance(exc, UpstreamError) and 400 <= exc.status < 500 and exc.status != 429
            )
            kind = "rate_limit_error" if status == 429 else "upstream_error"
            return _error(
                status, message, kind, None, (("x-should-retry", "false"),) if no_retry else ()
            )

        message = resp["choices"][0].get("message")
        completion = message.get("content") if isinstance(message, dict) else None
        completion = (
            completion if isinstance(completion, str) or completion is None else str(completion)
        )
        raw_usage = resp.get("usage")
        usage: dict[str, Any] = raw_usage if isinstance(raw_usage, dict) else {}
        prompt_tokens = _int(usage.get("prompt_tokens"))
        completion_tokens = _int(usage.get("completion_tokens"))
        if prompt_tokens is None:
            prompt_tokens = _estimate_tokens(_prompt_text(chat))
        if completion_tokens is None:
            completion_tokens = _estimate_tokens(completion or "")
        if "usage" not in resp or not usage:
            # clients read token counts from here; give them our estimate
            resp = {
                **resp,
                "usage": {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": completion_tokens,
                    "total_tokens": prompt_tokens + completion_tokens,
                },
            }
        cost = _float(usage.get("cost")) or self._price(model, prompt_tokens, completion_tokens)
        call = ModelCall(
            completion=completion,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            latency_s=time.perf_counter() - t0,
            cost_usd=cost,
            **record,
        )
        self._record(epoch, call)

        if completions:
            resp = _chat_to_completions(resp)
        if not received.get("stream"):
            return _json(resp)
        options = received.get("stream_options")
        include_usage = isinstance(options, dict) and bool(options.get("include_usage"))
        events = _sse_events(resp, completions=completions, include_usage=include_usage)
        sse = "".join(f"data: {json.dumps(e)}\n\n" for e in events) + "data: [DONE]\n\n"
        return _Reply(200, sse.encode(), "text/event-stream", (("Cache-Control", "no-cache"),))

    def _price(self, model: TaskModel, prompt_tokens: int, completion_tokens: int) -> float:
        """USD of a call from the pricer (0 without one, for an unknown model, or on error)."""
        if self._pricer is None:
            return 0.0
        try:
            return float(self._pricer(model.name, prompt_tokens, completion_tokens) or 0.0)
        except Exception:  # a price lookup must never fail a call
            log.debug("pricing %s failed", model.name, exc_info=True)
            return 0.0

    def _budget_refusal(self) -> str | None:
        """Why the next call is refused, or ``None``; caller holds the lock."""
        b = self._budget
        if b.max_calls is not None and self._admitted + 1 > b.max_calls:
            return (
                f"generation {self._gen} budget exceeded: max_calls={b.max_calls} "
                f"({self._admitted} calls already made)"
            )
        used = self._prompt_tokens + self._completion_tokens
        if b.max_tokens is not None and used >= b.max_tokens:
            return (
                f"generation {self._gen} budget exceeded: max_tokens={b.max_tokens} "
                f"({used} prompt + completion tokens already used)"
            )
        return None

    def _record(self, epoch: int, call: ModelCall) -> None:
        with self._lock:
            if epoch != self._epoch:
                return
            self._calls.append(call)
            if call.status == "ok":
                self._n_ok += 1
                self._prompt_tokens += call.prompt_tokens
                self._completion_tokens += call.completion_tokens
                self._cost_usd += call.cost_usd
            elif call.status == "over_budget":
                self._n_over_budget += 1
            elif call.status == "refused":
                self._n_refused += 1
            else:
                self._n_errors += 1


def _completions_to_chat(body: dict[str, Any]) -> dict[str, Any]:
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise _BadRequest(
            400, "'prompt' must be a string (batched or token-id prompts are not supported)"
        )
    chat = {k: v for k, v in body.items() if k not in _COMPLETIONS_ONLY}
    chat["messages"] = [{"role": "user", "content": prompt}]
    return chat


def _chat_to_completions(resp: dict[str, Any]) -> dict[str, Any]:
    ident = str(resp.get("id") or "")
    choices = []
    for i, choice in enumerate(resp["choices"]):
        message = choice.get("message") if isinstance(choice.get("message"), dict) else {}
        choices.append(
            {
                "index": choice.get("index", i),
                "text": message.get("content") or "",
                "logprobs": None,
                "finish_reason": choice.get("finish_reason"),
            }
        )
    return {
        "id": "cmpl-" + ident.removeprefix("chatcmpl-")
        if ident
        else f"cmpl-{secrets.token_hex(12)}",
        "object": "text_completion",
        "created": resp.get("created") or int(time.time()),
        "model": resp.get("model", ""),
        "choices": choices,
        "usage": resp.get("usage"),
    }


def _pieces(text: str) -> list[str]:
    """``text`` cut at word boundaries into pieces of about ``_STREAM_PIECE_CHARS``."""
    pieces: list[str] = []
    current = ""
    for word in _PIECE.findall(text):
        if current and len(current) + len(word) > _STREAM_PIECE_CHARS:
            pieces.append(current)
            current = ""
        current += word
    if current:
        pieces.append(current)
    return pieces


def _sse_events(
    resp: dict[str, Any], *, completions: bool, include_usage: bool
) -> list[dict[str, Any]]:
    """A complete response re-cut as OpenAI stream chunks (``chat.completion.chunk`` or
    ``text_completion``). Usage rides on the last chunk, or on its own chunk with empty
    ``choices`` when the client asked for ``stream_options.include_usage`` (as OpenAI does)."""
    head: dict[str, Any] = {
        "id": resp.get("id") or f"chatcmpl-{secrets.token_hex(12)}",
        "object": "text_completion" if completions else "chat.completion.chunk",
        "created": resp.get("created") or int(time.time()),
        "model": resp.get("model", ""),
    }
    if not completions and resp.get("system_fingerprint"):
        head["system_fingerprint"] = resp["system_fingerprint"]
    events: list[dict[str, Any]] = []

    def add(index: int, part: dict[str, Any], finish: str | None) -> None:
        events.append({**head, "choices": [{"index": index, **part, "finish_reason": finish}]})

    for i, choice in enumerate(resp["choices"]):
        index = choice.get("index", i)
        finish = choice.get("finish_reason") or "stop"
        if completions:
            for piece in _pieces(choice.get("text") or ""):
                add(index, {"text": piece, "logprobs": None}, None)
            add(index, {"text": "", "logprobs": None}, finish)
            continue
        message = choice.get("message") if isinstance(choice.get("message"), dict) else {}
        add(index, {"delta": {"role": message.get("role") or "assistant", "content": ""}}, None)
        for piece in _pieces(message.get("content") or ""):
            add(index, {"delta": {"content": piece}}, None)
        tool_calls = message.get("tool_calls")
        if isinstance(tool_calls, list) and tool_calls:
            deltas = [{"index": j, **tc} for j, tc in enumerate(tool_calls) if isinstance(tc, dict)]
            add(index, {"delta": {"tool_calls": deltas}}, None)
        add(index, {"delta": {}}, finish)
    usage = resp.get("usage")
    if include_usage:
        events.append({**head, "choices": [], "usage": usage})
    elif events:
        events[-1]["usage"] = usage
    return events


# --------------------------------------------------------------------------------------------
# HTTP plumbing
# --------------------------------------------------------------------------------------------


class _GatewayServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], gateway: Gateway) -> None:
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
