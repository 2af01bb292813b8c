"""Rollouts: the frozen scaffold, run on train items with the policy being trained.

:class:`RolloutCollector` serves the policy (:class:`~sia_train.policy_model.PolicyTaskModel`)
through a real :class:`sia_core.services.gateway.Gateway` and runs the scaffold with
:func:`sia_core.services.runner.run_items` in the run's sandbox (the job names it;
:class:`sia_core.services.process_sandbox.ProcessSandbox` where the worker lacks it, see
:func:`rollout_sandbox`) over G copies of each train item (ids ``train-12#0`` ..
``train-12#3``; the scaffold gets the original input). The reward of a rollout is the task's
scorer on (answer, train label). The gateway attributes each call to its rollout; the calls are
joined with the model's token records by (messages, completion text).

Importing this module is cheap: torch is imported only when the policy generates.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from sia_core.contracts.errors import SiaError
from sia_core.contracts.records import Item, ItemResult, ModelCall, to_dict
from sia_core.contracts.sandbox import Limits, Sandbox
from sia_core.machinery.plugins import get_plugin_manager, resolve
from sia_core.services.gateway import Gateway
from sia_core.services.process_sandbox import ProcessSandbox
from sia_core.services.runner import RunSpec, run_items, scaffold_kind
from sia_core.services.taskdir import Task
from sia_core.services.untrusted import UntrustedFileError, read_tail

from .objective import Group, Rollout
from .policy_model import PolicyTaskModel
from .rewards import train_reward, train_step_rewards
from .rollout_records import CallRecord, RolloutSample, StepRollouts, call_key

ROLLOUT_SEP = "#"


def _request_messages(request: Mapping[str, Any]) -> Any:
    """The messages a gateway request reached the task model with (completions: one user turn)."""
    if isinstance(request.get("messages"), list):
        return request["messages"]
    prompt = request.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1:
        prompt = prompt[0]
    return [{"role": "user", "content": prompt}]


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
        self.step_rewards = train_step_rewards(task)
        self.examples = {str(e["id"]): e for e in task.train_examples()}
        self.gateway = Gateway(policy)
        #: the run's sandbox where the job names one the worker has (see :func:`rollout_sandbox`)
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
            steps: tuple[float, ...] = ()
            if self.step_rewards is not None and split == "train" and calls:
                trajectory = [to_dict(step) for step in result.trajectory]
                steps = self.step_rewards(self.examples[source_id], answer, trajectory)
                # one reward per call the policy answered; a failed, unmatched or forged
                # llm_call step would shift every later reward, so such a rollout keeps only
                # its episode reward
                steps = steps if len(steps) == len(calls) and not unmatched else ()
            sample = RolloutSample(
                rollout=Rollout(item_id=source_id, reward=reward, step_rewards=steps),
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


def rollout_sandbox(name: str) -> tuple[Sandbox, str]:
    """The sandbox the rollouts run the scaffold in: the run's (``name``) where this machine
    has it and it works, else the process sandbox; with a line saying which and why."""
    if name == "process":
        return ProcessSandbox(), "process"
    try:
        box = resolve(get_plugin_manager().sandboxes().get(name).factory)()
        ok, why = box.available()
    except Exception as exc:  # not installed here (e.g. a remote executor's image)
        ok, why = False, f"{type(exc).__name__}: {exc}"
    if ok:
        return box, name
    return ProcessSandbox(), f"process (the run's sandbox {name!r} is not available here: {why})"
