"""Rollouts: the frozen scaffold, run on train items with the policy being trained.

:class:`PolicyTaskModel` is an in-process task model (``name``, ``trainable``, ``chat(body)``)
backed by the peft model. Calls are queued and generated in batches on one generation thread:
the G·k rollouts of a step call the model at about the same time, and one batched ``generate``
is several times cheaper than G·k single ones. Every call keeps its prompt and completion token
ids and the log-probabilities of the sampled tokens under the sampling policy (the "old" policy).

:class:`RolloutCollector` serves that model through a real :class:`sia_core.gateway.Gateway` and
runs the scaffold with :func:`sia_core.runner.run_items` in the run's sandbox (the job names it;
:class:`sia_core.sandbox.ProcessSandbox` where the worker lacks it) over G copies of each train item (ids ``train-12#0`` ..
``train-12#3``; the scaffold gets the original input). The reward of a rollout is the task's
scorer on (answer, train label). The gateway attributes each call to its rollout; the calls are
joined with the model's token records by (messages, completion text).

torch is imported inside the functions; importing this module is cheap.
"""

from __future__ import annotations

import inspect
import json
import logging
import math
import os
import shutil
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sia_core.errors import SiaError
from sia_core.gateway import Gateway
from sia_core.records import Item, ItemResult, ModelCall
from sia_core.runner import RunSpec, run_items, scaffold_kind
from sia_core.sandbox import Limits, ProcessSandbox, Sandbox
from sia_core.taskdir import Task
from sia_core.untrusted import UntrustedFileError, read_tail

from .objective import Group, Rollout

log = logging.getLogger(__name__)

ROLLOUT_SEP = "#"


# --------------------------------------------------------------------------------------------
# Records
# --------------------------------------------------------------------------------------------


@dataclass
class CallRecord:
    """One model call as the policy saw it: token ids and the sampling log-probabilities."""

    key: str  # messages + completion text: how the call is matched to the gateway's record
    prompt_ids: list[int]
    completion_ids: list[int]
    old_logp: list[float]  # log π_old of each completion token (sampling temperature applied)
    text: str
    finish_reason: str


@dataclass
class RolloutSample:
    """One rollout: the scaffold's run on one copy of a train item, its calls and its reward."""

    rollout: Rollout
    source_id: str  # the train item's id
    status: str
    answer: Any = None
    error: str = ""
    calls: list[CallRecord] = field(default_factory=list)
    unmatched_calls: int = 0  # gateway calls with no token record (failed generations)

    @property
    def n_tokens(self) -> int:
        return sum(len(c.completion_ids) for c in self.calls)


@dataclass
class StepRollouts:
    """The groups of one step, in order, and what went wrong."""

    groups: list[Group]
    samples: list[list[RolloutSample]]  # same nesting as ``groups``
    seconds: float
    errors: list[str]

    def flat(self) -> list[RolloutSample]:
        return [s for group in self.samples for s in group]


def call_key(messages: Any, completion: str | None) -> str:
    """The join key of a call: canonical JSON of its messages and its completion text."""
    return json.dumps(messages, sort_keys=True, ensure_ascii=False) + "\x00" + (completion or "")


def _request_messages(request: Mapping[str, Any]) -> Any:
    """The messages a gateway request reached the task model with (completions: one user turn)."""
    if isinstance(request.get("messages"), list):
        return request["messages"]
    prompt = request.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1:
        prompt = prompt[0]
    return [{"role": "user", "content": prompt}]


# --------------------------------------------------------------------------------------------
# The in-process task model
# --------------------------------------------------------------------------------------------


@dataclass
class _Request:
    prompt_ids: list[int]
    key_messages: Any
    max_tokens: int
    temperature: float
    stop: list[str]
    done: threading.Event = field(default_factory=threading.Event)
    result: CallRecord | None = None
    error: BaseException | None = None


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return "" if content is None else str(content)


class PolicyTaskModel:
    """A :class:`sia_core.backend.TaskModel` generating with the (peft) model in this process.

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
        self._pending: list[_Request] = []
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
        if not isinstance(messages, list) or not messages:
            raise ValueError("'messages' must be a non-empty list")
        chat = [
            {"role": str(m.get("role", "user")), "content": _text_of(m.get("content"))}
            for m in messages
            if isinstance(m, dict)
        ]
        prompt_ids = self.tokenizer.apply_chat_template(
            chat, add_generation_prompt=True, tokenize=True, return_dict=False
        )
        if hasattr(prompt_ids, "tolist"):
            prompt_ids = prompt_ids.tolist()
        if prompt_ids and isinstance(prompt_ids[0], list):
            prompt_ids = prompt_ids[0]
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
        request = _Request(
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
        n_prompt, n_completion = len(record.prompt_ids), len(record.completion_ids)
        return {
            "id": f"chatcmpl-sia-{uuid.uuid4().hex[:24]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.name,
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

    # -- the generation thread -------------------------------------------------------------------

    def _take_batch(self) -> list[_Request] | None:
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
            by_temperature: dict[float, list[_Request]] = defaultdict(list)
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

    def _generate(self, requests: list[_Request], temperature: float) -> list[CallRecord]:
        import torch

        t0 = time.monotonic()
        tok = self.tokenizer
        pad = int(tok.pad_token_id)
        eos = tok.eos_token_id
        eos_ids = {int(e) for e in (eos if isinstance(eos, list) else [eos]) if e is not None}
        device = next(self.model.parameters()).device
        width = max(len(r.prompt_ids) for r in requests)
        input_ids = torch.tensor(
            [[pad] * (width - len(r.prompt_ids)) + r.prompt_ids for r in requests], device=device
        )
        attention = torch.tensor(
            [[0] * (width - len(r.prompt_ids)) + [1] * len(r.prompt_ids) for r in requests],
            device=device,
        )
        sample = temperature > 0
        kwargs: dict[str, Any] = {
            "max_new_tokens": max(r.max_tokens for r in requests),
            "do_sample": sample,
            "pad_token_id": pad,
            "eos_token_id": sorted(eos_ids) or None,
            "output_logits": True,
            "return_dict_in_generate": True,
        }
        if sample:  # exactly softmax(logits / T): the log-probabilities below are the policy's
            kwargs.update(temperature=temperature, top_k=0, top_p=1.0)
        else:
            kwargs.update(temperature=None, top_k=None, top_p=None)
        self.model.eval()
        with torch.no_grad():
            cache = _shared_prefill(self.model, input_ids, attention)
            if cache is not None:
                kwargs[_cache_kwarg(self.model)] = cache
            out = self.model.generate(input_ids=input_ids, attention_mask=attention, **kwargs)
            tokens = out.sequences[:, width:]
            logits = torch.stack(out.logits, dim=1).float()
            if sample:
                logits = logits / temperature
            logp = torch.log_softmax(logits, dim=-1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
        tokens_l, logp_l = tokens.tolist(), logp.tolist()
        records = []
        for i, request in enumerate(requests):
            ids, lps = tokens_l[i][: request.max_tokens], logp_l[i][: request.max_tokens]
            finish = "length"
            for j, t in enumerate(ids):
                if t in eos_ids:  # the end-of-turn token is the policy's choice too: trained
                    ids, lps, finish = ids[: j + 1], lps[: j + 1], "stop"
                    break
            text = tok.decode(ids, skip_special_tokens=True)
            if request.stop:
                ids, lps, text, stopped = _apply_stop(tok, ids, lps, text, request.stop)
                finish = "stop" if stopped else finish
            records.append(
                CallRecord(
                    key=call_key(request.key_messages, text),
                    prompt_ids=request.prompt_ids,
                    completion_ids=ids,
                    old_logp=lps,
                    text=text,
                    finish_reason=finish,
                )
            )
        self.generate_seconds += time.monotonic() - t0
        self.batches += 1
        return records


def _cache_kwarg(model: Any) -> str:
    """transformers renamed ``past_key_values`` to ``cache`` (5.x; ``generate`` follows ``forward``)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"


def _shared_prefill(model: Any, input_ids: Any, attention: Any) -> Any:
    """A KV cache of the prompts but their last token, each distinct prompt run once.

    The G rollouts of an item send the same prompt: its prefill is done once and the cache rows
    repeated (``generate`` then runs only the last prompt token and the new ones). ``None`` when
    no two prompts are the same (``generate`` prefills as usual).
    """
    import torch

    rows = [tuple(r) for r in input_ids.tolist()]
    owner: dict[tuple[int, ...], int] = {}
    for row in rows:
        owner.setdefault(row, len(owner))
    if len(owner) == len(rows) or input_ids.shape[1] < 2:
        return None
    first = [rows.index(row) for row in owner]
    ids, mask = input_ids[first, :-1], attention[first, :-1]
    out = model(
        input_ids=ids,
        attention_mask=mask,
        position_ids=(mask.cumsum(-1) - 1).clamp(min=0),
        use_cache=True,
    )
    cache = getattr(out, "cache", None)
    cache = out.past_key_values if cache is None else cache
    cache.reorder_cache(torch.tensor([owner[row] for row in rows], device=input_ids.device))
    return cache


def _apply_stop(
    tok: Any, ids: list[int], lps: list[float], text: str, stops: list[str]
) -> tuple[list[int], list[float], str, bool]:
    """Cut a completion at its first stop string: the text before it, the tokens up to it."""
    hits = [text.find(s) for s in stops if s and s in text]
    if not hits:
        return ids, lps, text, False
    cut = min(hits)
    for n in range(1, len(ids) + 1):
        if len(tok.decode(ids[:n], skip_special_tokens=True)) > cut:
            return ids[:n], lps[:n], text[:cut], True
    return ids, lps, text[:cut], True


# --------------------------------------------------------------------------------------------
# Rewards
# --------------------------------------------------------------------------------------------


def train_reward(task: Task) -> Callable[[dict[str, Any], Any], float]:
    """``reward(example, answer)``: the task's per-item scorer on the train label.

    ``Task.score_answer`` knows only the dev/test labels, so the scorer function is taken from
    the task (a private attribute: see the module README). A missing answer, or a scorer error,
    scores the task's worst value. For a ``minimize`` task the reward is minus the score.
    """
    score_item = getattr(task, "_score_item", None)
    if task.config.kind != "per_item" or score_item is None:
        raise SiaError(
            f"task {task.name!r} has no per-item scorer: weight training needs per-item rewards"
        )
    maximize = task.config.direction != "minimize"
    worst = 0.0 if maximize else 1.0

    def reward(example: dict[str, Any], answer: Any) -> float:
        if answer is None or (isinstance(answer, str) and not answer.strip()):
            score = worst
        else:
            item = Item(id=str(example["id"]), input=example["input"], split="train")
            try:
                score = float(score_item(answer, example["label"], item))
            except Exception as exc:
                log.warning("scorer failed on %s: %s", example["id"], exc)
                score = worst
            if not math.isfinite(score):
                score = worst
        return score if maximize else -score

    return reward


# --------------------------------------------------------------------------------------------
# Collecting rollouts
# --------------------------------------------------------------------------------------------


class RolloutCollector:
    """Runs the frozen scaffold over G copies of train items through a real gateway.

    Use as a context manager (it starts the gateway and the policy's generation thread).
    """

    def __init__(
        self,
        *,
        task: Task,
        scaffold: str | Path,
        policy: PolicyTaskModel,
        work_dir: Path,
        parallel: int = 8,
        item_timeout_s: float = 600.0,
        memory_mb: int | None = 4096,
        sandbox: Sandbox | None = None,
    ) -> None:
        self.task = task
        self.scaffold = Path(scaffold)
        if not self.scaffold.is_file():
            raise SiaError(f"scaffold {str(self.scaffold)!r} does not exist")
        if scaffold_kind(self.scaffold) != "per_item":
            raise SiaError(
                f"scaffold {self.scaffold.name} has no solve(item, ctx): rollouts need a "
                "per-item scaffold (a program-style scaffold cannot be replayed per train item)"
            )
        self.policy = policy
        self.work_dir = work_dir
        self.parallel = max(1, parallel)
        self.item_timeout_s = item_timeout_s
        self.memory_mb = memory_mb
        self.reward = train_reward(task)
        self.examples = {str(e["id"]): e for e in task.train_examples()}
        self.gateway = Gateway(policy)
        #: the run's sandbox where the job names one the worker has (see worker.rollout_sandbox)
        self.sandbox = sandbox if sandbox is not None else ProcessSandbox()

    def __enter__(self) -> RolloutCollector:
        self.gateway.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.gateway.stop()

    def run(
        self,
        sources: Sequence[dict[str, Any]],
        group_size: int,
        tag: str,
        *,
        split: str = "train",
    ) -> list[tuple[RolloutSample, ItemResult]]:
        """Run the scaffold on ``group_size`` copies of each item; one sample per copy, in order.

        ``sources`` are ``{"id", "input"}`` dicts; for ``split="train"`` they must be train
        examples and each copy gets its train reward (others get reward 0: scored by the caller).
        """
        items = [
            Item(id=f"{s['id']}{ROLLOUT_SEP}{k}", input=s["input"], split=split)
            for s in sources
            for k in range(group_size)
        ]
        work = self.work_dir / tag
        if work.exists():
            shutil.rmtree(work)
        work.mkdir(parents=True)
        busy = {str(s["id"]) for s in sources}
        # the items being rolled out are left out of ctx.train: a scaffold that looks its own
        # input up in the train split would otherwise read its label
        train = tuple(e for i, e in self.examples.items() if i not in busy)
        spec = RunSpec(
            scaffold_path=self.scaffold,
            work_dir=work,
            public_dir=self.task.public_dir,
            train_examples=train,
            model_name=self.policy.name,
            parallel=min(self.parallel, len(items)),
            item_timeout_s=self.item_timeout_s,
            limits=Limits(wall_s=self.item_timeout_s, memory_mb=self.memory_mb),
        )
        running = [min(spec.parallel, len(items))]
        remaining = [len(items)]
        lock = threading.Lock()

        def on_item(_result: ItemResult) -> None:
            with lock:
                remaining[0] -= 1
                running[0] = min(spec.parallel, remaining[0])
                self.policy.expect(running[0])

        self.gateway.begin(0)
        self.policy.take_records()
        self.policy.expect(running[0])
        results = run_items(
            spec, items, sandbox=self.sandbox, gateway=self.gateway, on_item=on_item
        )
        records: dict[str, list[CallRecord]] = defaultdict(list)
        for record in self.policy.take_records():
            records[record.key].append(record)
        calls_by_item: dict[str, list[ModelCall]] = defaultdict(list)
        for call in self.gateway.calls():
            calls_by_item[str(call.item_id)].append(call)
        out = []
        for item, result in zip(items, results, strict=True):
            source_id = item.id.rsplit(ROLLOUT_SEP, 1)[0]
            calls, unmatched = [], 0
            for call in calls_by_item.get(item.id, []):
                if call.status != "ok":
                    continue
                matches = records.get(call_key(_request_messages(call.request), call.completion))
                if matches:
                    calls.append(matches.pop(0))
                else:
                    unmatched += 1
            answer = result.answer if result.status == "ok" else None
            # other splits are scored by the caller (their labels are not the train labels)
            reward = self.reward(self.examples[source_id], answer) if split == "train" else 0.0
            sample = RolloutSample(
                rollout=Rollout(item_id=source_id, reward=reward),
                source_id=source_id,
                status=result.status,
                answer=answer,
                error=result.error,
                calls=calls,
                unmatched_calls=unmatched,
            )
            out.append((sample, result))
        return out

    def collect(self, sources: Sequence[dict[str, Any]], group_size: int, tag: str) -> StepRollouts:
        """G rollouts of each train example, as objective groups (same order as ``sources``)."""
        t0 = time.monotonic()
        pairs = self.run(sources, group_size, tag)
        samples = [
            [pairs[g * group_size + k][0] for k in range(group_size)] for g in range(len(sources))
        ]
        groups = [
            Group(item_id=str(s["id"]), rollouts=[x.rollout for x in group])
            for s, group in zip(sources, samples, strict=True)
        ]
        errors = [f"{r.item_id}: {r.status}: {r.error}" for _, r in pairs if r.status != "ok"]
        return StepRollouts(groups, samples, time.monotonic() - t0, errors)


def worker_logs_tail(work: Path, max_chars: int = 2000) -> str:
    """The end of the scaffold workers' logs of the rollouts in ``work`` (for a failed step's
    message). The runner keeps them beside ``work`` (``<work>.logs``); nothing in the scaffold's
    own folder is read, and no link is followed."""
    logs = work.parent / f"{work.name}.logs"
    parts = []
    for path in sorted(logs.glob("worker-*.log")) if logs.is_dir() else ():
        try:
            text = read_tail(path, max_chars * 4).decode("utf-8", "replace").strip()
        except (OSError, UntrustedFileError):
            continue
        if text:
            parts.append(f"--- {path.name} ---\n{text[-max_chars:]}")
    joined = "\n".join(parts)
    return joined[-max_chars:] if len(joined) > max_chars else joined


def default_parallel() -> int:
    """Scaffold workers per step by default: enough to batch the model calls, few enough that
    starting them stays cheap."""
    return max(2, min(16, 4 * (os.cpu_count() or 1)))
