"""MLflow runs: start or reopen one, log to it, end it, and the run file later stages read.

Runs are addressed by id through ``MlflowClient``: MLflow's active run is per-thread, so
nothing here relies on it outside the short ``log_model`` call that needs it (``flavour``).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bvae.errors import MissingInput
from bvae.tracking.lineage import lineage_tags
from bvae.tracking.store import (
    _client,
    check_tracking_server,
    default_artifact_location,
    server_calls,
    store_of_run_file,
    tracking_uri,
)

log = logging.getLogger(__name__)

RUN_FILE = Path("models/mlflow_run.json")


def flatten(mapping: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` → ``{"a.b": 1}``: dotted keys, as DVC and MLflow show them."""
    flat: dict[str, Any] = {}
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def _param_text(value: Any) -> str:
    """MLflow params are strings; lists keep a readable JSON form."""
    return json.dumps(list(value)) if isinstance(value, list | tuple) else str(value)


@dataclass(frozen=True)
class RunHandle:
    run_id: str
    experiment_id: str
    tracking_uri: str
    model_uri: str | None = None  # set once training has logged the model
    model_id: str | None = None  # that logged model's id: evaluation metrics are linked to it


# MLflow 3's UI opens an experiment in its GenAI view (an empty LLM dashboard). Some 3.x
# releases choose the view by this tag; 3.17 by its GenAI / Model training switch, which a
# URL sets with ``?workflowType=machine_learning`` (``ui_page``'s links carry it).
EXPERIMENT_TAGS = {"mlflow.experimentKind": "custom_model_development"}
MODEL_TRAINING_VIEW = "workflowType=machine_learning"


def ui_page(base: str, experiment_id: str, run_id: str | None = None, tab: str = "") -> str:
    """The MLflow UI's page of an experiment's runs, or of one run (``tab``: e.g.
    ``artifacts/report/report.html``), in the Model training view."""
    path = f"{base.rstrip('/')}/#/experiments/{experiment_id}"
    path += f"/runs/{run_id}" if run_id else "/runs"
    if tab:
        path += f"/{tab}"
    return f"{path}?{MODEL_TRAINING_VIEW}"


def start_run(
    experiment: str,
    params: Mapping[str, Any],
    tags: Mapping[str, str] | None = None,
    run_name: str | None = None,
    resume_run_id: str | None = None,
    uri: str | None = None,
    fallback_name: str | None = None,
) -> RunHandle:
    """Create (or reopen, after a resume) a run with the flattened params and lineage tags.
    Its name: ``run_name``, else the DVC experiment's, else ``fallback_name`` (what it
    trained: a plain ``dvc repro`` has no experiment name), else MLflow's random one."""
    uri = uri or tracking_uri()
    check_tracking_server(uri)
    client = _client(uri)
    if resume_run_id:
        try:
            run = client.get_run(resume_run_id)
            client.update_run(resume_run_id, status="RUNNING")
            return RunHandle(resume_run_id, run.info.experiment_id, uri)
        except Exception as error:  # noqa: BLE001 - a missing run just means a fresh one
            log.warning("cannot reopen MLflow run %s (%s); starting a new run", resume_run_id, error)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        experiment_id = client.create_experiment(
            experiment, artifact_location=default_artifact_location(), tags=EXPERIMENT_TAGS
        )
    else:
        experiment_id = found.experiment_id
        for key, value in EXPERIMENT_TAGS.items():  # experiments made before, unless set by hand
            if key not in found.tags:
                client.set_experiment_tag(experiment_id, key, value)
    all_tags = {**lineage_tags(), **(tags or {})}
    if run_name is None:
        run_name = all_tags.get("dvc_experiment") or fallback_name
    run = client.create_run(experiment_id, tags=all_tags, run_name=run_name)
    from mlflow.entities import Param

    flat = flatten(params)
    items = [Param(key, _param_text(value)[:6000]) for key, value in sorted(flat.items())]
    for start in range(0, len(items), 100):  # log_batch takes at most 100 params a call
        client.log_batch(run.info.run_id, params=items[start : start + 100])
    return RunHandle(run.info.run_id, experiment_id, uri)


def log_metrics(
    run: RunHandle,
    metrics: Mapping[str, float],
    step: int | None = None,
    *,
    model_id: str | None = None,
    dataset: tuple[str, str] | None = None,
) -> None:
    """Log ``metrics`` to the run; with ``model_id`` (and ``dataset``: name, digest) also to
    that logged model, whose MLflow page then lists them, per dataset."""
    import time

    from mlflow.entities import Metric

    client = _client(run.tracking_uri)
    stamp = int(time.time() * 1000)
    name, digest = dataset or (None, None)
    linked = {"model_id": model_id, "dataset_name": name, "dataset_digest": digest}
    items = [Metric(key, float(value), stamp, step or 0, **linked) for key, value in metrics.items()]
    with server_calls(run.tracking_uri, "logging metrics"):
        for start in range(0, len(items), 1000):
            client.log_batch(run.run_id, metrics=items[start : start + 1000])


def set_tags(run: RunHandle, tags: Mapping[str, str]) -> None:
    client = _client(run.tracking_uri)
    for key, value in tags.items():
        client.set_tag(run.run_id, key, value)


def existing_run(run_id: str, uri: str | None = None) -> RunHandle:
    """A handle on a run someone else started and ends (a Prefect sweep's parent run): reading
    it changes nothing on it."""
    uri = uri or tracking_uri()
    check_tracking_server(uri)
    with server_calls(uri, f"reading run {run_id}"):
        run = _client(uri).get_run(run_id)
    return RunHandle(run_id, run.info.experiment_id, uri)


def adopt_child(parent: RunHandle, run_id: str) -> None:
    """Nest ``run_id`` under ``parent`` unless it already has a parent run."""
    client = _client(parent.tracking_uri)
    if "mlflow.parentRunId" not in client.get_run(run_id).data.tags:
        client.set_tag(run_id, "mlflow.parentRunId", parent.run_id)


def log_artifact(run: RunHandle, path: str | os.PathLike, artifact_path: str | None = None) -> None:
    with server_calls(run.tracking_uri, f"logging {Path(path).name}"):
        _client(run.tracking_uri).log_artifact(run.run_id, str(path), artifact_path)


def log_artifacts(run: RunHandle, folder: str | os.PathLike, artifact_path: str | None = None) -> None:
    """Every file of an output folder but bvae's own marker (``fileio.OUTPUT_MARKER``)."""
    from bvae.fileio import OUTPUT_MARKER

    client, folder = _client(run.tracking_uri), Path(folder)
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.name != OUTPUT_MARKER:
            subfolder = path.parent.relative_to(folder).as_posix()
            prefix = "/".join(part for part in (artifact_path, subfolder) if part and part != ".")
            client.log_artifact(run.run_id, str(path), prefix or None)


def log_table(run: RunHandle, columns: Mapping[str, list], artifact_file: str) -> None:
    """A table (column → values) the MLflow UI shows and compares (``log_table``)."""
    _client(run.tracking_uri).log_table(run.run_id, data=dict(columns), artifact_file=artifact_file)


def log_text(run: RunHandle, text: str, artifact_file: str) -> None:
    _client(run.tracking_uri).log_text(run.run_id, text, artifact_file)


def end_run(run: RunHandle, status: str = "FINISHED") -> None:
    with server_calls(run.tracking_uri, f"marking the run {status}"):
        _client(run.tracking_uri).set_terminated(run.run_id, status=status)


def write_run_file(run: RunHandle, path: str | os.PathLike = RUN_FILE, **extra: Any) -> None:
    """Record the run so later stages (evaluate, traverse, register) log into the same one."""
    from bvae.fileio import write_json

    write_json(
        path,
        {
            "run_id": run.run_id,
            "experiment_id": run.experiment_id,
            "tracking_uri": run.tracking_uri,
            **extra,
        },
    )


def read_run_file(path: str | os.PathLike = RUN_FILE) -> RunHandle:
    path = Path(path)
    if not path.exists():
        raise MissingInput(f"{path} not found: run the train stage first (`dvc repro train`).")
    data = json.loads(path.read_text())
    return RunHandle(
        data["run_id"],
        data["experiment_id"],
        store_of_run_file(data["tracking_uri"], data["run_id"]),
        model_uri=data.get("model_uri"),
        model_id=data.get("model_id"),
    )
