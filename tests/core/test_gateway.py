"""The model gateway, over real HTTP on loopback, with the OpenAI stub as its upstream."""

from __future__ import annotations

import http.client
import json
import pickle
import socket
import threading
import time
import urllib.parse
from collections.abc import Iterator
from typing import Any

import pytest

from sia_core.contracts.backend import TaskModel
from sia_core.contracts.records import ModelCall, from_json, to_json
from sia_core.services.gateway import Budget, Gateway, HTTPTaskModel, UpstreamError
from sia_core.testing.openai_stub import OpenAIStub, count_tokens

# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


class Client:
    """A stdlib keep-alive client for an OpenAI-style base URL."""

    def __init__(self, base_url: str, token: str | None = None) -> None:
        parts = urllib.parse.urlsplit(base_url)
        assert parts.hostname is not None
        self.prefix = parts.path.rstrip("/")
        self.token = token
        self.conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        headers: dict[str, str] | None = None,
        raw: bytes | None = None,
    ) -> tuple[int, dict[str, str], bytes]:
        """Send one request; return status, lower-cased headers and the raw body."""
        sent = {"Content-Type": "application/json", **(headers or {})}
        if self.token is not None:
            sent.setdefault("Authorization", f"Bearer {self.token}")
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        self.conn.request(method, self.prefix + path, body=data, headers=sent)
        resp = self.conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()

    def chat(
        self, content: str, headers: dict[str, str] | None = None, **extra: Any
    ) -> tuple[int, Any]:
        """POST a one-message chat; return the status and the decoded JSON body."""
        body = {"model": "whatever", "messages": [{"role": "user", "content": content}], **extra}
        status, _, data = self.request("POST", "/chat/completions", body, headers)
        return status, json.loads(data)

    def close(self) -> None:
        self.conn.close()


def parse_sse(data: bytes) -> list[Any]:
    """The ``data:`` payloads of an SSE body (JSON-decoded, ``[DONE]`` kept as a string)."""
    events: list[Any] = []
    for block in data.decode().split("\n\n"):
        if not block.strip():
            continue
        lines = [line for line in block.split("\n") if line.startswith("data: ")]
        assert len(lines) == 1, block
        payload = lines[0][len("data: ") :]
        events.append(payload if payload == "[DONE]" else json.loads(payload))
    return events


class LocalModel(TaskModel):
    """An in-process TaskModel: answers from ``respond`` (which may raise)."""

    def __init__(
        self, respond: Any = None, *, name: str = "local-model", adapter: str | None = None
    ):
        self.name = name
        self.trainable = True
        self.adapter = adapter
        self.respond = respond or (lambda body: reply_body(body["messages"][-1]["content"].upper()))
        self.bodies: list[dict[str, Any]] = []

    def chat(self, body: dict[str, Any]) -> dict[str, Any]:
        self.bodies.append(body)
        return self.respond(body)


def reply_body(text: str, usage: dict[str, Any] | None = None) -> dict[str, Any]:
    """A chat.completion response body with ``text``."""
    body: dict[str, Any] = {
        "id": "chatcmpl-local",
        "object": "chat.completion",
        "created": 1,
        "model": "local-model",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
        ],
    }
    if usage is not None:
        body["usage"] = usage
    return body


@pytest.fixture
def stub() -> Iterator[OpenAIStub]:
    with OpenAIStub() as server:
        yield server


@pytest.fixture
def gateway(stub: OpenAIStub) -> Iterator[Gateway]:
    model = HTTPTaskModel(stub.url, "task-model", timeout_s=10)
    with Gateway(model) as gw:
        gw.begin(1)
        yield gw
    model.close()


@pytest.fixture
def client(gateway: Gateway) -> Iterator[Client]:
    c = Client(gateway.url, gateway.new_token())
    yield c
    c.close()


# --------------------------------------------------------------------------------------------
# chat, attribution, auth
# --------------------------------------------------------------------------------------------


def test_chat_returns_stub_reply_and_is_recorded_for_the_assigned_item(
    gateway: Gateway, client: Client, stub: OpenAIStub
) -> None:
    assert client.token is not None
    gateway.assign(client.token, "item-1")
    status, body = client.chat("what is two plus two")

    assert status == 200
    assert body["choices"][0]["message"]["content"] == "what is two plus two"
    assert body["usage"] == {"prompt_tokens": 5, "completion_tokens": 5, "total_tokens": 10}
    assert stub.requests[-1]["model"] == "task-model"  # HTTPTaskModel replaced the model
    (call,) = gateway.calls()
    assert call.call_id == 1
    assert call.item_id == "item-1"
    assert call.model == "task-model"
    assert call.status == "ok"
    assert call.completion == "what is two plus two"
    assert call.request["messages"][0]["content"] == "what is two plus two"
    assert call.request["model"] == "whatever"  # the body as the scaffold sent it
    assert (call.prompt_tokens, call.completion_tokens) == (5, 5)
    assert 0 < call.latency_s < 10
    assert abs(call.started_at - time.time()) < 60
    assert gateway.calls_for("item-1") == [call]
    assert gateway.usage() == {
        "calls": 1,
        "prompt_tokens": 5,
        "completion_tokens": 5,
        "cost_usd": 0.0,
        "errors": 0,
        "over_budget": 0,
        "refused": 0,
    }
    # the record crosses into agent_execution.json
    assert from_json(ModelCall, to_json(call)) == call


def test_calls_are_attributed_by_the_key_alone(gateway: Gateway, client: Client) -> None:
    assert client.token is not None
    gateway.assign(client.token, "assigned")
    client.chat("one")
    assert client.chat("two", headers={"X-Sia-Item": "assigned"})[0] == 200  # the same item
    gateway.assign(client.token, None)
    client.chat("three")

    assert [c.item_id for c in gateway.calls()] == ["assigned", "assigned", None]
    assert [c.completion for c in gateway.calls_for("assigned")] == ["one", "two"]


def test_forged_x_sia_item_is_refused_403_and_recorded_for_the_real_item(
    gateway: Gateway, stub: OpenAIStub
) -> None:
    gateway.begin(1, Budget(max_calls=2))
    mine, victim = (
        Client(gateway.url, gateway.new_token()),
        Client(gateway.url, gateway.new_token()),
    )
    assert mine.token is not None and victim.token is not None
    gateway.assign(mine.token, "item-1")
    gateway.assign(victim.token, "item-2")
    try:
        assert mine.chat("honest")[0] == 200
        status, body = mine.chat("forged", headers={"X-Sia-Item": "item-2"})
        assert victim.chat("victim's own")[0] == 200  # the refusal used none of the budget
        gateway.assign(mine.token, None)
        unbound_status, unbound = mine.chat("unbound", headers={"X-Sia-Item": "item-2"})
    finally:
        mine.close()
        victim.close()

    message = "X-Sia-Item names item 'item-2' but this key is bound to item 'item-1'"
    assert status == 403
    assert body["error"] == {
        "message": message,
        "type": "permission_error",
        "param": None,
        "code": "item_mismatch",
    }
    assert unbound_status == 403
    assert unbound["error"]["message"] == (
        "X-Sia-Item names item 'item-2' but this key is bound to no item"
    )
    assert [r["messages"][0]["content"] for r in stub.requests] == ["honest", "victim's own"]

    refused = [c for c in gateway.calls() if c.status == "refused"]
    assert [(c.item_id, c.error) for c in refused] == [
        ("item-1", message),
        (None, "X-Sia-Item names item 'item-2' but this key is bound to no item"),
    ]
    assert refused[0].request["messages"][0]["content"] == "forged"
    assert refused[0].completion is None and refused[0].prompt_tokens == 0
    assert [(c.completion, c.status) for c in gateway.calls_for("item-1")] == [
        ("honest", "ok"),
        (None, "refused"),
    ]
    # nothing of the forged call counts against the item it named
    assert [(c.completion, c.status) for c in gateway.calls_for("item-2")] == [
        ("victim's own", "ok")
    ]
    usage = gateway.usage()
    assert (usage["calls"], usage["errors"], usage["over_budget"], usage["refused"]) == (2, 0, 0, 2)


def test_tokens_are_distinct_and_assign_rejects_unknown_tokens(gateway: Gateway) -> None:
    tokens = {gateway.new_token() for _ in range(50)}
    assert len(tokens) == 50
    assert all(len(t) >= 30 for t in tokens)
    with pytest.raises(KeyError):
        gateway.assign("sia-not-a-token", "x")


@pytest.mark.parametrize("auth", [None, "Bearer sia-guessed", "Basic abc"])
def test_unknown_or_missing_token_is_401_and_not_recorded(
    gateway: Gateway, auth: str | None
) -> None:
    c = Client(gateway.url)
    headers = {} if auth is None else {"Authorization": auth}
    status, _, data = c.request(
        "POST", "/chat/completions", {"messages": [{"role": "user", "content": "x"}]}, headers
    )
    c.close()

    assert status == 401
    error = json.loads(data)["error"]
    assert "API key" in error["message"]
    assert error["code"] == "invalid_api_key"
    assert gateway.calls() == []


def test_unknown_route_is_404_in_openai_error_shape(client: Client) -> None:
    status, headers, data = client.request("POST", "/embeddings", {"input": "x"})
    assert status == 404
    assert headers["content-type"] == "application/json"
    error = json.loads(data)["error"]
    assert set(error) >= {"message", "type", "code"}
    assert "/v1/chat/completions" in error["message"]
    # the keep-alive connection still works after an error
    assert client.chat("still here")[0] == 200


def test_invalid_json_is_400(client: Client, gateway: Gateway) -> None:
    status, _, data = client.request("POST", "/chat/completions", raw=b"{not json")
    assert status == 400
    assert "JSON" in json.loads(data)["error"]["message"]
    status, _, _ = client.request("POST", "/chat/completions", {"messages": []})
    assert status == 400
    assert gateway.calls() == []


def test_chunked_request_body_is_read(gateway: Gateway, client: Client) -> None:
    body = json.dumps({"messages": [{"role": "user", "content": "chunked hello"}]}).encode()
    client.conn.request(
        "POST",
        "/v1/chat/completions",
        body=iter([body[:10], body[10:]]),
        headers={"Authorization": f"Bearer {client.token}"},
        encode_chunked=True,
    )
    resp = client.conn.getresponse()
    assert resp.status == 200
    assert json.loads(resp.read())["choices"][0]["message"]["content"] == "chunked hello"


# --------------------------------------------------------------------------------------------
# budget
# --------------------------------------------------------------------------------------------


def test_budget_on_calls_refuses_with_429_and_records_over_budget(
    gateway: Gateway, client: Client, stub: OpenAIStub
) -> None:
    gateway.begin(2, Budget(max_calls=2))
    results = [client.chat(f"call {i}") for i in range(3)]

    assert [s for s, _ in results[:2]] == [200, 200]
    status, body = results[2]
    assert status == 429
    assert body["error"]["type"] == "budget_exceeded"
    assert "max_calls=2" in body["error"]["message"]
    assert len(stub.requests) == 2  # the refused call never reached the model
    calls = gateway.calls()
    assert [c.status for c in calls] == ["ok", "ok", "over_budget"]
    assert [c.call_id for c in calls] == [1, 2, 3]
    assert [c.completion for c in calls[:2]] == ["call 0", "call 1"]
    assert "max_calls" in calls[2].error
    usage = gateway.usage()
    assert (usage["calls"], usage["over_budget"], usage["errors"]) == (2, 1, 0)


def test_budget_429_tells_openai_clients_not_to_retry(gateway: Gateway, client: Client) -> None:
    gateway.begin(2, Budget(max_calls=0))
    status, headers, _ = client.request(
        "POST", "/chat/completions", {"messages": [{"role": "user", "content": "x"}]}
    )
    assert status == 429
    assert headers["x-should-retry"] == "false"


def test_budget_on_tokens(gateway: Gateway, client: Client) -> None:
    gateway.begin(3, Budget(max_tokens=10))
    s1, _ = client.chat("one two three")  # 3 + 3 = 6 tokens
    s2, _ = client.chat("four five six")  # 12 >= 10 after this one
    s3, body = client.chat("seven")

    assert (s1, s2, s3) == (200, 200, 429)
    assert body["error"]["type"] == "budget_exceeded"
    assert "max_tokens=10" in body["error"]["message"]
    assert [c.status for c in gateway.calls()] == ["ok", "ok", "over_budget"]
    assert gateway.usage()["prompt_tokens"] + gateway.usage()["completion_tokens"] == 12


def test_budget_holds_under_concurrency(stub: OpenAIStub) -> None:
    stub.delay_s = 0.05  # keep calls in flight together
    model = HTTPTaskModel(stub.url, "m")
    with Gateway(model, budget=Budget(max_calls=5)) as gw:
        gw.begin(1)
        token = gw.new_token()
        statuses: list[int] = []
        lock = threading.Lock()

        def worker() -> None:
            c = Client(gw.url, token)
            status, _ = c.chat("hi")
            c.close()
            with lock:
                statuses.append(status)

        threads = [threading.Thread(target=worker) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)

        assert sorted(statuses) == [200] * 5 + [429] * 3
        assert len(stub.requests) == 5
        assert sorted(c.status for c in gw.calls()).count("ok") == 5
    model.close()


def test_begin_resets_log_counters_and_budget(gateway: Gateway, client: Client) -> None:
    gateway.begin(1, Budget(max_calls=1))
    client.chat("a")
    assert client.chat("b")[0] == 429
    assert gateway.usage()["over_budget"] == 1

    gateway.begin(2)  # back to the constructor's (unlimited) budget
    assert gateway.calls() == []
    assert gateway.usage() == {
        "calls": 0,
        "prompt_tokens": 0,
        "completion_tokens": 0,
        "cost_usd": 0.0,
        "errors": 0,
        "over_budget": 0,
        "refused": 0,
    }
    assert [client.chat(x)[0] for x in "cde"] == [200, 200, 200]
    assert [c.call_id for c in gateway.calls()] == [1, 2, 3]


def test_call_in_flight_across_begin_is_not_recorded_in_the_new_generation() -> None:
    entered, release = threading.Event(), threading.Event()

    def respond(body: dict[str, Any]) -> dict[str, Any]:
        if body["messages"][-1]["content"] == "slow":
            entered.set()
            release.wait(10)
        return reply_body("done")

    with Gateway(LocalModel(respond)) as gw:
        gw.begin(1)
        c = Client(gw.url, gw.new_token())
        result: list[int] = []
        t = threading.Thread(target=lambda: result.append(c.chat("slow")[0]))
        t.start()
        assert entered.wait(10)
        gw.begin(2)
        release.set()
        t.join(10)

        assert result == [200]
        assert gw.calls() == []
        assert gw.usage()["calls"] == 0
        c2 = Client(gw.url, gw.new_token())
        c2.chat("fast")
        assert [x.call_id for x in gw.calls()] == [1]
        c.close()
        c2.close()


# --------------------------------------------------------------------------------------------
# upstream failures
# --------------------------------------------------------------------------------------------


def test_upstream_500_is_502_recorded_as_error_and_next_call_succeeds(
    gateway: Gateway, client: Client, stub: OpenAIStub
) -> None:
    stub.fail_next(1, 500, "model crashed")
    status, body = client.chat("first")
    assert status == 502
    assert "model crashed" in body["error"]["message"]
    assert "500" in body["error"]["message"]

    status, body = client.chat("second")
    assert status == 200
    assert body["choices"][0]["message"]["content"] == "second"

    first, second = gateway.calls()
    assert (first.status, first.completion) == ("error", None)
    assert "model crashed" in first.error
    assert (first.prompt_tokens, first.completion_tokens) == (0, 0)
    assert second.status == "ok"
    usage = gateway.usage()
    assert (usage["calls"], usage["errors"], usage["prompt_tokens"]) == (2, 1, 1)


def test_upstream_429_passes_through_as_429(
    gateway: Gateway, client: Client, stub: OpenAIStub
) -> None:
    stub.fail_next(1, 429, "slow down")
    status, body = client.chat("x")
    assert status == 429
    assert body["error"]["type"] != "budget_exceeded"
    assert "slow down" in body["error"]["message"]
    assert gateway.calls()[0].status == "error"


def test_upstream_400_is_502_and_not_retryable(
    gateway: Gateway, client: Client, stub: OpenAIStub
) -> None:
    stub.fail_next(1, 400, "context length exceeded")
    status, headers, data = client.request(
        "POST", "/chat/completions", {"messages": [{"role": "user", "content": "x"}]}
    )
    assert status == 502
    assert headers["x-should-retry"] == "false"
    assert "context length exceeded" in json.loads(data)["error"]["message"]


@pytest.mark.parametrize(
    "respond",
    [
        pytest.param(lambda body: 1 / 0, id="raises"),
        pytest.param(lambda body: {"no": "choices"}, id="malformed"),
        pytest.param(lambda body: "not a dict", id="not-a-dict"),
    ],
)
def test_task_model_failure_is_502_and_the_server_keeps_answering(respond: Any) -> None:
    model = LocalModel(respond)
    with Gateway(model) as gw:
        gw.begin(1)
        c = Client(gw.url, gw.new_token())
        status, body = c.chat("x")
        assert status == 502
        assert "local-model" in body["error"]["message"]
        model.respond = lambda body: reply_body("fine")
        assert c.chat("y") == (200, reply_body("fine") | {"usage": reply_body_usage("y", "fine")})
        assert [x.status for x in gw.calls()] == ["error", "ok"]
        assert gw.usage()["errors"] == 1
        c.close()


def reply_body_usage(prompt: str, completion: str) -> dict[str, int]:
    """The gateway's estimate (~4 characters a token) for a response without ``usage``."""
    p, q = (len(prompt) + 3) // 4, (len(completion) + 3) // 4
    return {"prompt_tokens": p, "completion_tokens": q, "total_tokens": p + q}


# --------------------------------------------------------------------------------------------
# in-process task models
# --------------------------------------------------------------------------------------------


def test_in_process_model_records_adapter_cost_and_upstream_usage() -> None:
    usage = {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18, "cost": 0.25}
    model = LocalModel(lambda body: reply_body("ok", usage), adapter="gen3-lora")
    assert isinstance(model, TaskModel)
    with Gateway(model) as gw:
        gw.begin(1)
        c = Client(gw.url, gw.new_token())
        status, body = c.chat("hello", stream=False, temperature=0.2)
        c.close()

    assert status == 200
    assert body["usage"] == usage
    assert model.bodies[0]["temperature"] == 0.2
    assert "stream" not in model.bodies[0]
    (call,) = gw.calls()
    assert (call.adapter, call.cost_usd, call.model) == ("gen3-lora", 0.25, "local-model")
    assert (call.prompt_tokens, call.completion_tokens) == (11, 7)
    assert gw.usage()["cost_usd"] == 0.25


def test_missing_usage_is_estimated_and_added_to_the_response() -> None:
    model = LocalModel(lambda body: reply_body("x" * 40))
    with Gateway(model) as gw:
        gw.begin(1)
        c = Client(gw.url, gw.new_token())
        _, body = c.chat("y" * 80)
        c.close()

    assert body["usage"] == {"prompt_tokens": 20, "completion_tokens": 10, "total_tokens": 30}
    (call,) = gw.calls()
    assert (call.prompt_tokens, call.completion_tokens) == (20, 10)


def test_set_task_model_switches_routing_names_and_records(stub: OpenAIStub) -> None:
    first = HTTPTaskModel(stub.url, "first")
    with Gateway(first) as gw:
        gw.begin(1)
        c = Client(gw.url, gw.new_token())
        c.chat("a")
        gw.set_task_model(LocalModel(name="second"))
        _, body = c.chat("b")
        _, _, models = c.request("GET", "/models")
        c.close()
    first.close()

    assert body["choices"][0]["message"]["content"] == "B"
    assert [x.model for x in gw.calls()] == ["first", "second"]
    assert json.loads(models)["data"][0]["id"] == "second"
    assert gw.task_model.name == "second"


# --------------------------------------------------------------------------------------------
# concurrency, streaming, other routes
# --------------------------------------------------------------------------------------------


def test_concurrent_calls_from_8_threads_are_all_recorded(
    gateway: Gateway, stub: OpenAIStub
) -> None:
    stub.delay_s = 0.01
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            c = Client(gateway.url, gateway.new_token())
            assert c.token is not None
            gateway.assign(c.token, f"item-{n}")
            for i in range(5):
                status, body = c.chat(f"w{n} c{i}")
                assert status == 200
                assert body["choices"][0]["message"]["content"] == f"w{n} c{i}"
            c.close()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)

    assert errors == []
    calls = gateway.calls()
    assert [c.call_id for c in calls] == list(range(1, 41))
    for n in range(8):
        mine = gateway.calls_for(f"item-{n}")
        assert [c.completion for c in mine] == [f"w{n} c{i}" for i in range(5)]
    assert gateway.usage()["calls"] == 40


LONG = " ".join(f"word{i}" for i in range(60))


@pytest.mark.parametrize("include_usage", [False, True])
def test_streaming_chat_is_sse_and_reassembles_to_the_same_text(
    gateway: Gateway, client: Client, stub: OpenAIStub, include_usage: bool
) -> None:
    body: dict[str, Any] = {"messages": [{"role": "user", "content": LONG}], "stream": True}
    if include_usage:
        body["stream_options"] = {"include_usage": True}
    status, headers, data = client.request("POST", "/chat/completions", body)

    assert status == 200
    assert headers["content-type"].startswith("text/event-stream")
    events = parse_sse(data)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert all(e["object"] == "chat.completion.chunk" for e in chunks)
    assert len({e["id"] for e in chunks}) == 1
    choices = [e["choices"][0] for e in chunks if e["choices"]]
    assert choices[0]["delta"]["role"] == "assistant"
    content_chunks = [c["delta"]["content"] for c in choices if c["delta"].get("content")]
    assert len(content_chunks) > 1
    assert "".join(content_chunks) == LONG
    assert choices[-1]["finish_reason"] == "stop"
    usage = [e["usage"] for e in chunks if e.get("usage")]
    assert usage == [{"prompt_tokens": 60, "completion_tokens": 60, "total_tokens": 120}]
    if include_usage:
        assert chunks[-1]["choices"] == []
    assert stub.requests[-1]["stream"] is False  # the upstream is called non-streamed
    assert "stream_options" not in stub.requests[-1]
    assert gateway.calls()[0].completion == LONG
    assert gateway.calls()[0].request["stream"] is True
    # keep-alive survives a streamed answer
    assert client.chat("after")[0] == 200


def test_completions_endpoint(gateway: Gateway, client: Client, stub: OpenAIStub) -> None:
    status, _, data = client.request(
        "POST", "/completions", {"model": "m", "prompt": "say this back", "max_tokens": 2}
    )
    assert status == 200
    body = json.loads(data)
    assert body["object"] == "text_completion"
    assert body["choices"][0]["text"] == "say this"
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] == 2
    assert stub.requests[-1]["messages"] == [{"role": "user", "content": "say this back"}]
    assert "prompt" not in stub.requests[-1]
    call = gateway.calls()[0]
    assert call.request["prompt"] == "say this back"
    assert call.completion == "say this"

    status, headers, data = client.request("POST", "/completions", {"prompt": LONG, "stream": True})
    assert status == 200
    assert headers["content-type"].startswith("text/event-stream")
    events = parse_sse(data)
    assert events[-1] == "[DONE]"
    assert all(e["object"] == "text_completion" for e in events[:-1])
    assert "".join(e["choices"][0]["text"] for e in events[:-1]) == LONG

    status, _, _ = client.request("POST", "/completions", {"prompt": [1, 2, 3]})
    assert status == 400


def test_models_endpoint(gateway: Gateway, client: Client) -> None:
    status, _, data = client.request("GET", "/models")
    assert status == 200
    assert json.loads(data) == {
        "object": "list",
        "data": [{"id": "task-model", "object": "model"}],
    }
    assert client.request("POST", "/models", {})[0] == 405


def test_url_requires_start_and_stop_frees_the_port(stub: OpenAIStub) -> None:
    model = HTTPTaskModel(stub.url, "m")
    gw = Gateway(model)
    with pytest.raises(RuntimeError):
        _ = gw.url
    gw.start()
    assert gw.url.startswith("http://127.0.0.1:")
    port = urllib.parse.urlsplit(gw.url).port
    assert port is not None
    c = Client(gw.url, gw.new_token())
    assert c.chat("hi")[0] == 200  # leaves a keep-alive connection open
    gw.stop()
    gw.stop()  # idempotent
    model.close()

    with pytest.raises(OSError):  # the open keep-alive connection was closed
        c.chat("again")
    c.close()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    again = Gateway(LocalModel(), port=port)
    again.start()
    try:
        again.begin(1)
        c2 = Client(again.url, again.new_token())
        assert c2.chat("back")[1]["choices"][0]["message"]["content"] == "BACK"
        c2.close()
    finally:
        again.stop()


# --------------------------------------------------------------------------------------------
# HTTPTaskModel and the stub on their own
# --------------------------------------------------------------------------------------------


def test_http_task_model_sends_key_and_model_and_reuses_one_connection() -> None:
    with OpenAIStub(api_key="sk-secret") as stub:
        model = HTTPTaskModel(stub.url, "served-model", api_key="sk-secret", trainable=True)
        assert (model.name, model.trainable) == ("served-model", True)
        body = {
            "model": "ignored",
            "messages": [{"role": "user", "content": "a b c"}],
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        outs = [model.chat(body) for _ in range(5)]

        assert outs[0]["choices"][0]["message"]["content"] == "a b c"
        assert stub.requests[0] == {
            "model": "served-model",
            "messages": [{"role": "user", "content": "a b c"}],
            "stream": False,
        }
        assert body["model"] == "ignored"  # the caller's body is not mutated
        assert stub.n_connections == 1
        model.close()

        wrong = HTTPTaskModel(stub.url, "m", api_key="wrong")
        with pytest.raises(UpstreamError) as info:
            wrong.chat(body)
        wrong.close()
        assert info.value.status == 401


def test_http_task_model_retries_a_connection_the_server_closed(stub: OpenAIStub) -> None:
    model = HTTPTaskModel(stub.url, "m")
    model.chat({"messages": [{"role": "user", "content": "one"}]})
    stub.drop_connections()
    time.sleep(0.05)
    out = model.chat({"messages": [{"role": "user", "content": "two"}]})
    assert out["choices"][0]["message"]["content"] == "two"
    assert stub.n_connections == 2
    model.close()


def test_http_task_model_errors_carry_status_and_message(stub: OpenAIStub) -> None:
    model = HTTPTaskModel(stub.url, "m", timeout_s=0.2)
    body = {"messages": [{"role": "user", "content": "x"}]}
    stub.fail_next(1, 503, "overloaded")
    with pytest.raises(UpstreamError) as info:
        model.chat(body)
    assert (info.value.status, info.value.message) == (503, "overloaded")
    copy = pickle.loads(pickle.dumps(info.value))  # crosses process boundaries intact
    assert (copy.status, copy.message) == (503, "overloaded")

    stub.delay_s = 1.0
    with pytest.raises(UpstreamError) as info:
        model.chat(body)
    assert info.value.status == 504
    stub.delay_s = 0.0
    model.close()

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]
    with pytest.raises(UpstreamError) as info:
        HTTPTaskModel(f"http://127.0.0.1:{dead_port}/v1", "m").chat(body)
    assert info.value.status == 502
    assert "cannot reach" in info.value.message

    with pytest.raises(ValueError):
        HTTPTaskModel("127.0.0.1:8080", "m")


def test_stub_streams_real_sse_and_counts_failures(stub: OpenAIStub) -> None:
    c = Client(stub.url)
    body = {"messages": [{"role": "user", "content": "x y z"}], "stream": True}
    status, headers, data = c.request("POST", "/chat/completions", body)
    assert status == 200
    assert headers["transfer-encoding"] == "chunked"
    events = parse_sse(data)
    assert events[-1] == "[DONE]"
    text = "".join(e["choices"][0]["delta"].get("content", "") for e in events[:-1])
    assert text == "x y z"

    stub.fail_next(2, 500)
    statuses = [c.chat("q")[0] for _ in range(3)]
    c.close()
    assert statuses == [500, 500, 200]
    assert count_tokens("  a  b\nc ") == 3
