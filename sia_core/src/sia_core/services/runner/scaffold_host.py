"""The harness that runs a per-item scaffold INSIDE the sandbox (stdlib only, run by path).

    python -I scaffold_host.py --config CONFIG.json --work-dir DIR --response-fd N

It imports ``target_agent.py`` from its path and serves the worker protocol: one JSON request
per line on stdin (``{"op": "setup"}``, ``{"op": "solve", "item": {...}}``,
``{"op": "exit"}``), one JSON response per line on the pipe ``--response-fd``. Responses never
go to stdout: the scaffold's own stdout/stderr go to the worker's log, so whatever it prints
cannot pose as a result. At start the host moves both protocol pipes to close-on-exec
descriptors and points fd 0 at ``/dev/null``, so neither the scaffold nor programs it starts
can read requests or inherit the response pipe.

``CONFIG.json`` holds ``scaffold_path``, ``public_dir``, ``train_path``, ``params``, ``model``,
``max_answer_bytes`` and ``max_trajectory_bytes``; the gateway comes from ``SIA_GATEWAY_URL``
and ``SIA_GATEWAY_TOKEN``. This file must not import ``sia_core``: the sandbox may lack it.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time
import traceback
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

TRUNCATED = "[truncated: trajectory over its size limit]"


class LLMError(RuntimeError):
    """A model call through the gateway failed (HTTP error, unreachable, malformed reply)."""


def _jsonable(value: Any) -> Any:
    """A JSON-ready copy of ``value`` (unknown objects become their ``repr``)."""
    try:
        return json.loads(json.dumps(value, default=repr, ensure_ascii=False))
    except (TypeError, ValueError, RecursionError):
        return repr(value)


def describe_exception(exc: BaseException, limit: int = 3000) -> str:
    """``Type: message`` followed by the tail of the traceback."""
    try:
        message = str(exc)
    except Exception:
        message = "<unprintable>"
    if len(message) > 1000:
        message = message[:1000] + "..."
    head = f"{type(exc).__name__}: {message}"
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    if len(tb) > limit:
        tb = "..." + tb[-limit:]
    return f"{head}\n\n{tb}"


class ItemView(dict):  # type: ignore[type-arg]
    """An item as the scaffold sees it: ``item["input"]`` and ``item.input`` both work."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


class Context:
    """What a scaffold's ``setup(ctx)`` and ``solve(item, ctx)`` get."""

    LLMError = LLMError

    def __init__(
        self,
        *,
        public_dir: Path,
        work_dir: Path,
        train_path: Path | None,
        params: dict[str, Any],
        model: str,
        gateway_url: str,
        token: str,
        http_timeout_s: float = 600.0,
    ) -> None:
        self.public_dir = public_dir
        self.work_dir = work_dir
        self.params = params
        self.model = model
        self.item_id: str | None = None
        self.gateway_url = gateway_url.rstrip("/")
        self._token = token
        self._http_timeout_s = http_timeout_s
        self._train_path = train_path
        self._train: list[dict[str, Any]] | None = None
        self._steps: list[dict[str, Any]] = []
        self._t0 = time.monotonic()
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    # -- per-item bookkeeping (used by the host) ----------------------------------------------

    def _begin(self, item_id: str | None) -> None:
        self.item_id = item_id
        self._steps = []
        self._t0 = time.monotonic()

    # -- the scaffold's API ----------------------------------------------------------------------

    @property
    def train(self) -> list[dict[str, Any]]:
        """The train split with labels: dicts ``{id, input, label}`` (loaded on first use)."""
        if self._train is None:
            if self._train_path is None or not self._train_path.exists():
                self._train = []
            else:
                self._train = json.loads(self._train_path.read_text(encoding="utf-8"))
        return self._train

    def log(self, kind: str, content: Any = None) -> None:
        """Add a step to the current item's trajectory."""
        self._steps.append(
            {
                "kind": str(kind),
                "content": _jsonable(content),
                "t": round(time.monotonic() - self._t0, 4),
            }
        )

    def chat(self, messages: list[dict[str, Any]], **params: Any) -> dict[str, Any]:
        """POST an OpenAI ``chat.completions`` request to the gateway; the full response."""
        if not self.gateway_url:
            raise LLMError("no model gateway is configured for this run (SIA_GATEWAY_URL unset)")
        body: dict[str, Any] = {"messages": messages}
        if self.model:
            body["model"] = self.model
        body.update(params)
        # the gateway attributes the call to the item the runner bound this worker's key to
        headers = {
            "Content-Type": "application/json",
            "Authorization": f"Bearer {self._token}",
        }
        request = urllib.request.Request(
            f"{self.gateway_url}/chat/completions",
            data=json.dumps(body).encode("utf-8"),
            headers=headers,
            method="POST",
        )
        step: dict[str, Any] = {"messages": messages, "params": params}
        try:
            try:
                with self._opener.open(request, timeout=self._http_timeout_s) as resp:
                    raw = resp.read()
            except urllib.error.HTTPError as e:
                detail = e.read()[:1000].decode("utf-8", "replace") if e.fp else ""
                raise LLMError(f"model gateway returned HTTP {e.code} {e.reason}: {detail}") from e
            except urllib.error.URLError as e:
                raise LLMError(
                    f"model gateway unreachable at {self.gateway_url}: {e.reason}"
                ) from e
            except OSError as e:
                raise LLMError(f"model gateway call failed: {e}") from e
            try:
                data = json.loads(raw)
            except ValueError as e:
                raise LLMError(f"model gateway sent invalid JSON: {raw[:200]!r}") from e
            if not isinstance(data, dict):
                raise LLMError(f"model gateway sent a {type(data).__name__}, not an object")
        except LLMError as e:
            step["error"] = str(e)
            self.log("llm_call", step)
            raise
        choices = data.get("choices") or [{}]
        message = (choices[0] or {}).get("message") or {}
        step["completion"] = message.get("content")
        step["usage"] = data.get("usage")
        self.log("llm_call", step)
        return data

    def llm(self, prompt: str | list[dict[str, Any]], **params: Any) -> str:
        """One model call: a prompt string (one user message) or a message list; the text."""
        messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
        data = self.chat(messages, **params)
        choices = data.get("choices")
        if not choices:
            raise LLMError(f"model gateway reply has no choices: {str(data)[:300]}")
        content = (choices[0].get("message") or {}).get("content")
        return content if isinstance(content, str) else ""


class Host:
    """Loads the scaffold and answers setup/solve requests."""

    def __init__(self, config: dict[str, Any], work_dir: Path) -> None:
        self.config = config
        self.scaffold_path = Path(config["scaffold_path"])
        self.max_answer_bytes = int(config.get("max_answer_bytes", 1_000_000))
        self.max_trajectory_bytes = int(config.get("max_trajectory_bytes", 4_000_000))
        train = config.get("train_path")
        self.ctx = Context(
            public_dir=Path(config.get("public_dir") or "."),
            work_dir=work_dir,
            train_path=Path(train) if train else None,
            params=dict(config.get("params") or {}),
            model=str(config.get("model") or ""),
            gateway_url=os.environ.get("SIA_GATEWAY_URL", ""),
            token=os.environ.get("SIA_GATEWAY_TOKEN", ""),
        )
        self.module: Any = None

    def setup(self) -> dict[str, Any]:
        start = time.monotonic()
        try:
            sys.path.insert(0, str(self.scaffold_path.parent))
            spec = importlib.util.spec_from_file_location(
                self.scaffold_path.stem, self.scaffold_path
            )
            if spec is None or spec.loader is None:
                raise ImportError(f"cannot import {self.scaffold_path}")
            module = importlib.util.module_from_spec(spec)
            sys.modules[spec.name] = module
            spec.loader.exec_module(module)
            if not callable(getattr(module, "solve", None)):
                raise TypeError(f"{self.scaffold_path.name} has no top-level solve(item, ctx)")
            declared = getattr(module, "PARAMS", None) or {}
            if not isinstance(declared, dict):
                raise TypeError(f"PARAMS must be a dict, not {type(declared).__name__}")
            self.ctx.params = {**declared, **self.ctx.params}
            self.ctx._begin(None)
            setup = getattr(module, "setup", None)
            if callable(setup):
                setup(self.ctx)
        except BaseException as e:
            return {"op": "setup", "ok": False, "error": describe_exception(e)}
        finally:
            _flush_std()
        self.module = module
        return {"op": "setup", "ok": True, "seconds": time.monotonic() - start}

    def solve(self, item: dict[str, Any]) -> dict[str, Any]:
        item_id = str(item.get("id"))
        out: dict[str, Any] = {"op": "solve", "item_id": item_id, "status": "ok", "error": ""}
        self.ctx._begin(item_id)
        start = time.monotonic()
        answer: Any = None
        try:
            if self.module is None:
                raise RuntimeError("solve before a successful setup")
            answer = self.module.solve(ItemView(item), self.ctx)
        except BaseException as e:
            out["status"] = "error"
            out["error"] = describe_exception(e)
            answer = None
        finally:
            _flush_std()
        out["seconds"] = time.monotonic() - start
        try:
            answer_json = json.dumps(answer, ensure_ascii=False)
        except (TypeError, ValueError, RecursionError):
            answer = str(answer)
            answer_json = json.dumps(answer, ensure_ascii=False)
        size = len(answer_json.encode("utf-8"))
        if size > self.max_answer_bytes:
            out["status"] = "error"
            out["error"] = f"answer too large ({size} bytes > {self.max_answer_bytes})"
            answer = None
        out["answer"] = answer
        out["trajectory"] = self._capped_steps()
        return out

    def _capped_steps(self) -> list[dict[str, Any]]:
        budget = self.max_trajectory_bytes
        all_steps = list(self.ctx._steps)
        steps: list[dict[str, Any]] = []
        for i, step in enumerate(all_steps):
            size = len(json.dumps(step, ensure_ascii=False).encode("utf-8"))
            if size > budget:
                dropped = len(all_steps) - i
                steps.append({"kind": "note", "content": f"{TRUNCATED}; {dropped} steps dropped"})
                break
            budget -= size
            steps.append(step)
        return steps


def _flush_std() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, type=Path)
    parser.add_argument("--work-dir", required=True, type=Path)
    parser.add_argument("--response-fd", required=True, type=int)
    args = parser.parse_args(argv)

    # protocol pipes on close-on-exec descriptors (os.dup makes them non-inheritable); the
    # scaffold's stdin becomes /dev/null so input() cannot eat requests
    requests = os.fdopen(os.dup(0), "rb")
    responses = os.dup(args.response_fd)
    os.close(args.response_fd)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    sys.stdin = open(os.devnull, encoding="utf-8")  # noqa: SIM115
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.reconfigure(line_buffering=True)  # type: ignore[union-attr]
        except (AttributeError, ValueError):
            pass

    config = json.loads(args.config.read_text(encoding="utf-8"))
    host = Host(config, args.work_dir)
    for raw in requests:
        try:
            request = json.loads(raw)
            op = request.get("op")
        except ValueError as e:
            response: dict[str, Any] = {"op": "?", "ok": False, "error": f"bad request: {e}"}
        else:
            if op == "exit":
                break
            if op == "setup":
                response = host.setup()
            elif op == "solve":
                response = host.solve(request.get("item") or {})
            else:
                response = {"op": str(op), "ok": False, "error": f"unknown op {op!r}"}
        line = json.dumps(response, ensure_ascii=False, default=repr) + "\n"
        try:
            _write_all(responses, line.encode("utf-8"))
        except BrokenPipeError:
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
