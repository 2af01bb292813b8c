"""The ``ray`` executor: a weight update as a Ray task, with the resources it asks for.

:meth:`RayExecutor.run` ships the job's files (the task folder, the frozen scaffold, the parent
adapter, and the base model when it is a local file or folder) through Ray's object store and
runs :func:`train_on_node` on whichever node has the CPUs and GPUs the job asks for
(``--train-opt ray_num_cpus=2 ray_num_gpus=1``). There the job runs exactly as the ``local``
executor runs it (sia-train's worker in a subprocess, in the run's sandbox where the node has
it); the adapter folder comes back into the job's ``out_dir``, so the run uses it as it uses a
local one. Progress lines arrive when the job ends, not as it goes. The cluster is the one the
runner uses (``--runner-opt address``), else ``--train-opt ray_address``, else ``RAY_ADDRESS``,
else a one-machine cluster started here.
"""

from __future__ import annotations

import importlib.util
import io
import logging
import os
import shutil
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs

from sia_core.contracts.records import TrainJob, TrainResult, from_json, to_json

__all__ = ["RayExecutor", "train_on_node"]

#: the --train-opt keys this executor reads
SETTINGS = ("ray_address", "ray_num_cpus", "ray_num_gpus")  # as plugin.EXECUTOR_SETTINGS
#: files of the node's out_dir that are not sent back (large, or only useful there)
NOT_RETURNED = ("checkpoint", "checkpoint.old", "checkpoint.tmp", "rollouts")


def _tar(files: dict[str, Path]) -> bytes:
    """``{arcname: path}`` (files or folders, links not followed) as tar bytes."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, path in files.items():
            tar.add(str(path), arcname=name, recursive=True)
    return buf.getvalue()


def _untar(data: bytes, dest: Path) -> None:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        tar.extractall(dest, filter="data")  # no absolute paths, no links out


class RayExecutor:
    """Runs each training job as a Ray task (see the module docstring)."""

    name = "ray"

    def available(self) -> tuple[bool, str]:
        """Whether Ray and sia-train's worker can be imported here (nothing is imported)."""
        missing = [
            m for m in ("ray", "sia_train", "torch", "transformers", "peft")
            if importlib.util.find_spec(m) is None
        ]  # fmt: skip
        if missing:
            return (
                False,
                f"{', '.join(missing)} not installed (pip install sia-runner-ray 'sia-train[torch]')",
            )
        return True, "Ray and sia-train installed: trains as a Ray task on the cluster"

    def run(self, job: TrainJob, on_progress: Callable[[dict[str, Any]], None]) -> TrainResult:
        try:
            return self._run(job, on_progress)
        except Exception as exc:  # a failed job is a failed step, never a dead run
            first = (str(exc).strip().splitlines() or [""])[0]
            return TrainResult(
                status="failed", error=f"ray executor: {type(exc).__name__}: {first}"
            )

    def _run(self, job: TrainJob, on_progress: Callable[[dict[str, Any]], None]) -> TrainResult:
        import ray

        if not ray.is_initialized():
            logging.getLogger("ray").setLevel(logging.ERROR)  # as the runner: no Ray notices
            address = job.settings.get("ray_address") or os.environ.get("RAY_ADDRESS")
            ray.init(
                address=address,
                include_dashboard=False,
                log_to_driver=False,
                configure_logging=False,
                namespace="sia",
            )
        files = {
            "task": Path(job.task_dir),
            f"scaffold/{Path(job.scaffold).name}": Path(job.scaffold),
        }
        if job.init_adapter:
            files["init_adapter"] = Path(job.init_adapter)
        base = Path(job.base_model).expanduser()
        model: Any = ray.put(_tar({f"model/{base.name}": base})) if base.exists() else None
        remote = ray.remote(
            num_cpus=float(job.settings.get("ray_num_cpus", 1)),
            num_gpus=float(job.settings.get("ray_num_gpus", 0)),
            max_retries=0,
        )(train_on_node)
        done = ray.get(remote.remote(to_json(job), _tar(files), model))
        out = Path(job.out_dir)
        out.mkdir(parents=True, exist_ok=True)
        _untar(done["out"], out)
        for event in done["events"]:
            on_progress(event)
        result = from_json(TrainResult, done["result"])
        metrics = {**result.metrics, "executor": "ray", "node": done["node"]}
        if result.status != "ok":
            return attrs.evolve(result, metrics=metrics, log=str(out / "worker.log"))
        return attrs.evolve(
            result, adapter=str(out.resolve()), log=str(out / "train_log.jsonl"), metrics=metrics
        )


def train_on_node(job_json: str, files: bytes, model: bytes | None) -> dict[str, Any]:
    """On the node: unpack, run the job with sia-train's local executor, send the output back."""
    import ray

    from sia_train.executor import LocalExecutor

    job = from_json(TrainJob, job_json)
    root = Path(tempfile.mkdtemp(prefix="sia-ray-train-"))
    try:
        _untar(files, root)
        base = job.base_model
        if model is not None:
            _untar(model, root)
            base = str(root / "model" / Path(job.base_model).expanduser().name)
        local = attrs.evolve(
            job,
            task_dir=str(root / "task"),
            scaffold=str(root / "scaffold" / Path(job.scaffold).name),
            init_adapter=str(root / "init_adapter") if job.init_adapter else None,
            base_model=base,
            out_dir=str(root / "out"),
        )
        events: list[dict[str, Any]] = []
        result = LocalExecutor().run(local, events.append)
        out = root / "out"
        kept = {p.name: p for p in sorted(out.iterdir()) if p.name not in NOT_RETURNED}
        return {
            "result": to_json(result),
            "out": _tar(kept),
            "events": events,
            "node": ray.util.get_node_ip_address(),
        }
    finally:
        shutil.rmtree(root, ignore_errors=True)
