"""The ``modal`` executor: sia-train's worker as a Modal function on an on-demand GPU.

``run(job, on_progress)``:

1. packs the job (:func:`sia_executor_modal.jobpack.pack_job`): task folder, scaffold and parent
   adapter as tar.gz bytes; a local base model is uploaded once to the ``sia`` Volume;
2. builds the image (:func:`image_spec` → :func:`build_image`): ``debian_slim`` + pip installs of
   torch / transformers / peft / gguf (the versions installed here), sia-core's and sia-train's
   requirements and what the bundled tasks' scaffolds import; sia's own packages are mounted from
   this machine with ``add_local_python_source`` (they need not be on PyPI);
3. calls the function (:func:`sia_executor_modal.remote.run_job`, a generator) on a GPU: it runs
   ``python -m sia_train.worker`` in the container, streams progress lines back, and returns the
   worker's ``result.json`` and output folder as bytes, unpacked into ``job.out_dir``.

Every failure (no token, upload, image build, remote crash) is a ``TrainResult(status="failed")``.
Imports modal only inside :meth:`ModalExecutor.run`; never imports torch or trl.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import logging
import os
import re
import tomllib
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import attrs

from sia_core.contracts.records import TrainJob, TrainResult, to_json

from .jobpack import VOLUME_ROOT, PackedJob, Upload, pack_job, unpack_result

log = logging.getLogger(__name__)

DEFAULT_GPU = "H100"
DEFAULT_TIMEOUT_S = 3 * 3600
DEFAULT_VOLUME = "sia"
APP_NAME = "sia-train"
PYTHON_VERSION = "3.11"
#: what the worker imports (pinned to the versions installed here when they are)
WORKER_PACKAGES = ("torch", "transformers", "peft", "gguf", "safetensors", "accelerate")
#: what the bundled tasks' reference scaffolds import (lawbench: TF-IDF retrieval)
SCAFFOLD_PACKAGES = ("numpy", "scikit-learn")
#: sia's packages, mounted into the image from this machine
SIA_MODULES = ("sia_core", "sia_train", "sia_executor_modal")
NO_TOKEN = "no Modal token (run `modal token new`)"
_REQ_NAME = re.compile(r"^\s*([A-Za-z0-9_.-]+)")


@attrs.frozen(kw_only=True)
class ImageSpec:
    """The container image as plain data (what :func:`build_image` turns into a modal.Image)."""

    python_version: str = PYTHON_VERSION
    pip: tuple[str, ...] = ()
    local_modules: tuple[str, ...] = SIA_MODULES
    env: dict[str, str] = attrs.field(factory=dict)

    def install_commands(self) -> list[str]:
        """The image's build steps, in order, as one readable line each."""
        return [
            f"debian_slim python {self.python_version}",
            "pip install " + " ".join(self.pip),
            "env " + " ".join(f"{k}={v}" for k, v in sorted(self.env.items())),
            "add_local_python_source " + " ".join(self.local_modules),
        ]


def _pinned(dist: str) -> str:
    """``dist==<installed version>`` (local tags like ``+cpu`` dropped), or just ``dist``."""
    try:
        version = importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return dist
    return f"{dist}=={version.split('+')[0]}"


def _requirements(dist: str) -> list[str]:
    """``dist``'s unconditional requirements, minus sia's own packages (those are mounted)."""
    try:
        reqs = importlib.metadata.requires(dist) or []
    except importlib.metadata.PackageNotFoundError:
        return []
    out = []
    for req in reqs:
        if ";" in req and "extra" in req.split(";", 1)[1]:
            continue
        match = _REQ_NAME.match(req)
        if match and not match.group(1).lower().replace("_", "-").startswith("sia-"):
            out.append(req.split(";", 1)[0].strip())
    return out


def trainer_module(trainer: str) -> str:
    """The top-level package of an import string (``sia_rl_grpo.objective:make_objective``)."""
    return trainer.partition(":")[0].split(".")[0]


def image_spec(
    trainer: str, extra_pip: Iterable[str] = (), volume: str = DEFAULT_VOLUME
) -> ImageSpec:
    """The image a job with objective ``trainer`` needs."""
    pip: list[str] = [_pinned(d) for d in WORKER_PACKAGES]
    for dist in ("sia-core", "sia-train"):
        pip += _requirements(dist)
    pip += [*SCAFFOLD_PACKAGES, *extra_pip]
    seen: set[str] = set()
    unique = []
    for req in pip:
        match = _REQ_NAME.match(req)
        name = match.group(1).lower() if match else req
        if name not in seen:
            seen.add(name)
            unique.append(req)
    modules = [*SIA_MODULES]
    if trainer_module(trainer) not in modules:
        modules.append(trainer_module(trainer))
    env = {
        "PYTHONPATH": "/root",  # where add_local_python_source puts sia's packages
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        "SIA_MODAL_VOLUME": volume,
    }
    return ImageSpec(pip=tuple(unique), local_modules=tuple(modules), env=env)


def build_image(spec: ImageSpec, modal: Any) -> Any:
    """``spec`` as a ``modal.Image`` (``modal`` is the module, or a stand-in in tests)."""
    return (
        modal.Image.debian_slim(python_version=spec.python_version)
        .pip_install(*spec.pip)
        .env(dict(spec.env))
        .add_local_python_source(*spec.local_modules)
    )


def modal_token(environ: Mapping[str, str] | None = None) -> bool:
    """Whether a Modal token is configured: ``MODAL_TOKEN_ID``/``_SECRET`` or ``~/.modal.toml``.

    Reads the config file the way the modal client does (``MODAL_CONFIG_PATH``, the profile named
    by ``MODAL_PROFILE`` or the one marked ``active``), without importing modal.
    """
    env = os.environ if environ is None else environ
    if env.get("MODAL_TOKEN_ID") and env.get("MODAL_TOKEN_SECRET"):
        return True
    path = Path(env.get("MODAL_CONFIG_PATH") or Path(env.get("HOME", "~")) / ".modal.toml")
    try:
        config = tomllib.loads(path.expanduser().read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError):
        return False
    profiles = {k: v for k, v in config.items() if isinstance(v, dict)}
    wanted = env.get("MODAL_PROFILE")
    if wanted:
        chosen = profiles.get(wanted)
    else:
        active = [v for v in profiles.values() if v.get("active")]
        chosen = active[0] if active else (next(iter(profiles.values())) if profiles else None)
    return bool(chosen and chosen.get("token_id") and chosen.get("token_secret"))


class ModalExecutor:
    """Runs each training job as a Modal function on a ``gpu`` (job settings ``modal_gpu``,
    ``modal_timeout_s`` and ``modal_pip`` override the constructor's)."""

    name = "modal"

    def __init__(
        self,
        *,
        gpu: str = DEFAULT_GPU,
        timeout_s: int = DEFAULT_TIMEOUT_S,
        volume: str = DEFAULT_VOLUME,
        extra_pip: Iterable[str] = (),
    ) -> None:
        self.gpu = gpu
        self.timeout_s = timeout_s
        self.volume = volume
        self.extra_pip = tuple(extra_pip)

    def available(self) -> tuple[bool, str]:
        """Whether modal is installed and a token is configured (modal is not imported)."""
        try:
            installed = importlib.util.find_spec("modal") is not None
        except (ImportError, ValueError):
            installed = False
        if not installed:
            return False, "modal not installed (pip install sia-executor-modal)"
        if not modal_token():
            return False, NO_TOKEN
        return True, f"Modal token found: jobs run on a {self.gpu} GPU"

    def prepare(self, job: TrainJob) -> tuple[PackedJob, ImageSpec]:
        """Everything but the remote call: the packed job and the image it needs."""
        extra = [*self.extra_pip, *job.settings.get("modal_pip", ())]
        return pack_job(job), image_spec(job.trainer, extra, self.volume)

    def run(self, job: TrainJob, on_progress: Callable[[dict[str, Any]], None]) -> TrainResult:
        """Run ``job`` remotely; any failure is ``status="failed"`` with the reason."""
        ok, why = self.available()
        if not ok:
            return TrainResult(status="failed", error=f"modal executor unavailable: {why}")
        try:
            packed, spec = self.prepare(job)
            final = self._call(job, packed, spec, on_progress)
        except Exception as exc:
            log.exception("modal training job %s failed", job.job_id)
            return TrainResult(status="failed", error=f"modal: {type(exc).__name__}: {exc}")
        if final is None:
            return TrainResult(status="failed", error="modal: the function returned no result")
        return unpack_result(job, final)

    def _call(
        self,
        job: TrainJob,
        packed: PackedJob,
        spec: ImageSpec,
        on_progress: Callable[[dict[str, Any]], None],
    ) -> dict[str, Any] | None:  # pragma: no cover - needs Modal
        import modal

        from .remote import run_job

        volume = modal.Volume.from_name(self.volume, create_if_missing=True)
        if packed.upload is not None:
            upload_once(volume, packed.upload)
        app = modal.App(APP_NAME)
        function = app.function(
            image=build_image(spec, modal),
            gpu=gpu_request(job, self.gpu),
            timeout=int(job.settings.get("modal_timeout_s") or self.timeout_s),
            volumes={str(VOLUME_ROOT): volume},
            serialized=True,
        )(run_job)
        final = None
        with app.run():
            for message in function.remote_gen(to_json(packed.job), packed.payload):
                if "progress" in message:
                    try:
                        on_progress(message["progress"])
                    except Exception:
                        log.exception("on_progress failed")
                elif "final" in message:
                    final = message["final"]
        return final


def gpu_request(job: TrainJob, default: str = DEFAULT_GPU) -> str:
    """Modal's ``gpu=`` for ``job``: ``--train-opt modal_gpu``, else what the base model's
    profile needs (``"H100:8"`` for gpt-oss-120b, ``"L40S"`` for a 40 GB one), else ``default``."""
    from sia_train.profiles import profile_for

    if job.settings.get("modal_gpu"):
        return str(job.settings["modal_gpu"])
    profile = profile_for(job.base_model)
    if profile is None:
        return default
    kind = "L40S" if profile.gpu_memory_gb <= 48 else "H100"
    return f"{kind}:{profile.gpus}" if profile.gpus > 1 else kind


def upload_once(volume: Any, upload: Upload) -> bool:  # pragma: no cover - needs Modal
    """Put the base model on the Volume unless it is there already; whether it was uploaded."""
    remote_dir = "/" + upload.remote.rsplit("/", 1)[0]
    try:
        if any(True for _ in volume.listdir(remote_dir)):
            return False
    except Exception:  # not there yet
        pass
    with volume.batch_upload() as batch:
        if upload.is_dir:
            batch.put_directory(str(upload.local), "/" + upload.remote)
        else:
            batch.put_file(str(upload.local), "/" + upload.remote)
    return True


def make_modal_executor() -> ModalExecutor:
    """Factory named by the ``modal`` :class:`~sia_core.contracts.records.ExecutorSpec`."""
    return ModalExecutor()
