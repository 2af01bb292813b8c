"""sia tracker for Weights & Biases: ``SIA_TRACKERS=wandb sia --task ...``.

Project ``WANDB_PROJECT`` (else ``sia-TASK``), entity ``WANDB_ENTITY``; files under ``WANDB_DIR``
(else the run folder: ``runs/run_N/wandb/``). Offline: ``WANDB_MODE=offline`` writes everything
locally and ``wandb sync`` uploads it later. A resumed sia run continues its W&B run (same run id,
kept in ``trackers/wandb.json`` of the run folder). Per-generation values use ``gen`` as their
x-axis and training curves ``train/step``. wandb is imported only when a run is tracked; it comes
with the extra: ``pip install 'sia-trackers[wandb]'``.
"""

from __future__ import annotations

import os
import secrets
import string
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from sia_core.contracts.errors import SiaError

from .base import TrackedRun, safe_name
from .observer import TrackerObserver

INSTALL = "pip install 'sia-trackers[wandb]'"
OFFLINE_MODES = ("offline", "dryrun", "disabled")


def new_run_id() -> str:
    """A W&B run id like wandb's own: 8 lowercase letters and digits."""
    alphabet = string.ascii_lowercase + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(8))


class WandbTracker:
    """One sia run as one W&B run (``wandb.init(id=..., resume="allow")``)."""

    def __init__(self) -> None:
        self.run: Any = None
        self._defined: set[str] = set()

    def start(self, run: TrackedRun, previous: Mapping[str, Any] | None) -> tuple[dict, bool]:
        import wandb

        mode = (os.environ.get("WANDB_MODE") or wandb.setup().settings.mode or "online").lower()
        if mode not in OFFLINE_MODES and not wandb.login(prompt=False, verify=False):
            raise SiaError(
                "W&B has no API key: run `wandb login`, set WANDB_API_KEY, or set "
                "WANDB_MODE=offline to log locally and `wandb sync` later"
            )
        previous = previous or {}
        run_id = str(previous.get("id") or new_run_id())
        project = str(
            previous.get("project")
            or os.environ.get("WANDB_PROJECT")
            or f"sia-{safe_name(run.task)}"
        )
        folder = str(previous.get("dir") or os.environ.get("WANDB_DIR") or run.run_dir)
        Path(folder).mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(
            project=project,
            entity=previous.get("entity") or os.environ.get("WANDB_ENTITY") or None,
            id=run_id,
            resume="allow",
            name=run.title,
            dir=folder,
            tags=[safe_name(run.task), "sia"],
            reinit="create_new",
            # quiet: sia prints where the run is; no console capture or system-metrics sampling
            settings=wandb.Settings(
                console="off", quiet=True, save_code=False, x_disable_stats=True
            ),
        )
        self.run.define_metric("gen")
        self.run.define_metric("train/step")
        self.run.define_metric("train/*", step_metric="train/step")
        where = f"W&B run {run_id} (project {project}, {mode}) in {Path(self.run.dir).parent}"
        state = {
            "id": run_id,
            "project": project,
            "entity": self.run.entity or None,
            "dir": folder,
            "where": where,
        }
        return state, bool(previous.get("id"))

    def log_params(self, params: Mapping[str, str]) -> None:
        self.run.config.update(dict(params), allow_val_change=True)

    def set_tags(self, tags: Mapping[str, str]) -> None:
        # W&B tags are labels, not key/value pairs: the summary shows these in the runs table
        self.run.summary.update(dict(tags))

    def log_metrics(self, metrics: Mapping[str, float], *, step: int, axis: str) -> None:
        if axis == "train":
            self.run.log({"train/step": step, **metrics})
            return
        for key in metrics:
            if key not in self._defined:
                self.run.define_metric(key, step_metric="gen")
                self._defined.add(key)
        self.run.log({"gen": step, **metrics})

    def log_files(self, files: list[Path], dest: str) -> None:
        import wandb

        if not files:
            return
        name = f"run-{self.run.id}-{dest or 'run'}".replace("/", "-")
        artifact = wandb.Artifact(name, type="sia-generation" if dest else "sia-run")
        # a generation's files never change once written: no staging copy; context.md does
        policy: Literal["immutable", "mutable"] = "immutable" if dest else "mutable"
        for f in files:
            artifact.add_file(str(f), name=f"{dest}/{f.name}" if dest else f.name, policy=policy)
        self.run.log_artifact(artifact)

    def finish(self, status: str) -> None:
        self.run.finish(exit_code=0 if status in ("finished", "stopped") else 1)


#: the plugin object the ``tracker-wandb`` entry point registers
tracker = TrackerObserver("wandb", WandbTracker, requires=("wandb",), install=INSTALL)
