"""The model gateway: the only way scaffold code reaches the task model.

The orchestrator serves one :class:`Gateway` per run: an OpenAI-compatible HTTP endpoint on
loopback. Each sandbox worker gets its own API key (:meth:`Gateway.new_token`) and sends
``Authorization: Bearer <key>``; the gateway routes the call to the configured
:class:`~sia_core.contracts.backend.TaskModel`, records it as a :class:`~sia_core.contracts.records.ModelCall`
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

Modules: ``endpoint`` (the :class:`Gateway`: keys, routing, forwarding, recording),
``accounting`` (:class:`Budget` and a generation's call log and totals), ``upstream``
(:class:`HTTPTaskModel`, :class:`UpstreamError`), ``wire`` (the OpenAI request and reply
formats) and ``http_server`` (the loopback HTTP server and handler).
"""

from __future__ import annotations

from sia_core.services.gateway.accounting import Budget
from sia_core.services.gateway.endpoint import Gateway
from sia_core.services.gateway.upstream import HTTPTaskModel, UpstreamError

__all__ = ["Budget", "Gateway", "HTTPTaskModel", "UpstreamError"]
