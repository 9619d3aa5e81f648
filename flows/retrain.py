"""Flow ``bvae-retrain``: the scheduled job. One DVC experiment of the whole pipeline.

The pipeline's own ``register`` stage registers the model and runs the promotion gate, so the
flow adds no second copy of either: it validates the overrides, runs ``dvc exp run``, reads
``reports/metrics.json`` and ``models/registered.json`` from the experiment, and publishes a
Markdown artifact with the metrics and a link to the MLflow run.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run as current_flow_run

from bvae.overrides import validate_overrides
from bvae.tracking import tracking_uri
from flows.report import mlflow_ui_base, registration_sentence, retrain_markdown
from flows.tasks import EXPERIMENT_LIMIT, ensure_limit, run_pipeline


def experiment_name(prefix: str) -> str:
    """A unique, git-ref-safe DVC experiment name: ``prefix-YYYYmmdd-HHMMSS``."""
    return f"{prefix}-{datetime.now(UTC):%Y%m%d-%H%M%S-%f}"[:-3]


@flow(name="bvae-retrain", log_prints=True)
def retrain(
    project: str = ".",
    overrides: dict[str, Any] | None = None,
    name: str | None = None,
    mlflow_ui: str | None = None,
    concurrency_limit: str | None = EXPERIMENT_LIMIT,
) -> dict[str, Any]:
    """Run the DVC pipeline as a new experiment (``overrides``: ``{"objective.beta": 8}``)."""
    logger = get_run_logger()
    project_dir = Path(project).resolve()
    overrides = dict(overrides or {})
    params = validate_overrides(project_dir, overrides)  # a bad value fails here, never retried
    name = name or experiment_name("retrain")
    if concurrency_limit:
        ensure_limit(concurrency_limit, None)
    experiment = run_pipeline(str(project_dir), name, overrides, limit=concurrency_limit)
    registration = experiment.registration
    markdown = retrain_markdown(
        name,
        experiment.metrics,
        registration,
        params.registry.selection_metric,
        mlflow_ui_base(tracking_uri(project_dir), mlflow_ui),
    )
    create_markdown_artifact(markdown=markdown, key="bvae-retrain", description=f"DVC experiment {name}")
    if registration:
        logger.info("%s", registration_sentence(registration))
    return {
        "flow_run_id": str(current_flow_run.id),
        "experiment": name,
        "ref": experiment.ref,
        "metrics": experiment.metrics,
        "registration": registration,
    }


if __name__ == "__main__":
    retrain()
