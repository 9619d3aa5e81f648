"""Where a run comes from: git commit, DVC experiment, parent sweep run, and the dataset."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from bvae.tracking.store import _client

# A sweep passes its parent run to the pipeline's train stage explicitly, through the
# environment (MLflow's active run is per-thread and does not cross processes).
PARENT_RUN_ENV = "BVAE_MLFLOW_PARENT_RUN_ID"
# A Prefect flow names its flow run the same way, so the MLflow run links back to it.
PREFECT_FLOW_RUN_ENV = "BVAE_PREFECT_FLOW_RUN_ID"
PREFECT_FLOW_RUN_URL_ENV = "BVAE_PREFECT_FLOW_RUN_URL"


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
        (PREFECT_FLOW_RUN_ENV, "prefect_flow_run_id"),
        (PREFECT_FLOW_RUN_URL_ENV, "prefect_flow_run_url"),
    ):
        if os.environ.get(variable):
            tags[tag] = os.environ[variable]
    if os.environ.get(PARENT_RUN_ENV):
        tags["mlflow.parentRunId"] = os.environ[PARENT_RUN_ENV]
    return tags


def dataset_identity(source: str, digest: str) -> tuple[str, str]:
    """The shard set's MLflow name and digest: the run's input and the key its evaluation
    metrics are filed under on the logged model's page."""
    return f"dsprites-{source}", digest[:32]  # MLflow stores at most 36 characters


def manifest_source(manifest_path: Path):
    """The manifest as MLflow's local dataset source, named by its type: MLflow registers that
    source twice (for the schemes "" and "file"), so resolving a ``file://`` URI would print a
    UserWarning ("can be interpreted in multiple ways") once per run."""
    import json

    from mlflow.data.dataset_source_registry import get_dataset_source_from_json

    return get_dataset_source_from_json(json.dumps({"uri": manifest_path.resolve().as_uri()}), "local")


def log_dataset(run, manifest_path: Path, digest: str, source: str, num_images: int) -> None:
    """Log the shard set as the run's training input, identified by the manifest's digest."""
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.entities import InputTag

    name, short_digest = dataset_identity(source, digest)
    dataset = MetaDataset(source=manifest_source(manifest_path), name=name, digest=short_digest)
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
