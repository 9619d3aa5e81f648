"""What the flows publish: Markdown tables of metrics, with links to MLflow (pure functions)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from bvae.report_keys import HEADLINE
from bvae.sweep import comparison_rows
from bvae.tables import MISSING, markdown_table
from bvae.tracking import flatten, ui_page

# Where people browse MLflow when the tracking URI is a local file (the README's `mlflow server`).
DEFAULT_MLFLOW_UI = "http://127.0.0.1:5000"


def mlflow_ui_base(tracking_uri: str, configured: str | None = None) -> str:
    """The MLflow UI to link to: given, else ``$BVAE_MLFLOW_UI``, else the server itself."""
    if configured:
        return configured.rstrip("/")
    if os.environ.get("BVAE_MLFLOW_UI"):
        return os.environ["BVAE_MLFLOW_UI"].rstrip("/")
    if tracking_uri.startswith(("http://", "https://")):
        return tracking_uri.rstrip("/")
    return DEFAULT_MLFLOW_UI


def run_link(base: str, experiment_id: str | None, run_id: str | None) -> str:
    if not run_id:
        return MISSING
    if not experiment_id:
        return f"`{run_id}`"
    return f"[{run_id[:8]}]({ui_page(base, experiment_id, run_id)})"


def headline(metrics: Mapping[str, Any], selection_metric: str) -> dict[str, Any]:
    """The few numbers worth a table: the selection metric, the headline scores, held-out fit."""
    flat = flatten(metrics)
    keys = {
        selection_metric: selection_metric,
        **HEADLINE,
        "heldout_reconstruction": "heldout.reconstruction_nats",
    }
    return {label: flat.get(key) for label, key in keys.items()}


def retrain_markdown(
    name: str,
    metrics: Mapping[str, Any],
    registration: Mapping[str, Any] | None,
    selection_metric: str,
    ui_base: str,
) -> str:
    table = markdown_table(["metric", "value"], list(headline(metrics, selection_metric).items()))
    lines = [f"## bvae retrain `{name}`", "", table, ""]
    if registration:
        experiment_id, run_id = registration.get("mlflow_experiment_id"), registration.get("mlflow_run_id")
        lines += [
            f"**Registry:** {registration_sentence(registration)}",
            "",
            "**MLflow run:** " + run_link(ui_base, experiment_id, run_id),
            "",
            "**Report:** " + report_link(ui_base, experiment_id, run_id),
        ]
    lines += [
        "",
        f"**DVC experiment:** `{name}` (`dvc exp show`; `dvc exp apply {name}` brings its outputs, "
        "`reports/report.html` among them, into the workspace)",
    ]
    return "\n".join(lines) + "\n"


def registration_sentence(registration: Mapping[str, Any]) -> str:
    """What the register stage did, in words: a new version, or none because these weights
    are an existing version's (a run that changed nothing registers nothing)."""
    name, version = registration["name"], registration["version"]
    champion = registration.get("champion_version")
    if registration.get("created") is False:
        return (
            f"nothing registered: the weights equal `{name}` version {version}'s "
            f"(champion is version {champion})"
        )
    state = "the new champion" if registration.get("promoted") else "a candidate"
    return f"`{name}` version {version} registered, {state} (champion is version {champion})"


def report_link(base: str, experiment_id: str | None, run_id: str | None) -> str:
    """The run's offline HTML report in the MLflow UI's artifact view."""
    if not (experiment_id and run_id):
        return MISSING
    return f"[report.html]({ui_page(base, experiment_id, run_id, 'artifacts/report/report.html')})"


def point_rows(points: Sequence[Mapping[str, Any]], selection_metric: str) -> list[dict[str, Any]]:
    """One row per sweep point (:func:`bvae.sweep.comparison_rows`), with its registry
    version, MLflow run, status and worker."""
    compared = [(p["name"], p["grid_values"], flatten(p.get("metrics") or {})) for p in points]
    rows = comparison_rows(compared, selection_metric, name_column="experiment")
    for row, point in zip(rows, points, strict=True):
        registration = point.get("registration") or {}
        row.update(
            version=registration.get("version"),
            mlflow_run_id=registration.get("mlflow_run_id"),
            mlflow_experiment_id=registration.get("mlflow_experiment_id"),
            status=point.get("status", "completed"),
            worker=point.get("worker"),
        )
    return rows


def sweep_markdown(
    name: str,
    rows: Sequence[Mapping[str, Any]],
    grid_keys: Sequence[str],
    selection_metric: str,
    best: str | None,
    promotion: Mapping[str, Any] | None,
    ui_base: str,
) -> str:
    header = ["experiment", *grid_keys, selection_metric, "MIG", "version", "MLflow run", "status"]
    body = [
        [
            f"`{row['experiment']}`" + (" ★" if row["experiment"] == best else ""),
            *(row.get(key) for key in grid_keys),
            row.get(selection_metric),
            row.get(HEADLINE["mig"]),
            str(row.get("version") or MISSING),
            run_link(ui_base, row.get("mlflow_experiment_id"), row.get("mlflow_run_id")),
            str(row.get("status")),
        ]
        for row in rows
    ]
    lines = [f"## bvae sweep `{name}`", "", markdown_table(header, body)]
    if promotion:
        outcome = "is the new champion" if promotion["promoted"] else "did not beat the champion"
        lines += [
            "",
            f"**Best point** `{best}`: `{promotion['name']}` version {promotion['version']} {outcome} "
            f"(champion is version {promotion['champion_version']}).",
        ]
    return "\n".join(lines) + "\n"
