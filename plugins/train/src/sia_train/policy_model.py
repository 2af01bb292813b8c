"""The policy being trained as an in-process task model that batches its calls.

:class:`PolicyTaskModel` is a task model (``name``, ``trainable``, ``chat(body)``) backed by the
peft model. Calls are queued and generated in batches on one generation thread: the G·k
rollouts of a step call the model at about the same time, and one batched ``generate`` is
several times cheaper than G·k single ones. Every call keeps its prompt and completion token ids
and the log-probabilities of the sampled tokens under the sampling policy (the "old" policy):
see :mod:`sia_train.generation`.

torch is imported inside the functions; importing this module is cheap.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from sia_core.contracts.backend import TaskModel
from sia_core.contracts.errors import SiaError

from .generation import GenerationRequest, generate_records
from .rollout_records import CallRecord

log = logging.getLogger(__name__)


@dataclass
class _QueuedRequest(GenerationRequest):
    """A request waiting for the generation thread, then its record or its error."""

    done: threading.Event = field(default_factory=threading.Event)
    result: CallRecord | None = None
    error: BaseException | None = None


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return "" if content is None else str(content)


def chat_prompt_ids(tokenizer: Any, messages: Any) -> list[int]:
    """The token ids of an OpenAI ``messages`` list under the model's chat template, with the
    assistant's turn opened (what the policy is asked to continue)."""
    if not isinstance(messages, list) or not messages:
        raise ValueError("'messages' must be a non-empty list")
    chat = [
        {"role": str(m.get("role", "user")), "content": _text_of(m.get("content"))}
        for m in messages
        if isinstance(m, dict)
    ]
    ids = tokenizer.apply_chat_template(
        chat, add_generation_prompt=True, tokenize=True, return_dict=False
    )
    if hasattr(ids, "tolist"):
        ids = ids.tolist()
    if ids and isinstance(ids[0], list):
        ids = ids[0]
    return [int(t) for t in ids]


def chat_response(model: str, record: CallRecord) -> dict[str, Any]:
    """The OpenAI ``chat.completion`` body of one generated call."""
    n_prompt, n_completion = len(record.prompt_ids), len(record.completion_ids)
    return {
        "id": f"chatcmpl-sia-{uuid.uuid4().hex[:24]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": record.text},
                "finish_reason": record.finish_reason,
            }
        ],
        "usage": {
            "prompt_tokens": n_prompt,
            "completion_tokens": n_completion,
            "total_tokens": n_prompt + n_completion,
        },
    }


class PolicyTaskModel(TaskModel):
    """A :class:`sia_core.contracts.backend.TaskModel` generating with the (peft) model in this process.

    ``sampling="policy"``: every call samples at ``temperature`` (the policy being trained; the
    scaffold's own temperature is ignored, its ``max_tokens`` capped at ``max_tokens``).
    ``sampling="request"``: the request's temperature (0: greedy) and ``max_tokens`` are used
    (evaluation). ``top_p``/``top_k`` of a request are ignored: the sampling distribution is
    exactly softmax(logits / T), so the recorded log-probabilities are the policy's. ``n`` > 1 is
    not supported (one choice per call).
    """

    trainable = True
    adapter: str | None = None

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        name: str = "sia-policy",
        temperature: float = 1.0,
        max_tokens: int = 64,
        sampling: str = "policy",
        batch_wait_s: float = 0.25,
        max_wait_s: float = 2.0,
        max_batch: int = 64,
    ) -> None:
        if sampling not in ("policy", "request"):
            raise ValueError(f"sampling must be 'policy' or 'request', got {sampling!r}")
        if sampling == "policy" and not temperature > 0:
            raise SiaError(f"training needs a sampling temperature > 0, got {temperature}")
        self.model = model
        self.tokenizer = tokenizer
        self.name = name
        self.temperature = float(temperature)
        self.max_tokens = int(max_tokens)
        self.sampling = sampling
        self.batch_wait_s = batch_wait_s
        self.max_wait_s = max_wait_s
        self.max_batch = max_batch
        # held while generating; the trainer holds it while updating, so a call that arrives
        # late (its rollout already timed out) never runs in the middle of an optimizer step
        self.model_lock = threading.Lock()
        self.generate_seconds = 0.0
        self.batches = 0
        self._cond = threading.Condition()
        self._pending: list[_QueuedRequest] = []
        self._first_at = 0.0
        self._last_at = 0.0
        self._expected = 1  # calls worth waiting for: rollouts still running
        self._records: list[CallRecord] = []
        self._closed = False
        self._max_len = int(getattr(model.config, "max_position_embeddings", 0) or 0)
        self._thread = threading.Thread(target=self._loop, name="sia-policy-generate", daemon=True)
        self._thread.start()

    # -- orchestration ---------------------------------------------------------------------------

    def expect(self, n: int) -> None:
        """How many rollouts are running: a batch goes as soon as that many calls wait."""
        with self._cond:
            self._expected = max(1, n)
            self._cond.notify_all()

    def take_records(self) -> list[CallRecord]:
        """The calls generated since the last take."""
        with self._cond:
            records, self._records = self._records, []
        return records

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout=5)

    # -- TaskModel -------------------------------------------------------------------------------

    def chat(self, body: dict[str, Any]) -> dict[str, Any]:
        """Generate one completion for an OpenAI ``chat.completions`` body."""
        messages = body.get("messages")
        prompt_ids = chat_prompt_ids(self.tokenizer, messages)
        wanted = body.get("max_tokens") or body.get("max_completion_tokens")
        if self.sampling == "policy":
            max_tokens = min(int(wanted), self.max_tokens) if wanted else self.max_tokens
            temperature = self.temperature
        else:
            max_tokens = int(wanted) if wanted else self.max_tokens
            t = body.get("temperature")
            temperature = 1.0 if t is None else float(t)
        max_tokens = max(1, max_tokens)
        if self._max_len and len(prompt_ids) + max_tokens > self._max_len:
            raise ValueError(
                f"prompt of {len(prompt_ids)} tokens + max_tokens {max_tokens} exceeds the "
                f"model's context of {self._max_len}"
            )
        stop = body.get("stop") or []
        request = _QueuedRequest(
            prompt_ids=[int(t) for t in prompt_ids],
            key_messages=messages,
            max_tokens=max_tokens,
            temperature=temperature,
            stop=[stop] if isinstance(stop, str) else [str(s) for s in stop],
        )
        with self._cond:
            if self._closed:
                raise RuntimeError("the policy model is closed")
            now = time.monotonic()
            if not self._pending:
                self._first_at = now
            self._last_at = now
            self._pending.append(request)
            self._cond.notify_all()
        request.done.wait()
        if request.error is not None:
            raise request.error
        record = request.result
        assert record is not None
        return chat_response(self.name, record)

    # -- the generation thread -------------------------------------------------------------------

    def _take_batch(self) -> list[_QueuedRequest] | None:
        with self._cond:
            while True:
                if self._closed:
                    return None
                if self._pending:
                    now = time.monotonic()
                    ready = (
                        len(self._pending) >= min(self._expected, self.max_batch)
                        or now - self._last_at >= self.batch_wait_s
                        or now - self._first_at >= self.max_wait_s
                    )
                    if ready:
                        batch = self._pending[: self.max_batch]
                        self._pending = self._pending[self.max_batch :]
                        self._first_at = self._last_at = now
                        return batch
                    self._cond.wait(timeout=0.02)
                else:
                    self._cond.wait()

    def _loop(self) -> None:
        while True:
            batch = self._take_batch()
            if batch is None:
                return
            by_temperature: dict[float, list[_QueuedRequest]] = defaultdict(list)
            for request in batch:
                by_temperature[request.temperature].append(request)
            for temperature, requests in by_temperature.items():
                try:
                    with self.model_lock:
                        records = self._generate(requests, temperature)
                except BaseException as exc:  # answer every caller, keep the thread alive
                    log.exception("policy generation failed")
                    for request in requests:
                        request.error = exc
                        request.done.set()
                    continue
                with self._cond:
                    self._records.extend(records)
                for request, record in zip(requests, records, strict=True):
                    request.result = record
                    request.done.set()

    def _generate(self, requests: list[_QueuedRequest], temperature: float) -> list[CallRecord]:
        t0 = time.monotonic()
        records = generate_records(self.model, self.tokenizer, requests, temperature)
        self.generate_seconds += time.monotonic() - t0
        self.batches += 1
        return records
