"""Moving a :class:`~sia_core.contracts.records.TrainJob` to a Modal container and its result back.

Standard library + sia_core only, so all of it is tested without Modal:

- :func:`pack_job`: the job's files (task folder, scaffold, parent adapter) as one tar.gz and the
  job rewritten to the container's paths. A local base model goes to the ``sia`` Volume once
  (``/sia/models/<key>/``, the key a hash of its content, so every later job reuses the upload);
  an HF id stays as it is (the container has hub access). ``out_dir`` is on the Volume
  (``/sia/jobs/<job>-<hash>/out``), so a rerun of the same job resumes from the worker's
  checkpoint there.
- :func:`pack_dir` / :func:`unpack_into`: folders as tar.gz bytes (members checked on extraction).
- :func:`unpack_result`: the container's last message (``result.json`` text, the output folder as
  bytes) written into the local ``out_dir``, with the result's paths made local.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import tarfile
from collections.abc import Callable, Iterable
from pathlib import Path, PurePosixPath
from typing import Any

import attrs

from sia_core.contracts.records import TrainJob, TrainResult, from_dict, to_json
from sia_train.executor import progress_event

#: where the ``sia`` Volume is mounted in the container
VOLUME_ROOT = PurePosixPath("/sia")
#: per-job scratch folder in the container (task files, scaffold, parent adapter)
JOB_ROOT = PurePosixPath("/tmp/sia-job")
#: files of the remote out_dir that are not sent back (large, or only useful remotely)
NOT_RETURNED = ("optimizer.pt", "checkpoint", "checkpoint.old", "checkpoint.tmp", "rollouts")
_SAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def job_key(job: TrainJob) -> str:
    """A short hash of the whole job (the same job always maps to the same remote out_dir)."""
    return hashlib.sha256(to_json(job, sort_keys=True).encode()).hexdigest()[:12]


def file_key(path: Path, prefix_bytes: int = 16 * 1024 * 1024) -> str:
    """Hash of a file's size and first bytes (as ``sia_train.model.gguf_key``)."""
    h = hashlib.sha256()
    h.update(str(path.stat().st_size).encode())
    with open(path, "rb") as f:
        h.update(f.read(prefix_bytes))
    return h.hexdigest()[:32]


def dir_key(path: Path) -> str:
    """Hash of a folder's file names, sizes and first bytes."""
    h = hashlib.sha256()
    for p in sorted(x for x in path.rglob("*") if x.is_file()):
        h.update(str(p.relative_to(path)).encode() + b"\0" + file_key(p, 1 << 20).encode())
    return h.hexdigest()[:32]


def _members(root: Path, skip: Iterable[str] = ()) -> list[Path]:
    skipped = set(skip)
    out = []
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root)
        if skipped.intersection(rel.parts) or "__pycache__" in rel.parts:
            continue
        if p.is_file() and not p.is_symlink():
            out.append(p)
    return out


def pack_dir(root: Path, skip: Iterable[str] = (), arc_prefix: str = "") -> bytes:
    """The regular files under ``root`` as tar.gz bytes (``skip``: names of parts to leave out)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for p in _members(root, skip):
            tar.add(p, arcname=str(PurePosixPath(arc_prefix) / p.relative_to(root).as_posix()))
    return buf.getvalue()


def unpack_into(data: bytes, dest: Path) -> list[str]:
    """Extract tar.gz ``data`` into ``dest``; absolute or ``..`` members are refused."""
    dest.mkdir(parents=True, exist_ok=True)
    names = []
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        for member in tar.getmembers():
            name = PurePosixPath(member.name)
            if name.is_absolute() or ".." in name.parts or not (member.isfile() or member.isdir()):
                raise ValueError(f"refusing tar member {member.name!r}")
            names.append(member.name)
        tar.extractall(dest, filter="data")
    return names


@attrs.frozen(kw_only=True)
class Upload:
    """A local base model to put on the Volume at ``remote`` (relative to the Volume root)."""

    local: Path
    remote: str
    is_dir: bool


@attrs.frozen(kw_only=True)
class PackedJob:
    """What crosses to the container: the rewritten job, its files, the model to upload."""

    job: TrainJob  # paths as the container sees them
    payload: bytes  # tar.gz: task/, scaffold/<name>, init_adapter/
    upload: Upload | None
    remote_out: str


def pack_job(job: TrainJob) -> PackedJob:
    """Bundle ``job``'s files and rewrite its paths for the container (see the module doc)."""
    root = JOB_ROOT / f"{_SAFE.sub('-', job.job_id)[:60]}-{job_key(job)}"
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        task = Path(job.task_dir)
        if not task.is_dir():
            raise FileNotFoundError(f"task folder {job.task_dir} does not exist")
        for p in _members(task):
            tar.add(p, arcname=f"task/{p.relative_to(task).as_posix()}")
        scaffold = Path(job.scaffold)
        tar.add(scaffold, arcname=f"scaffold/{scaffold.name}")
        if job.init_adapter:
            adapter = Path(job.init_adapter)
            for p in _members(adapter, NOT_RETURNED):
                tar.add(p, arcname=f"init_adapter/{p.relative_to(adapter).as_posix()}")
    upload, base = None, job.base_model
    local = Path(job.base_model).expanduser()
    if local.is_file():
        key = file_key(local)
        upload = Upload(local=local, remote=f"models/{key}/{local.name}", is_dir=False)
        base = str(VOLUME_ROOT / upload.remote)
    elif local.is_dir():
        key = dir_key(local)
        upload = Upload(local=local, remote=f"models/{key}/{local.name}", is_dir=True)
        base = str(VOLUME_ROOT / upload.remote)
    remote_out = str(VOLUME_ROOT / "jobs" / root.name / "out")
    remote_job = attrs.evolve(
        job,
        task_dir=str(root / "task"),
        scaffold=str(root / "scaffold" / Path(job.scaffold).name),
        init_adapter=str(root / "init_adapter") if job.init_adapter else None,
        base_model=base,
        out_dir=remote_out,
    )
    return PackedJob(job=remote_job, payload=buf.getvalue(), upload=upload, remote_out=remote_out)


def unpack_job(job_json: str, payload: bytes) -> TrainJob:
    """Container side: extract the payload where the rewritten job expects it."""
    from sia_core.contracts.records import from_json

    job = from_json(TrainJob, job_json)
    root = Path(job.task_dir).parent
    unpack_into(payload, root)
    return job


def unpack_result(job: TrainJob, message: dict[str, Any]) -> TrainResult:
    """The container's final message as a local :class:`TrainResult` (files in ``job.out_dir``).

    ``message``: ``result`` (the remote ``result.json`` text or ``None``), ``out`` (tar.gz of the
    remote out_dir), ``returncode``, ``log_tail``, ``remote_out``.
    """
    out = Path(job.out_dir)
    if message.get("out"):
        unpack_into(message["out"], out)
    extra = {"executor": "modal", "remote_out": message.get("remote_out")}
    raw = message.get("result")
    result = from_dict(TrainResult, json.loads(raw)) if raw else None
    if result is not None and result.status == "ok" and message.get("returncode") == 0:
        return attrs.evolve(
            result,
            adapter=str(out),
            log=str(out / "train_log.jsonl"),
            metrics={**result.metrics, **extra},
        )
    tail = str(message.get("log_tail") or "")
    why = (result.error if result is not None and result.error else "") or (
        f"the remote training worker exited with code {message.get('returncode')}"
    )
    return TrainResult(
        status="failed",
        log=str(out / "worker.log"),
        metrics={**(result.metrics if result else {}), **extra},
        error=f"{why}\n--- last lines of the remote worker log ---\n{tail}" if tail else why,
    )


def progress_events(lines: Iterable[str], send: Callable[[dict[str, Any]], None]) -> None:
    """Forward the JSON progress lines (objects with an ``event`` key) among ``lines``."""
    for line in lines:
        event = progress_event(line)
        if event is not None:
            send(event)
