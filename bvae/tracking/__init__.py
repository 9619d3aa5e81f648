"""Every MLflow call bvae makes lives in this package, one module per job:

- ``store``: where the store is (``MLFLOW_TRACKING_URI`` or ``<root>/mlflow.db``), whether
  its server answers, one client per URI;
- ``runs``: start, log to and end a run, and ``models/mlflow_run.json``;
- ``lineage``: git commit, DVC experiment, parent run and the dataset of a run;
- ``flavour``: the logged model (a served pyfunc around a torch.export archive), imported
  on its own by the train stage, the one stage that logs a model;
- ``registry``: the model registry and its promotion gate.
"""

from bvae.tracking.lineage import PARENT_RUN_ENV, dataset_identity, git_commit, lineage_tags, log_dataset
from bvae.tracking.runs import (
    RUN_FILE,
    RunHandle,
    adopt_child,
    end_run,
    existing_run,
    flatten,
    log_artifact,
    log_artifacts,
    log_metrics,
    log_table,
    log_text,
    read_run_file,
    set_tags,
    start_run,
    ui_page,
    write_run_file,
)
from bvae.tracking.store import (
    TrackingError,
    _client,
    check_tracking_server,
    default_artifact_location,
    project_root,
    require_existing_store,
    server_calls,
    tracking_uri,
)

__all__ = [
    "PARENT_RUN_ENV",
    "RUN_FILE",
    "RunHandle",
    "TrackingError",
    "_client",
    "adopt_child",
    "check_tracking_server",
    "dataset_identity",
    "default_artifact_location",
    "end_run",
    "flatten",
    "git_commit",
    "lineage_tags",
    "log_artifact",
    "log_artifacts",
    "log_dataset",
    "log_metrics",
    "log_table",
    "log_text",
    "project_root",
    "read_run_file",
    "require_existing_store",
    "server_calls",
    "set_tags",
    "existing_run",
    "start_run",
    "tracking_uri",
    "ui_page",
    "write_run_file",
]
