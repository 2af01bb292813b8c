"""The :class:`Gateway`: the OpenAI-compatible endpoint scaffolds call.

It owns the per-worker API keys and the items they are bound to, routes and authenticates each
request, refuses calls that name another item or exceed the budget, forwards the rest to the
task model and records every call (the counting itself is in
:mod:`~sia_core.services.gateway.accounting`).
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
import time
import urllib.parse
from collections.abc import Callable
from typing import Any

from sia_core.contracts.backend import TaskModel
from sia_core.contracts.records import ModelCall
from sia_core.services.gateway.accounting import Budget, _CallAccounting
from sia_core.services.gateway.http_server import _GatewayServer
from sia_core.services.gateway.upstream import UpstreamError
from sia_core.services.gateway.wire import (
    _BadRequest,
    _chat_to_completions,
    _completions_to_chat,
    _error,
    _estimate_tokens,
    _float,
    _Headers,
    _int,
    _json,
    _prompt_text,
    _Reply,
    _sse_events,
)
from sia_core.services.serving import ThreadedServer

__all__ = ["Gateway"]

log = logging.getLogger(__name__)


class Gateway(ThreadedServer, _CallAccounting):
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
