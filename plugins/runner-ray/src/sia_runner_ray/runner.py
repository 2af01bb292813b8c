"""The ``ray`` runner, on the orchestrator's side: batches of items as Ray tasks.

:meth:`RayRunner.start` connects to the cluster (``address``; none starts a one-machine cluster
here) and checks it: reachable, CPUs, and the run's sandbox available on every node, one line
otherwise. :meth:`RayRunner.run_items` sends the scaffold and the public folder once, splits the
items into batches of ``batch_size`` and submits each batch as a Ray task
(:func:`sia_runner_ray.node.run_batch`), with one gateway key per item bound to that item; only
as many batches are in flight as the cluster's CPUs run at once, so a batch's deadline and keys
start when it can start. As
batches end, their results are recorded (with the node each item ran on) and their keys revoked.
A batch whose node is lost (its node or worker died, or it ran past its deadline) is run again
once elsewhere, with new keys, and each of its items records why; a second loss fails its items.
Stopping the run (Ctrl-C, an error) cancels every batch with ``force=True``, which kills the
batch's process on its node and, with it, its sandboxed workers.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import attrs

from sia_core.contracts.errors import SiaError
from sia_core.contracts.records import Item, ItemResult
from sia_core.contracts.sandbox import Sandbox
from sia_core.services.runner import Gateway, RunnerOptions, RunSpec

__all__ = ["RayRunner"]

log = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 8


def _int_setting(settings: dict[str, Any], name: str, default: int) -> int:
    value = settings.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int | str) or not str(value).isdigit():
        raise SiaError(f"--runner-opt {name}={value!r}: a positive whole number is needed")
    if int(value) < 1:
        raise SiaError(f"--runner-opt {name}={value!r}: a positive whole number is needed")
    return int(value)


def _probe(address: str, where: str) -> None:
    """Fail in one line, at once, when nothing answers at ``address`` (``HOST:PORT``)."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise SiaError(
            f"--runner-opt address={address!r}: HOST:PORT is needed (e.g. 10.0.0.1:6379)"
        )
    try:
        socket.create_connection((host, int(port)), timeout=15).close()
    except OSError as exc:
        raise SiaError(
            f"cannot connect to {where}: {exc.strerror or exc} (start one with `ray start "
            "--head`, or give --runner-opt address=HOST:PORT)"
        ) from exc


@attrs.define
class _Batch:
    indices: list[int]
    keys: dict[str, str]
    idle_key: str
    ref: Any
    deadline: float
    attempt: int = 1
    reruns: tuple[str, ...] = ()


class RayRunner:
    """Runs items as Ray tasks on a Ray cluster's nodes (``--runner ray``)."""

    name = "ray"

    def __init__(self, options: RunnerOptions | None = None) -> None:
        options = options or RunnerOptions()
        self.settings = dict(options.settings)
        self.sandbox_name = options.sandbox
        # as ray.init itself: RAY_ADDRESS when no address is given
        self.address: str | None = self.settings.get("address") or os.environ.get("RAY_ADDRESS")
        self.batch_size = _int_setting(self.settings, "batch_size", DEFAULT_BATCH_SIZE)
        self.cpus_per_batch = _int_setting(self.settings, "cpus_per_batch", 1)
        self._gateway_host = str(self.settings.get("gateway_host") or "")
        self._connected = False
        self._batch_count = 0

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        try:
            import ray
        except ImportError as exc:
            raise SiaError(
                f"runner 'ray' needs Ray ({exc}): pip install sia-runner-ray (or ray)"
            ) from exc
        where = f"Ray cluster at {self.address}" if self.address else "a local Ray cluster"
        # Ray's own notices (token auth, local cluster start) stay out of sia's output; its
        # logs are in the Ray session folder (/tmp/ray/session_latest/logs)
        logging.getLogger("ray").setLevel(logging.ERROR)
        if not ray.is_initialized():
            if self.address and self.address != "auto":
                _probe(self.address, where)  # Ray itself retries an absent head for minutes
            try:
                ray.init(
                    address=self.address,
                    include_dashboard=False,
                    log_to_driver=False,
                    configure_logging=False,
                    namespace="sia",
                )
            except Exception as exc:
                first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                if "InvalidAuthToken" in str(exc):
                    first = (
                        "the cluster refused this machine's Ray token (RAY_AUTH_TOKEN, "
                        "RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token must hold the cluster's)"
                    )
                raise SiaError(
                    f"cannot connect to {where}: {first} (start one with `ray start --head`, "
                    "or give --runner-opt address=HOST:PORT)"
                ) from exc
            self._connected = True
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        cpus = ray.cluster_resources().get("CPU", 0)
        if cpus < self.cpus_per_batch:
            raise SiaError(
                f"{where} has {cpus:g} CPUs; a batch asks for {self.cpus_per_batch} "
                "(--runner-opt cpus_per_batch)"
            )
        problems = self._check_nodes(nodes)
        if problems:
            raise SiaError(f"{where}: " + "; ".join(problems))
        if not self._gateway_host:
            # on a cluster of this machine only, the gateway stays on loopback; otherwise it
            # listens on the address the cluster reaches this machine at (keys guard it)
            self._gateway_host = ray.util.get_node_ip_address() if self.address else "127.0.0.1"
        log.info(
            "ray runner: %d node(s), %g CPUs, gateway on %s", len(nodes), cpus, self._gateway_host
        )

    def _check_nodes(self, nodes: list[dict[str, Any]]) -> list[str]:
        """Whether every alive node can run items in the run's sandbox: problems, one each."""
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        from .node import check_node

        remote = ray.remote(num_cpus=0, max_retries=0)(check_node)
        refs = {
            n["NodeManagerAddress"]: remote.options(
                scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)
            ).remote(self.sandbox_name)
            for n in nodes
        }
        problems = []
        for address, ref in refs.items():
            try:
                why = ray.get(ref, timeout=300)
            except Exception as exc:
                why = f"node check failed: {type(exc).__name__}: {exc}"
            if why:
                problems.append(f"node {address}: {why}")
        return problems

    def gateway_host(self) -> str:
        if not self._gateway_host:
            raise RuntimeError("RayRunner.gateway_host() before start()")
        return self._gateway_host

    def close(self) -> None:
        if self._connected:
            import ray

            ray.shutdown()
            self._connected = False

    # -- items ----------------------------------------------------------------------------------

    def run_items(
        self,
        spec: RunSpec,
        items: Sequence[Item],
        *,
        sandbox: Sandbox,
        gateway: Gateway | None,
        on_item: Callable[[ItemResult], None] | None = None,
    ) -> list[ItemResult]:
        """One result per item, in order; every batch still running is cancelled on the way out."""
        import ray

        from .node import pack, run_batch

        items = list(items)
        if not items:
            return []
        if gateway is None:
            raise SiaError("the ray runner needs the run's model gateway")
        shipment = ray.put(pack(spec, self.sandbox_name, gateway.url))
        # SPREAD: a run's batches go over the nodes rather than fill this one first
        remote = ray.remote(
            num_cpus=self.cpus_per_batch, max_retries=0, scheduling_strategy="SPREAD"
        )(run_batch)
        results: list[ItemResult | None] = [None] * len(items)
        size = self.batch_size
        # a batch's own workers bound each item; this only catches a node that stops answering
        per_item = spec.item_timeout_s * math.ceil(size / max(1, spec.parallel))
        budget = spec.setup_timeout_s * 2 + per_item + 120

        def submit(indices: list[int], attempt: int = 1, reruns: tuple[str, ...] = ()) -> _Batch:
            keys = {}
            for i in indices:
                keys[items[i].id] = gateway.new_token()
                gateway.assign(keys[items[i].id], items[i].id)
            idle = gateway.new_token()
            ref = remote.remote(shipment, [items[i] for i in indices], keys, idle)
            return _Batch(indices, keys, idle, ref, time.monotonic() + budget, attempt, reruns)

        revoke_key = getattr(gateway, "revoke", None)  # optional in the Gateway protocol

        def revoke(batch: _Batch) -> None:
            if callable(revoke_key):
                for key in (*batch.keys.values(), batch.idle_key):
                    revoke_key(key)

        def record(i: int, result: ItemResult) -> None:
            results[i] = result
            if on_item is not None:
                try:
                    on_item(result)
                except Exception:
                    log.exception("on_item callback failed for %s", result.item_id)

        # only as many batches in flight as the cluster runs at once: a batch's deadline (and
        # its items' keys) start when it can start, not while it would wait in Ray's queue
        queue: list[tuple[list[int], int, tuple[str, ...]]] = [
            (list(range(s, min(s + size, len(items)))), 1, ()) for s in range(0, len(items), size)
        ]
        pending: list[_Batch] = []
        try:
            while queue or pending:
                if queue:  # the window shrinks once a node is lost
                    cpus = ray.cluster_resources().get("CPU", 1)
                    window = max(1, int(cpus // self.cpus_per_batch))
                    while queue and len(pending) < window:
                        pending.append(submit(*queue.pop(0)))
                ready, _ = ray.wait([b.ref for b in pending], num_returns=1, timeout=1.0)
                now = time.monotonic()
                for batch in list(pending):
                    if batch.ref in ready:
                        lost = self._collect(batch, spec, items, record)
                    elif now > batch.deadline:
                        ray.cancel(batch.ref, force=True)
                        lost = f"no answer from its node within {budget:g}s (cancelled)"
                    else:
                        continue
                    pending.remove(batch)
                    revoke(batch)
                    if not lost:
                        continue
                    if batch.attempt >= 2:
                        for i in batch.indices:
                            record(i, self._lost(items[i], lost, batch.reruns))
                        continue
                    log.warning(
                        "ray runner: a batch of %d items was lost (%s); running it again",
                        len(batch.indices),
                        lost,
                    )
                    queue.insert(0, (batch.indices, 2, (*batch.reruns, lost)))
        except BaseException:
            for batch in pending:
                ray.cancel(batch.ref, force=True)
                revoke(batch)
            raise
        return [
            r if r is not None else self._lost(items[i], "never ran", ())
            for i, r in enumerate(results)
        ]

    def _collect(
        self,
        batch: _Batch,
        spec: RunSpec,
        items: list[Item],
        record: Callable[[int, ItemResult], None],
    ) -> str:
        """Record a finished batch's results; ``""``, or why the batch was lost."""
        import ray
        from ray.exceptions import RayTaskError, TaskCancelledError

        try:
            done = ray.get(batch.ref)
        except RayTaskError as exc:  # the node's code raised: a fault of this batch, not its node
            cause = exc.cause if exc.cause is not None else exc
            message = f"runner error on a Ray node: {type(cause).__name__}: {cause}"
            for i in batch.indices:
                record(i, self._lost(items[i], message, batch.reruns))
            return ""
        except TaskCancelledError:
            return "cancelled"
        except Exception as exc:  # node died, worker crashed, object lost ...
            first = (str(exc).strip().splitlines() or [""])[0]
            return f"{type(exc).__name__}: {first}"[:500]
        self._batch_count += 1
        logs = spec.logs()
        for name, data in done.logs.items():
            (logs / f"batch-{self._batch_count}-{Path(name).name}").write_bytes(data)
        by_id = {r.item_id: r for r in done.results}
        for i in batch.indices:
            result = by_id.get(items[i].id) or self._lost(items[i], "missing from its batch", ())
            record(i, attrs.evolve(result, reruns=batch.reruns))
        return ""

    @staticmethod
    def _lost(item: Item, why: str, reruns: tuple[str, ...]) -> ItemResult:
        return ItemResult(
            item_id=item.id, split=item.split, status="error", error=why, reruns=reruns
        )
