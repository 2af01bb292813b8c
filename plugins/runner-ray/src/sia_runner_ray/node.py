"""What runs on a node: one batch of items, in the run's sandbox there, through a gateway relay.

:func:`pack` (on the orchestrator) puts what the batch needs into one :class:`Shipment`: the
scaffold's source, the task's public folder as a tar archive, the train examples and the run
settings, so that a node needs nothing of the orchestrator's file system. :func:`run_batch` (a
Ray task on the node) unpacks it into a fresh folder, makes the run's sandbox by name from the
node's own plugins, starts a :class:`~sia_runner_ray.relay.NodeRelay`, and runs the batch with
the core's own per-item runner: the same workers, timeouts, process-tree kills and work-dir
watchdog as a local run. The folder is removed when the batch ends.
"""

from __future__ import annotations

import io
import os
import shutil
import socket
import tarfile
import tempfile
from pathlib import Path
from typing import Any

import attrs

from sia_core.contracts.errors import SiaError
from sia_core.contracts.records import Item, ItemResult
from sia_core.machinery.fs import pid_alive
from sia_core.machinery.plugins import new_plugin_manager, resolve
from sia_core.services.runner import RunSpec, run_items

from .relay import NodeRelay

__all__ = ["BatchResult", "Shipment", "check_node", "pack", "run_batch"]

#: how much of each worker log comes back to the run folder
LOG_TAIL_BYTES = 64 << 10


@attrs.frozen(kw_only=True)
class Shipment:
    """Everything a node needs to run items of one scaffold run (sent once per run step)."""

    spec: RunSpec  # its paths are the orchestrator's: replaced on the node
    scaffold: bytes
    public_tar: bytes
    sandbox: str
    gateway_url: str


@attrs.frozen(kw_only=True)
class BatchResult:
    """What a batch sends back: one result per item, the node, the workers' log tails."""

    node: str
    results: tuple[ItemResult, ...]
    logs: dict[str, bytes]


def pack(spec: RunSpec, sandbox: str, gateway_url: str) -> Shipment:
    """A :class:`Shipment` of ``spec``'s scaffold and public folder (links are not followed)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.add(str(spec.public_dir), arcname="public", recursive=True)
    return Shipment(
        spec=spec,
        scaffold=Path(spec.scaffold_path).read_bytes(),
        public_tar=buf.getvalue(),
        sandbox=sandbox,
        gateway_url=gateway_url,
    )


def node_name() -> str:
    """This node as a run records it: its address in the cluster, and its host name."""
    import ray

    return f"{ray.util.get_node_ip_address()} ({socket.gethostname()})"


def _sandbox(name: str) -> Any:
    spec = new_plugin_manager().sandboxes().get(name)
    sandbox = resolve(spec.factory)()
    ok, why = sandbox.available()
    if not ok:
        raise SiaError(f"sandbox {name!r} is not available on node {node_name()}: {why}")
    return sandbox


def check_node(sandbox: str) -> str:
    """``""`` when this node can run items in ``sandbox``, else why not (one line)."""
    try:
        _sandbox(sandbox)
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}" if not isinstance(exc, SiaError) else str(exc)
    return ""


def run_batch(
    shipment: Shipment, items: list[Item], item_keys: dict[str, str], idle_key: str
) -> BatchResult:
    """Run ``items`` on this node; ``item_keys`` are their gateway keys (one per item)."""
    _sweep_stale_batches()
    root = Path(tempfile.mkdtemp(prefix=f"{BATCH_PREFIX}{os.getpid()}-"))
    relay = NodeRelay(
        shipment.gateway_url,
        item_keys,
        idle_key=idle_key,
        timeout_s=shipment.spec.item_timeout_s + 60,
    )
    try:
        with tarfile.open(fileobj=io.BytesIO(shipment.public_tar)) as tar:
            tar.extractall(root, filter="data")  # no links out, no absolute paths
        scaffold = root / "target_agent.py"
        scaffold.write_bytes(shipment.scaffold)
        spec = attrs.evolve(
            shipment.spec,
            scaffold_path=scaffold,
            public_dir=root / "public",
            work_dir=root / "work",
            log_dir=root / "logs",
        )
        sandbox = _sandbox(shipment.sandbox)
        relay.start()
        results = run_items(spec, items, sandbox=sandbox, gateway=relay)
        node = node_name()
        return BatchResult(
            node=node,
            results=tuple(attrs.evolve(r, node=node) for r in results),
            logs={p.name: _tail(p) for p in sorted((root / "logs").glob("*.log"))},
        )
    finally:
        relay.stop()
        shutil.rmtree(root, ignore_errors=True)


#: a batch's folder on its node: ``<tmp>/sia-ray-batch-<pid of the Ray worker>-<random>``
BATCH_PREFIX = "sia-ray-batch-"


def _sweep_stale_batches() -> None:
    """Remove the folders of batches whose Ray worker died before cleaning up (killed with its
    node's processes, or cancelled with ``force=True``)."""
    for folder in Path(tempfile.gettempdir()).glob(f"{BATCH_PREFIX}*"):
        pid = folder.name.removeprefix(BATCH_PREFIX).split("-", 1)[0]
        if pid.isdigit() and not pid_alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


def _tail(path: Path) -> bytes:
    with open(path, "rb") as f:
        f.seek(0, 2)
        size = f.tell()
        f.seek(max(0, size - LOG_TAIL_BYTES))
        return f.read()
