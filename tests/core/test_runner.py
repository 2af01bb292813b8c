"""The scaffold runner: real sandboxed workers against a loopback stand-in for the gateway."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from sia_core.contracts.records import Item, ItemResult
from sia_core.contracts.sandbox import Limits
from sia_core.services.process_sandbox import ProcessSandbox
from sia_core.services.runner import HOST_PATH, RunSpec, run_items, run_program, scaffold_kind

SANDBOX = ProcessSandbox()


# --------------------------------------------------------------------------------------------
# a tiny OpenAI-compatible server and gateway stand-in
# --------------------------------------------------------------------------------------------


class FakeGateway:
    """``url``/``new_token``/``assign`` over a stdlib HTTP server on 127.0.0.1."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.tokens: list[str] = []
        self.assigned: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with gateway._lock:
                    gateway.requests.append(
                        {
                            "path": self.path,
                            "auth": self.headers.get("Authorization"),
                            # the item the key was bound to when the call came in
                            "item": next(
                                (
                                    i
                                    for t, i in reversed(gateway.assigned)
                                    if f"Bearer {t}" == self.headers.get("Authorization")
                                ),
                                None,
                            ),
                            "body": body,
                        }
                    )
                if self.path != "/v1/chat/completions":
                    self.send_error(404)
                    return
                if body["messages"][-1]["content"] == "fail please":
                    self.send_error(500, "boom")
                    return
                text = "echo:" + body["messages"][-1]["content"]
                reply = {
                    "choices": [{"message": {"role": "assistant", "content": text}}],
                    "usage": {"prompt_tokens": 3, "completion_tokens": 2},
                }
                data = json.dumps(reply).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def new_token(self) -> str:
        with self._lock:
            token = f"tok-{len(self.tokens)}"
            self.tokens.append(token)
        return token

    def assign(self, token: str, item_id: str) -> None:
        with self._lock:
            self.assigned.append((token, item_id))

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def gateway() -> Iterator[FakeGateway]:
    gw = FakeGateway()
    yield gw
    gw.close()


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2] not in "ZX"


def _scaffold(tmp_path: Path, source: str) -> Path:
    path = tmp_path / "target_agent.py"
    path.write_text(textwrap.dedent(source))
    return path


def _spec(tmp_path: Path, scaffold: Path, **kwargs: Any) -> RunSpec:
    public = tmp_path / "public"
    public.mkdir(exist_ok=True)
    kwargs.setdefault("parallel", 1)
    kwargs.setdefault("item_timeout_s", 20.0)
    kwargs.setdefault("setup_timeout_s", 20.0)
    return RunSpec(scaffold_path=scaffold, work_dir=tmp_path / "work", public_dir=public, **kwargs)


def _items(n: int, split: str = "dev") -> list[Item]:
    return [Item(id=f"i{k}", input={"k": k}, split=split) for k in range(n)]


def _by_id(results: list[ItemResult]) -> dict[str, ItemResult]:
    return {r.item_id: r for r in results}


# --------------------------------------------------------------------------------------------
# scaffold kinds
# --------------------------------------------------------------------------------------------


def test_scaffold_kind(tmp_path: Path) -> None:
    per_item = tmp_path / "a.py"
    per_item.write_text("import os\n\ndef solve(item, ctx):\n    return 1\n")
    program = tmp_path / "b.py"
    program.write_text(
        "def main():\n    def solve(x):\n        pass\n\nif __name__ == '__main__':\n    main()\n"
    )
    assigned = tmp_path / "c.py"
    assigned.write_text("def _impl(item, ctx):\n    return 1\n\nsolve = _impl\n")
    assert scaffold_kind(per_item) == "per_item"
    assert scaffold_kind(program) == "program"
    assert scaffold_kind(assigned) == "per_item"


# --------------------------------------------------------------------------------------------
# per-item runs
# --------------------------------------------------------------------------------------------


def test_llm_calls_reach_gateway_with_item_and_token(tmp_path: Path, gateway: FakeGateway) -> None:
    scaffold = _scaffold(
        tmp_path,
        """
        import os

        def solve(item, ctx):
            a = ctx.llm("q" + str(item["input"]["k"]))
            b = ctx.llm([{"role": "user", "content": "m"}], temperature=0, max_tokens=5)
            full = ctx.chat([{"role": "user", "content": "c"}])
            ctx.log("note", {"split": item["split"], "env": sorted(os.environ)})
            return [a, b, full["usage"]["prompt_tokens"], ctx.item_id, ctx.model]
        """,
    )
    spec = _spec(tmp_path, scaffold, model_name="tiny-model", parallel=2)
    seen: list[str] = []
    results = run_items(
        spec, _items(3), sandbox=SANDBOX, gateway=gateway, on_item=lambda r: seen.append(r.item_id)
    )
    assert [r.item_id for r in results] == ["i0", "i1", "i2"]
    assert sorted(seen) == ["i0", "i1", "i2"]
    for k, r in enumerate(results):
        assert r.status == "ok", r.error
        assert r.answer == [f"echo:q{k}", "echo:m", 3, f"i{k}", "tiny-model"]
        assert r.seconds > 0
        kinds = [s.kind for s in r.trajectory]
        assert kinds == ["llm_call", "llm_call", "llm_call", "note"]
        first = r.trajectory[0].content
        assert first["completion"] == f"echo:q{k}"
        assert first["messages"] == [{"role": "user", "content": f"q{k}"}]
        assert r.trajectory[1].content["params"] == {"temperature": 0, "max_tokens": 5}
        note = r.trajectory[3].content
        assert note["split"] == "dev"
        assert "OPENAI_API_KEY" in note["env"] and "SIA_GATEWAY_URL" in note["env"]

    assert len(gateway.requests) == 9
    tokens = set(gateway.tokens)
    assign_token = dict((item, token) for token, item in gateway.assigned)
    for req in gateway.requests:
        assert req["path"] == "/v1/chat/completions"
        token = req["auth"].removeprefix("Bearer ")
        assert token in tokens
        assert assign_token[req["item"]] == token  # assigned to that worker before it ran
        assert req["body"]["model"] == "tiny-model"
    assert sorted(r["item"] for r in gateway.requests) == sorted(["i0", "i1", "i2"] * 3)
    assert len(tokens) == 2  # one per worker


def test_env_is_clean_and_worker_dirs(
    tmp_path: Path, gateway: FakeGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-host-secret")
    scaffold = _scaffold(
        tmp_path,
        """
        import os

        def solve(item, ctx):
            return {"env": dict(os.environ), "cwd": os.getcwd(), "work": str(ctx.work_dir),
                    "public": str(ctx.public_dir)}
        """,
    )
    spec = _spec(tmp_path, scaffold, env={"EXTRA": "1"}, model_name="m")
    (r,) = run_items(spec, _items(1), sandbox=SANDBOX, gateway=gateway)
    assert r.status == "ok", r.error
    env = r.answer["env"]
    # LC_CTYPE may be added by Python's own locale coercion inside the worker
    assert set(env) - {"LC_CTYPE"} == {
        "PATH",
        "HOME",
        "LANG",
        "SIA_MODEL",
        "OPENAI_BASE_URL",
        "OPENAI_API_BASE",
        "SIA_GATEWAY_URL",
        "OPENAI_API_KEY",
        "SIA_GATEWAY_TOKEN",
        "EXTRA",
        "PYTHONDONTWRITEBYTECODE",
        "OMP_NUM_THREADS",
        "OPENBLAS_NUM_THREADS",
        "MKL_NUM_THREADS",
        "NUMEXPR_NUM_THREADS",
    }
    assert env["PYTHONDONTWRITEBYTECODE"] == "1" and int(env["OMP_NUM_THREADS"]) >= 1
    assert env["OPENAI_API_KEY"] == env["SIA_GATEWAY_TOKEN"] == gateway.tokens[0]
    assert env["OPENAI_BASE_URL"] == gateway.url and env["SIA_MODEL"] == "m"
    assert r.answer["cwd"] == r.answer["work"] == env["HOME"]
    assert Path(r.answer["cwd"]).parent == (tmp_path / "work").resolve()
    assert r.answer["public"] == str((tmp_path / "public").resolve())


def test_setup_once_per_worker_train_and_params(tmp_path: Path) -> None:
    scaffold = _scaffold(
        tmp_path,
        """
        import os

        PARAMS = {"k": 1, "style": "plain"}
        calls = []

        def setup(ctx):
            calls.append(os.getpid())
            ctx.labels = {ex["input"]: ex["label"] for ex in ctx.train}

        def solve(item, ctx):
            return {"setups": len(calls), "pid": os.getpid(), "params": ctx.params,
                    "label": ctx.labels.get(item["input"])}
        """,
    )
    train = ({"id": "t0", "input": "a", "label": "A"}, {"id": "t1", "input": "b", "label": "B"})
    spec = _spec(tmp_path, scaffold, train_examples=train, params={"k": 5}, parallel=1)
    items = [Item(id="x", input="a"), Item(id="y", input="b"), Item(id="z", input="c")]
    results = run_items(spec, items, sandbox=SANDBOX, gateway=None)
    assert [r.status for r in results] == ["ok"] * 3, [r.error for r in results]
    assert [r.answer["label"] for r in results] == ["A", "B", None]
    assert {r.answer["setups"] for r in results} == {1}
    assert len({r.answer["pid"] for r in results}) == 1
    assert results[0].answer["params"] == {"k": 5, "style": "plain"}


def test_exception_in_solve_is_that_items_error(tmp_path: Path) -> None:
    scaffold = _scaffold(
        tmp_path,
        """
        import os

        def solve(item, ctx):
            if item["id"] == "i1":
                raise ValueError("bad item " + item["id"])
            return os.getpid()
        """,
    )
    results = run_items(_spec(tmp_path, scaffold), _items(3), sandbox=SANDBOX, gateway=None)
    assert [r.status for r in results] == ["ok", "error", "ok"]
    assert results[1].error.startswith("ValueError: bad item i1")
    assert "Traceback" in results[1].error
    assert results[0].answer == results[2].answer  # the same worker kept going


def test_llm_http_error_is_clear(tmp_path: Path, gateway: FakeGateway) -> None:
    scaffold = _scaffold(
        tmp_path,
        """
        def solve(item, ctx):
            return ctx.llm("fail please")
        """,
    )
    (r,) = run_items(_spec(tmp_path, scaffold), _items(1), sandbox=SANDBOX, gateway=gateway)
    assert r.status == "error"
    assert r.error.startswith("LLMError: model gateway returned HTTP 500")
    assert r.trajectory[0].kind == "llm_call" and "HTTP 500" in r.trajectory[0].content["error"]


def test_infinite_loop_times_out_others_ok(tmp_path: Path) -> None:
    scaffold = _scaffold(
        tmp_path,
        """
        def solve(item, ctx):
            if item["id"] == "i1":
                while True:
                    pass
            return item["id"]
        """,
    )
    spec = _spec(tmp_path, scaffold, item_timeout_s=1.5)
    t0 = time.monotonic()
    results = run_items(spec, _items(3), sandbox=SANDBOX, gateway=None)
    elapsed = time.monotonic() - t0
    assert [r.status for r in results] == ["ok", "timeout", "ok"]
    assert [results[0].answer, results[2].answer] == ["i0", "i2"]
    assert "timed out after 1.5s" in results[1].error
    assert 1.4 <= results[1].seconds < 30  # upper bounds: hang guards, not speed limits
    assert elapsed < 60


def test_worker_dying_mid_item(tmp_path: Path) -> None:
    scaffold = _scaffold(
        tmp_path,
        """
        import os, signal, sys

        def solve(item, ctx):
            if item["id"] == "i1":
                print("about to die", file=sys.stderr)
                os._exit(3)
            if item["id"] == "i2":
                os.kill(os.getpid(), signal.SIGKILL)
            return item["id"]
        """,
    )
    results = run_items(_spec(tmp_path, scaffold), _items(4), sandbox=SANDBOX, gateway=None)
    assert [r.status for r in results] == ["ok", "error", "error", "ok"]
    assert "exit code 3" in results[1].error and "about to die" in results[1].error
    assert "SIGKILL" in results[2].error
    assert results[3].answer == "i3"


def test_fake_result_on_stdout_changes_nothing(tmp_path: Path) -> None:
    scaffold = _scaffold(
        tmp_path,
        """
        import json, os, sys

        def solve(item, ctx):
            fake = {"op": "solve", "item_id": item["id"], "status": "ok", "answer": "FAKE",
                    "error": "", "seconds": 0, "trajectory": []}
            print(json.dumps(fake), flush=True)
            os.write(1, (json.dumps(fake) + "\\n").encode())
            print(json.dumps(fake), file=sys.stderr)
            return "real"
        """,
    )
    results = run_items(_spec(tmp_path, scaffold), _items(2), sandbox=SANDBOX, gateway=None)
    assert [(r.status, r.answer) for r in results] == [("ok", "real"), ("ok", "real")]
    assert "FAKE" in (tmp_path / "work.logs" / "worker-0.log").read_text()  # it went to the log


def test_scaffold_reading_stdin_gets_nothing(tmp_path: Path) -> None:
    scaffold = _scaffold(
        tmp_path,
        """
        import sys

        def solve(item, ctx):
            return sys.stdin.read()
        """,
    )
    results = run_items(_spec(tmp_path, scaffold), _items(3), sandbox=SANDBOX, gateway=None)
    assert [(r.status, r.answer) for r in results] == [("ok", "")] * 3


def test_giant_and_unserialisable_answers(tmp_path: Path) -> None:
    scaffold = _scaffold(
        tmp_path,
        """
        class Thing:
            def __str__(self):
                return "a thing"

        def solve(item, ctx):
            if item["id"] == "i0":
                return "x" * 5000
            if item["id"] == "i1":
                return Thing()
            return "fine"
        """,
    )
    spec = _spec(tmp_path, scaffold, max_answer_bytes=1000)
    results = run_items(spec, _items(3), sandbox=SANDBOX, gateway=None)
    assert results[0].status == "error"
    assert results[0].error == "answer too large (5002 bytes > 1000)"
    assert (results[1].status, results[1].answer) == ("ok", "a thing")
    assert (results[2].status, results[2].answer) == ("ok", "fine")


def test_background_process_is_gone_afterwards(tmp_path: Path) -> None:
    scaffold = _scaffold(
        tmp_path,
        """
        import subprocess

        def solve(item, ctx):
            p = subprocess.Popen(["sleep", "300"], stdout=subprocess.DEVNULL)
            return p.pid
        """,
    )
    results = run_items(_spec(tmp_path, scaffold), _items(2), sandbox=SANDBOX, gateway=None)
    pids = [r.answer for r in results]
    assert all(isinstance(p, int) for p in pids)
    deadline = time.monotonic() + 30  # a hang guard: dead within milliseconds when idle
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not any(_alive(p) for p in pids)


def test_parallel_workers_run_at_once(tmp_path: Path) -> None:
    scaffold = _scaffold(
        tmp_path,
        """
        import os, time

        def solve(item, ctx):
            start = time.time()
            time.sleep(1.0)
            return [os.getpid(), start, time.time()]
        """,
    )
    spec = _spec(tmp_path, scaffold, parallel=2)
    results = run_items(spec, _items(4), sandbox=SANDBOX, gateway=None)
    assert all(r.status == "ok" for r in results)
    assert len({r.answer[0] for r in results}) == 2
    # two workers at once: some two items' sleeps overlap in time (whatever the machine's load)
    spans = sorted((r.answer[1], r.answer[2]) for r in results)
    assert any(b[0] < a[1] for a, b in itertools.pairwise(spans))


def test_setup_failure_fails_every_item_without_looping(tmp_path: Path) -> None:
    scaffold = _scaffold(
        tmp_path,
        """
        def setup(ctx):
            raise RuntimeError("no model weights")

        def solve(item, ctx):
            return 1
        """,
    )
    t0 = time.monotonic()
    results = run_items(
        _spec(tmp_path, scaffold, parallel=2), _items(5), sandbox=SANDBOX, gateway=None
    )
    assert time.monotonic() - t0 < 60  # a hang guard
    assert [r.status for r in results] == ["error"] * 5
    assert all(r.error.startswith("setup failed: RuntimeError: no model weights") for r in results)
    starts = (tmp_path / "work.logs" / "worker-0.log").read_text().count("=== worker")
    starts += (tmp_path / "work.logs" / "worker-1.log").read_text().count("=== worker")
    assert starts <= 3


def test_setup_failing_once_is_retried(tmp_path: Path) -> None:
    scaffold = _scaffold(
        tmp_path,
        """
        import pathlib

        def setup(ctx):
            marker = ctx.work_dir.parent / "tried-once"
            if not marker.exists():
                marker.write_text("x")
                raise RuntimeError("flaky")

        def solve(item, ctx):
            return ctx.llm("q") if item["id"] == "i1" else "ok"
        """,
    )
    results = run_items(_spec(tmp_path, scaffold), _items(2), sandbox=SANDBOX, gateway=None)
    assert (results[0].status, results[0].answer) == ("ok", "ok")
    assert results[1].status == "error" and "no model gateway" in results[1].error


def test_setup_timeout(tmp_path: Path) -> None:
    scaffold = _scaffold(
        tmp_path,
        """
        import time

        def setup(ctx):
            time.sleep(300)

        def solve(item, ctx):
            return 1
        """,
    )
    spec = _spec(tmp_path, scaffold, setup_timeout_s=0.5)
    t0 = time.monotonic()
    results = run_items(spec, _items(2), sandbox=SANDBOX, gateway=None)
    assert time.monotonic() - t0 < 60  # a hang guard
    assert all(r.error == "setup failed: timed out after 0.5s" for r in results)


def test_program_scaffold_is_rejected_per_item(tmp_path: Path) -> None:
    scaffold = _scaffold(tmp_path, "print('hello')\n")
    (r,) = run_items(_spec(tmp_path, scaffold), _items(1), sandbox=SANDBOX, gateway=None)
    assert r.status == "error" and "has no top-level solve" in r.error


def test_host_runs_standalone_without_sia_core(tmp_path: Path) -> None:
    """The harness is stdlib only: run by path with -I -S (no site-packages, no sia_core)."""
    scaffold = _scaffold(tmp_path, "def solve(item, ctx):\n    return item['input'] * 2\n")
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"scaffold_path": str(scaffold), "public_dir": str(tmp_path)}))
    read_fd, write_fd = os.pipe()
    requests = b'{"op": "setup"}\n{"op": "solve", "item": {"id": "a", "input": 21}}\n'
    requests += b'{"op": "exit"}\n'
    argv = [sys.executable, "-I", "-S", str(HOST_PATH), "--config", str(config)]
    argv += ["--work-dir", str(tmp_path), "--response-fd", str(write_fd)]
    check = [sys.executable, "-I", "-S", "-c", "import sia_core"]
    assert subprocess.run(check, capture_output=True).returncode != 0
    try:
        done = subprocess.run(
            argv, input=requests, capture_output=True, pass_fds=(write_fd,), timeout=30, env={}
        )
    finally:
        os.close(write_fd)
    with os.fdopen(read_fd, "rb") as f:
        responses = [json.loads(line) for line in f]
    assert done.returncode == 0, done.stderr
    assert responses[0]["ok"] is True
    assert (responses[1]["status"], responses[1]["answer"]) == ("ok", 42)
    assert done.stdout == b""


# --------------------------------------------------------------------------------------------
# program-style scaffolds
# --------------------------------------------------------------------------------------------


def test_program_runs_with_dataset_and_working_dir(tmp_path: Path, gateway: FakeGateway) -> None:
    scaffold = _scaffold(
        tmp_path,
        """
        import argparse, json, os, pathlib

        p = argparse.ArgumentParser()
        p.add_argument("--dataset_dir")
        p.add_argument("--working_dir")
        a = p.parse_args()
        data = (pathlib.Path(a.dataset_dir) / "data.txt").read_text()
        out = {"data": data, "cwd": os.getcwd(), "key": os.environ["OPENAI_API_KEY"]}
        (pathlib.Path(a.working_dir) / "answers.json").write_text(json.dumps(out))
        print("program done")
        """,
    )
    spec = _spec(tmp_path, scaffold)
    (spec.public_dir / "data.txt").write_text("hello")
    assert scaffold_kind(scaffold) == "program"
    res = run_program(spec, sandbox=SANDBOX, gateway=gateway)
    assert (res.status, res.returncode, res.error) == ("ok", 0, "")
    out = json.loads((tmp_path / "work" / "answers.json").read_text())
    assert out == {
        "data": "hello",
        "cwd": str((tmp_path / "work").resolve()),
        "key": gateway.tokens[0],
    }
    assert res.log_path is not None and "program done" in res.log_path.read_text()


def test_program_error_and_timeout(tmp_path: Path) -> None:
    failing = _scaffold(tmp_path, "import sys\nprint('oops', file=sys.stderr)\nsys.exit(4)\n")
    res = run_program(_spec(tmp_path, failing), sandbox=SANDBOX, gateway=None)
    assert (res.status, res.returncode) == ("error", 4)
    assert "exit code 4" in res.error and "oops" in res.error

    hanging = _scaffold(
        tmp_path,
        """
        import subprocess, sys, time
        c = subprocess.Popen(["sleep", "300"])
        open(sys.argv[-1] + "/child.pid", "w").write(str(c.pid))
        time.sleep(300)
        """,
    )
    spec = _spec(tmp_path, hanging, limits=Limits(wall_s=1.0))
    t0 = time.monotonic()
    res = run_program(spec, sandbox=SANDBOX, gateway=None)
    assert res.status == "timeout" and res.returncode is None
    assert time.monotonic() - t0 < 60  # a hang guard
    pid = int((tmp_path / "work" / "child.pid").read_text())
    deadline = time.monotonic() + 30  # a hang guard: dead within milliseconds when idle
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not _alive(pid)
    assert not os.path.exists(f"/proc/{pid}") or not _alive(pid)
