"""Every MLflow call bvae makes lives in this package (runs here, the registry in ``registry``).

- The tracking URI comes from ``MLFLOW_TRACKING_URI``; the default is a SQLite database at an
  *absolute* path in the project root (``<root>/mlflow.db``, artifacts in
  ``<root>/mlartifacts``). The root is DVC's ``DVC_ROOT``, which DVC points at the parent
  repository even inside ``dvc exp run --temp`` and queue workspaces, so experiments run
  there land in the same store (a relative ``sqlite:///mlflow.db`` would not).
- Runs are addressed by id through ``MlflowClient``: MLflow's active run is per-thread, so
  nothing here relies on it outside the short ``log_model`` call that needs it.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import subprocess
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

RUN_FILE = Path("models/mlflow_run.json")
# A sweep passes its parent run to the pipeline's train stage explicitly, through the
# environment (MLflow's active run is per-thread and does not cross processes).
PARENT_RUN_ENV = "BVAE_MLFLOW_PARENT_RUN_ID"
_DVC_TEMP_MARKER = f"{os.sep}.dvc{os.sep}tmp{os.sep}exps{os.sep}"


class TrackingError(RuntimeError):
    """The tracking server cannot be used; the message names the URI and what to do."""


def project_root(start: str | os.PathLike | None = None) -> Path:
    """The repository root that owns the default MLflow store, never a temporary copy."""
    if os.environ.get("DVC_ROOT"):
        return Path(os.environ["DVC_ROOT"]).resolve()
    here = Path(start or Path.cwd()).resolve()
    text = str(here)
    if _DVC_TEMP_MARKER in text:  # inside .dvc/tmp/exps/...: the owner is above it
        return Path(text.split(_DVC_TEMP_MARKER)[0])
    for folder in (here, *here.parents):
        if (folder / ".dvc").is_dir() or (folder / "dvc.yaml").exists():
            return folder
    return here


def tracking_uri(root: str | os.PathLike | None = None) -> str:
    """``MLFLOW_TRACKING_URI`` if set, else ``sqlite:///<absolute root>/mlflow.db``.

    ``root`` names the project when it is not the working directory (a flow serving a checkout).
    """
    configured = os.environ.get("MLFLOW_TRACKING_URI")
    if configured:
        return configured
    return f"sqlite:///{project_root(root) / 'mlflow.db'}"


def default_artifact_location() -> str | None:
    """Where new experiments keep artifacts: ``<root>/mlartifacts`` for the local default.

    For a tracking server the server decides (artifact proxying), so nothing here assumes a
    local path for artifacts.
    """
    uri = tracking_uri()
    if uri.startswith(("sqlite:", "file:")) or "://" not in uri:
        return (project_root() / "mlartifacts").as_uri()
    return None


def check_tracking_server(uri: str | None = None, timeout_s: float = 5.0) -> None:
    """Fail fast, with one clear message, if an http(s) tracking server does not answer."""
    uri = uri or tracking_uri()
    if not uri.startswith(("http://", "https://")):
        return
    health = uri.rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(health, timeout=timeout_s) as response:
            response.read()
    except urllib.error.HTTPError:
        return  # it answered: a server (perhaps behind a proxy without /health) is there
    except (TimeoutError, urllib.error.URLError, ConnectionError) as error:
        reason = getattr(error, "reason", error)
        raise TrackingError(
            f"the MLflow tracking server at {uri} cannot be reached ({reason}). Start it "
            "(see README: Browse runs in MLflow) or unset MLFLOW_TRACKING_URI to use the "
            f"local store {project_root() / 'mlflow.db'}."
        ) from None


@functools.lru_cache(maxsize=8)
def _client_for(uri: str):
    import mlflow

    return mlflow.MlflowClient(uri)


def _client(uri: str | None = None):
    """The client for ``uri`` (default: the current one), made once per URI.

    Training logs through it every few steps. Without an explicit ``uri`` it also points
    MLflow's fluent API (``log_model``, ``register_model``) at the current URI.
    """
    if uri is not None:
        return _client_for(uri)
    import mlflow

    uri = tracking_uri()
    mlflow.set_tracking_uri(uri)
    return _client_for(uri)


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


def git_commit(root: Path) -> str | None:
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout.strip() or None if result.returncode == 0 else None


def lineage_tags() -> dict[str, str]:
    """Git commit, DVC experiment and parent (sweep) run of this process, from its environment."""
    tags = {"mlflow.source.type": "PROJECT", "bvae.pipeline": "dvc"}
    commit = git_commit(Path.cwd())
    if commit:
        tags["mlflow.source.git.commit"] = commit
        tags["git_commit"] = commit
    for variable, tag in (
        ("DVC_EXP_NAME", "dvc_experiment"),
        ("DVC_EXP_BASELINE_REV", "dvc_baseline_rev"),
        ("DVC_STAGE", "dvc_stage"),
    ):
        if os.environ.get(variable):
            tags[tag] = os.environ[variable]
    if os.environ.get(PARENT_RUN_ENV):
        tags["mlflow.parentRunId"] = os.environ[PARENT_RUN_ENV]
    return tags


@dataclass(frozen=True)
class RunHandle:
    run_id: str
    experiment_id: str
    tracking_uri: str
    model_uri: str | None = None  # set once training has logged the model


def start_run(
    experiment: str,
    params: Mapping[str, Any],
    tags: Mapping[str, str] | None = None,
    run_name: str | None = None,
    resume_run_id: str | None = None,
    uri: str | None = None,
) -> RunHandle:
    """Create (or reopen, after a resume) a run with the flattened params and lineage tags."""
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
        experiment_id = client.create_experiment(experiment, artifact_location=default_artifact_location())
    else:
        experiment_id = found.experiment_id
    all_tags = {**lineage_tags(), **(tags or {})}
    if run_name is None:
        run_name = all_tags.get("dvc_experiment")
    run = client.create_run(experiment_id, tags=all_tags, run_name=run_name)
    from mlflow.entities import Param

    flat = flatten(params)
    items = [Param(key, _param_text(value)[:6000]) for key, value in sorted(flat.items())]
    for start in range(0, len(items), 100):  # log_batch takes at most 100 params a call
        client.log_batch(run.info.run_id, params=items[start : start + 100])
    return RunHandle(run.info.run_id, experiment_id, uri)


def log_metrics(run: RunHandle, metrics: Mapping[str, float], step: int | None = None) -> None:
    import time

    from mlflow.entities import Metric

    client = _client(run.tracking_uri)
    stamp = int(time.time() * 1000)
    items = [Metric(key, float(value), stamp, step or 0) for key, value in metrics.items()]
    for start in range(0, len(items), 1000):
        client.log_batch(run.run_id, metrics=items[start : start + 1000])


def set_tags(run: RunHandle, tags: Mapping[str, str]) -> None:
    client = _client(run.tracking_uri)
    for key, value in tags.items():
        client.set_tag(run.run_id, key, value)


def adopt_child(parent: RunHandle, run_id: str) -> None:
    """Nest ``run_id`` under ``parent`` unless it already has a parent run."""
    client = _client(parent.tracking_uri)
    if "mlflow.parentRunId" not in client.get_run(run_id).data.tags:
        client.set_tag(run_id, "mlflow.parentRunId", parent.run_id)


def log_dataset(run: RunHandle, manifest_path: Path, digest: str, source: str, num_images: int) -> None:
    """Log the shard set as the run's training input, identified by the manifest's digest."""
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.entities import InputTag

    dataset = MetaDataset(
        source=resolve_dataset_source(manifest_path.resolve().as_uri()),
        name=f"dsprites-{source}",
        digest=digest[:32],  # MLflow stores at most 36 characters
    )
    entity = dataset._to_mlflow_entity()
    from mlflow.entities import DatasetInput

    _client(run.tracking_uri).log_inputs(
        run.run_id,
        datasets=[
            DatasetInput(
                dataset=entity,
                tags=[
                    InputTag("mlflow.data.context", "training"),
                    InputTag("num_images", str(num_images)),
                    InputTag("manifest_digest", digest),
                ],
            )
        ],
    )


def log_artifact(run: RunHandle, path: str | os.PathLike, artifact_path: str | None = None) -> None:
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


def log_torch_model(
    run: RunHandle,
    model,
    input_example,
    *,
    name: str = "model",
    pip_requirements: list[str] | None = None,
) -> str:
    """Log a torch model (pickle-free ``pt2``) to the run; returns its ``models:/`` URI."""
    import mlflow
    import numpy as np
    from mlflow.models.signature import ModelSignature
    from mlflow.types.schema import Schema, TensorSpec

    latent_dim = model.config.latent_dim
    signature = ModelSignature(
        # Unnamed: a named input makes MLflow wrap the serving example in a dict, which the
        # PyTorch flavour then refuses to validate.
        inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, 1, 64, 64))]),
        outputs=Schema(
            [
                TensorSpec(np.dtype(np.float32), (-1, latent_dim), "latents_mean"),
                TensorSpec(np.dtype(np.float32), (-1, latent_dim), "latents_logvar"),
                TensorSpec(np.dtype(np.float32), (-1, 1, 64, 64), "reconstruction_logits"),
            ]
        ),
    )
    mlflow.set_tracking_uri(run.tracking_uri)
    with mlflow.start_run(run_id=run.run_id, nested=False):  # log_model needs the active run
        info = mlflow.pytorch.log_model(
            model,
            name=name,
            input_example=input_example,
            signature=signature,
            pip_requirements=pip_requirements,
        )
    return info.model_uri


def end_run(run: RunHandle, status: str = "FINISHED") -> None:
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
        raise FileNotFoundError(f"{path} not found: run the train stage first (`dvc repro train`).")
    data = json.loads(path.read_text())
    return RunHandle(data["run_id"], data["experiment_id"], data["tracking_uri"], data.get("model_uri"))
