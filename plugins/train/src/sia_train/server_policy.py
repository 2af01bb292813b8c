"""Rollouts through an inference server: vLLM's OpenAI endpoints with the adapter hot-loaded.

With ``--train-opt inference_url=http://HOST:PORT/v1`` the frozen scaffold still calls the
run's gateway, but during training the gateway's task model is a :class:`ServerPolicy`: each
call's prompt is formatted and tokenised here (the trainer's chat template, so the server sees
exactly the tokens the update reads), sent as token ids to the server's ``/v1/completions``
with ``logprobs`` and ``return_tokens_as_token_ids`` (vLLM's extension), and the completion's
token ids and log-probabilities come back as the call's :class:`CallRecord`. After every
update the worker saves the adapter and hot-loads it (``/v1/load_lora_adapter``, the previous
one unloaded with ``/v1/unload_lora_adapter``), so the next step samples from the updated
policy. The server's log-probabilities are the old policy's for the importance ratio, clipped
by the objectives as usual; start vLLM with ``--logprobs-mode processed_logprobs`` so they are
taken after the sampling temperature, as the trainer's are. The server reads adapters from the
worker's out dir: it must share that file system.

Without ``inference_url`` the policy generates in-process (:class:`PolicyTaskModel`).
Standard library + sia_core; the tokenizer is the worker's.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from typing import Any

from sia_core.contracts.backend import TaskModel
from sia_core.contracts.errors import SiaError

from .policy_model import chat_prompt_ids, chat_response
from .rollout_records import CallRecord, call_key

__all__ = ["ServerPolicy"]


class ServerPolicy(TaskModel):
    """The rollout policy served by an OpenAI-compatible server with LoRA hot-loading."""

    def __init__(
        self,
        url: str,
        model: str,
        tokenizer: Any,
        *,
        temperature: float,
        max_tokens: int,
        timeout_s: float = 600.0,
    ) -> None:
        self.url = url.rstrip("/")
        self.base = model  # the server's name for the base model
        self.tokenizer = tokenizer
        self.temperature = float(temperature)
        self.max_tokens = int(max_tokens)
        self.timeout_s = timeout_s
        self.name = model
        self.adapter: str | None = None  # the loaded adapter's name on the server
        self.model_lock = threading.Lock()
        self.generate_seconds = 0.0
        self._lock = threading.Lock()
        self._records: list[CallRecord] = []

    # -- what the rollout collector uses ---------------------------------------------------------

    def expect(self, n: int) -> None:
        """Nothing to batch here: the server batches."""

    def take_records(self) -> list[CallRecord]:
        with self._lock:
            records, self._records = self._records, []
        return records

    def close(self) -> None:
        if self.adapter is not None:
            try:
                self._post("unload_lora_adapter", {"lora_name": self.adapter})
            except SiaError:
                pass  # the server may be gone already
            self.adapter = None

    # -- the adapter -----------------------------------------------------------------------------

    def load_adapter(self, path: str, name: str) -> None:
        """Serve the adapter at ``path`` (a peft folder the server can read) as ``name``."""
        previous, self.adapter = self.adapter, None
        if previous is not None:
            self._post("unload_lora_adapter", {"lora_name": previous})
        self._post("load_lora_adapter", {"lora_name": name, "lora_path": path})
        self.adapter = name

    # -- TaskModel -------------------------------------------------------------------------------

    def chat(self, body: dict[str, Any]) -> dict[str, Any]:
        messages = body.get("messages")
        prompt = chat_prompt_ids(self.tokenizer, messages)
        wanted = body.get("max_tokens") or body.get("max_completion_tokens")
        max_tokens = max(1, min(int(wanted), self.max_tokens) if wanted else self.max_tokens)
        stop = body.get("stop") or []
        request = {
            "model": self.adapter or self.base,
            "prompt": prompt,
            "max_tokens": max_tokens,
            "temperature": self.temperature,
            "logprobs": 1,
            "return_tokens_as_token_ids": True,
            "stop": [stop] if isinstance(stop, str) else [str(s) for s in stop],
        }
        t0 = time.monotonic()
        reply = self._post("completions", request)
        self.generate_seconds += time.monotonic() - t0
        choice = (reply.get("choices") or [{}])[0]
        logprobs = choice.get("logprobs") or {}
        ids = [_token_id(t) for t in logprobs.get("tokens") or []]
        old = [float(x) for x in logprobs.get("token_logprobs") or []]
        if len(ids) != len(old):
            raise SiaError(f"inference server {self.url}: tokens and logprobs differ in length")
        text = str(choice.get("text") or "")
        finish = str(choice.get("finish_reason") or "stop")
        record = CallRecord(
            key=call_key(messages, text),
            prompt_ids=prompt,
            completion_ids=ids,
            old_logp=old,
            text=text,
            finish_reason=finish,
        )
        with self._lock:
            self._records.append(record)
        return chat_response(self.name, record)

    def _post(self, route: str, payload: dict[str, Any]) -> dict[str, Any]:
        req = urllib.request.Request(
            f"{self.url}/{route}",
            data=json.dumps(payload).encode(),
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read(2000).decode("utf-8", "replace").strip()
            raise SiaError(
                f"inference server {self.url}/{route}: HTTP {exc.code}: {detail}"
            ) from exc
        except OSError as exc:
            raise SiaError(f"inference server {self.url}/{route}: {exc}") from exc
        try:
            data = json.loads(raw) if raw.strip() else {}
        except ValueError:
            data = {"text": raw.decode("utf-8", "replace")}  # vLLM answers plain text to loads
        return data if isinstance(data, dict) else {}


def _token_id(token: Any) -> int:
    """``"token_id:123"`` (vLLM's ``return_tokens_as_token_ids``) as 123."""
    text = str(token)
    if not text.startswith("token_id:"):
        raise SiaError(
            f"inference server returned token {text[:40]!r}, not 'token_id:N': it must support "
            "return_tokens_as_token_ids (vLLM's OpenAI server does)"
        )
    return int(text.split(":", 1)[1])
