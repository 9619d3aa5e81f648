"""Stage ``sweep-compare``: one row per member (grid values, headline figures) as
``sweeps/comparison.json`` (``dvc metrics show`` lists every member), a Markdown table, a CSV for
``dvc plots`` and a chart of the selection metric against the grid; logged to the sweep's
parent run when this pipeline started it (under a Prefect sweep, the flow logs its whole
comparison to the one parent run it gave).
"""

from __future__ import annotations

import csv
import json
import logging
import math

from bvae import tracking
from bvae.config import Params
from bvae.errors import MissingInput
from bvae.figures import save_sweep_chart
from bvae.fileio import atomic_path, write_json
from bvae.stages.sweep_files import PARENT_RUN_FILE, SweepPaths, read_sweep
from bvae.sweep import best_member, comparison_rows
from bvae.tables import markdown_table
from bvae.tracking import metric_names

log = logging.getLogger(__name__)


def member_rows(params: Params, paths: SweepPaths, entries: list[dict]) -> list[dict]:
    """One row per member of ``sweep.json`` (:func:`bvae.sweep.comparison_rows`), with its
    active latents and MLflow run."""
    points = []
    for entry in entries:
        figures = json.loads(paths.member(entry["name"]).metrics.read_text())
        points.append((entry["name"], entry["point"], tracking.flatten(figures)))
    rows = comparison_rows(points, params.registry.selection_metric)
    for row, entry in zip(rows, entries, strict=True):
        summary = json.loads(paths.member(entry["name"]).summary.read_text())
        row["train.active_latents"] = summary["active_latents"]
        row["mlflow_run_id"] = entry["run_id"]
    return rows


def _shown_columns(rows: list[dict]) -> list[str]:
    """The table's and the CSV's columns: every row key but the MLflow run id."""
    return [key for key in rows[0] if key != "mlflow_run_id"]


def comparison_markdown(rows: list[dict], selection_metric: str, best: str) -> str:
    """The members best first, the best one starred."""
    columns = _shown_columns(rows)
    ranked = sorted(rows, key=lambda row: -(row[selection_metric] or -math.inf))
    body = [
        [f"{row['member']} ★" if row["member"] == best else row["member"], *(row[key] for key in columns[1:])]
        for row in ranked
    ]
    title = f"# Sweep: {len(rows)} members, best by {selection_metric}: {best}"
    return f"{title}\n\n{markdown_table(columns, body)}\n"


def run_sweep_compare(params: Params, paths: SweepPaths = SweepPaths()) -> dict:
    """The table and chart across members; logged to the sweep's parent run."""
    selection = params.registry.selection_metric
    sweep = read_sweep(paths)
    rows = member_rows(params, paths, sweep["members"])
    best_row = best_member(rows, selection)
    if best_row is None:
        raise MissingInput(f"no sweep member has a finite {selection}: nothing to compare or promote")
    best = best_row["member"]
    grid_keys = list(params.sweep.grid)
    metrics = {
        "best": best,
        "selection_metric": selection,
        "members": {
            row["member"]: {k: v for k, v in row.items() if k not in ("member", "mlflow_run_id")}
            for row in rows
        },
    }
    write_json(paths.comparison, metrics)
    with atomic_path(paths.comparison_markdown) as temporary:
        temporary.write_text(comparison_markdown(rows, selection, best))
    with atomic_path(paths.comparison_csv) as temporary, open(temporary, "w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=_shown_columns(rows), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    save_sweep_chart(paths.comparison_chart, rows, grid_keys, selection)
    log.info("best member by %s: %s", selection, best)
    if sweep.get("parent_run_given"):
        # One parent run per sweep: the Prefect sweep that gave it compares all its points there.
        log.info("the comparison is logged by the owner of the parent run, not here")
        return metrics
    parent = tracking.read_run_file(paths.train / PARENT_RUN_FILE)
    tracking.log_table(parent, {key: [row[key] for row in rows] for key in rows[0]}, "sweep/comparison.json")
    for path in (paths.comparison_markdown, paths.comparison_chart):
        tracking.log_artifact(parent, path, "sweep")
    tracking.log_metrics(parent, {metric_names.eval_metric(f"best.{selection}"): float(best_row[selection])})
    tracking.set_tags(parent, {"bvae.best_member": best})
    return metrics
