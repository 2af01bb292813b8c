"""sia tracker for MLflow: ``SIA_TRACKERS=mlflow sia --task ...``.

Where: ``MLFLOW_TRACKING_URI`` when set (a server, ``sqlite:///...``, or a ``file:`` store), else
``sqlite:///RUNS_DIR/mlflow.db`` with artifacts in ``RUNS_DIR/mlartifacts`` (offline, no server;
browse with ``pip install mlflow; mlflow ui --backend-store-uri sqlite:///runs/mlflow.db``).
Experiment: ``MLFLOW_EXPERIMENT_NAME`` (or ``MLFLOW_EXPERIMENT_ID``), else ``sia-TASK``. A resumed
sia run continues its MLflow run (id and store kept in ``trackers/mlflow.json`` of the run
folder). What is logged: docs/trackers.md. mlflow is imported only when a run is tracked; it comes
with the extra: ``pip install 'sia-trackers[mlflow]'``.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .base import TrackedRun, safe_name
from .observer import TrackerObserver

INSTALL = "pip install 'sia-trackers[mlflow]'"
STATUS = {"finished": "FINISHED", "stopped": "FINISHED", "failed": "FAILED", "killed": "KILLED"}
#: MLflow's limits: keys, param values, tag values; entries per log_batch call
_KEY_BAD = re.compile(r"[^A-Za-z0-9_\-. /]")
PARAM_MAX, TAG_MAX, BATCH_METRICS, BATCH_PARAMS = 6000, 8000, 1000, 100


def tracking_uri(run: TrackedRun) -> str:
    """``MLFLOW_TRACKING_URI``, else a SQLite store beside the run folders."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{run.runs_dir / 'mlflow.db'}"


def _key(key: str) -> str:
    return _KEY_BAD.sub("_", key)[:250]


class MlflowTracker:
    """One sia run as one MLflow run, through ``MlflowClient`` (no global fluent state)."""

    def __init__(self) -> None:
        self.client: Any = None
        self.run_id = ""
        self._params: dict[str, str] | None = None

    def start(self, run: TrackedRun, previous: Mapping[str, Any] | None) -> tuple[dict, bool]:
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient

        uri = str((previous or {}).get("tracking_uri") or tracking_uri(run))
        if uri.startswith("file:") or "://" not in uri:
            # MLflow 3.10+ refuses the file store unless asked; naming it is asking
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        self.client = MlflowClient(tracking_uri=uri)
        state = {"tracking_uri": uri}
        if previous and previous.get("id"):
            try:
                found = self.client.get_run(previous["id"])
            except MlflowException:
                found = None
            if found is not None and found.info.lifecycle_stage == "active":
                self.run_id = found.info.run_id
                self.client.update_run(self.run_id, status="RUNNING")
                state.update(
                    id=self.run_id,
                    experiment_id=found.info.experiment_id,
                    where=f"MLflow run {self.run_id} in {uri}",
                )
                return state, True
        experiment_id = self._experiment(run, uri)
        created = self.client.create_run(
            experiment_id,
            run_name=run.title,
            tags={"sia.run_id": run.run_id, "mlflow.source.name": "sia"},
        )
        self.run_id = created.info.run_id
        state.update(
            id=self.run_id,
            experiment_id=experiment_id,
            where=f"MLflow run {self.run_id} (experiment {experiment_id}) in {uri}",
        )
        return state, False

    def _experiment(self, run: TrackedRun, uri: str) -> str:
        from mlflow.exceptions import MlflowException

        if os.environ.get("MLFLOW_EXPERIMENT_ID"):
            return os.environ["MLFLOW_EXPERIMENT_ID"]
        name = os.environ.get("MLFLOW_EXPERIMENT_NAME") or f"sia-{safe_name(run.task)}"
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return str(found.experiment_id)
        location = None
        if not os.environ.get("MLFLOW_TRACKING_URI"):  # our default store: artifacts beside it
            location = (run.runs_dir / "mlartifacts").resolve().as_uri()
        try:
            return str(self.client.create_experiment(name, artifact_location=location))
        except MlflowException:  # another run created it meanwhile
            found = self.client.get_experiment_by_name(name)
            if found is None:
                raise
            return str(found.experiment_id)

    def log_params(self, params: Mapping[str, str]) -> None:
        from mlflow.entities import Param, RunTag

        if self._params is None:
            self._params = dict(self.client.get_run(self.run_id).data.params)
        new, changed = [], []
        for k, v in params.items():
            key, value = _key(k), v[:PARAM_MAX]
            if key not in self._params:
                new.append(Param(key, value))
                self._params[key] = value
            elif self._params[key] != value:  # params are immutable in MLflow
                changed.append(RunTag(f"sia.param_changed.{key}", value[:TAG_MAX]))
        for i in range(0, len(new), BATCH_PARAMS):
            self.client.log_batch(self.run_id, params=new[i : i + BATCH_PARAMS])
        if changed:
            self.client.log_batch(self.run_id, tags=changed)

    def set_tags(self, tags: Mapping[str, str]) -> None:
        from mlflow.entities import RunTag

        if tags:
            items = [RunTag(_key(k), str(v)[:TAG_MAX]) for k, v in tags.items()]
            self.client.log_batch(self.run_id, tags=items)

    def log_metrics(self, metrics: Mapping[str, float], *, step: int, axis: str) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(_key(k), float(v), now, int(step)) for k, v in metrics.items()]
        for i in range(0, len(items), BATCH_METRICS):
            self.client.log_batch(self.run_id, metrics=items[i : i + BATCH_METRICS])

    def log_files(self, files: list[Path], dest: str) -> None:
        for f in files:
            self.client.log_artifact(self.run_id, str(f), artifact_path=dest or None)

    def finish(self, status: str) -> None:
        self.client.set_terminated(self.run_id, status=STATUS.get(status, "FINISHED"))


#: the plugin object the ``tracker-mlflow`` entry point registers
tracker = TrackerObserver("mlflow", MlflowTracker, requires=("mlflow",), install=INSTALL)
