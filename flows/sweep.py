"""Flow ``bvae-sweep``: a grid over any params, each point a DVC experiment, run in parallel.

- The grid is data: ``{"objective.beta": [1, 2, 4, 6, 8, 16], "train.seed": [0, 1, 2]}``.
- Points run as ``dvc exp run --temp`` (own temporary workspace: no DVC lock is shared) at
  most as many at once as the ``bvae-experiments`` concurrency limit allows (its size: the
  GPUs, else the CPU cores; ``max_parallel`` resizes it).
- ``runner`` picks where: Prefect's threads here, or a Dask / Ray cluster (``cluster``: its
  address; none: a temporary local one). The points run in a sub-flow ``bvae-sweep-points``
  whose task runner is that choice (``flows/runners.py``).
- One parent MLflow run; each point's run names it as ``mlflow.parentRunId``. The id reaches
  the train stage explicitly, through ``BVAE_MLFLOW_PARENT_RUN_ID``.
- Points register with ``registry.promote=false`` (``candidate`` only); at the end the best
  point goes through the same promotion gate as a single run.
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.futures import wait

from bvae import tracking
from bvae.config import ParamsError
from bvae.tracking import registry
from flows.experiments import Experiment, validate_overrides
from flows.report import comparison_rows, mlflow_ui_base, sweep_markdown
from flows.retrain import experiment_name
from flows.runners import RunnerChoice, choose_runner, task_runner
from flows.tasks import EXPERIMENT_LIMIT, default_slots, ensure_limit, gpu_count, run_pipeline

DEFAULT_GRID: dict[str, list[Any]] = {"objective.beta": [1, 2, 4, 6, 8, 16], "train.seed": [0]}


class SweepFailed(RuntimeError):
    """Some points failed; the others were compared and their best went through the gate."""


def expand_grid(grid: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """The Cartesian product of the grid's value lists, in the grid's key order."""
    if not grid:
        raise ParamsError("the sweep grid is empty: give at least one key with a list of values")
    for key, values in grid.items():
        if isinstance(values, str | bytes) or not isinstance(values, Sequence) or len(values) == 0:
            raise ParamsError(f"sweep grid key {key!r} needs a non-empty list of values, got {values!r}")
    keys = list(grid)
    return [dict(zip(keys, combination, strict=True)) for combination in itertools.product(*grid.values())]


def _gpu_env(index: int) -> dict[str, str]:
    """Round-robin points over the GPUs when there are several (one slot per GPU)."""
    gpus = gpu_count()
    if gpus > 1 and "CUDA_VISIBLE_DEVICES" not in os.environ:
        return {"CUDA_VISIBLE_DEVICES": str(index % gpus)}
    return {}


@flow(name="bvae-sweep", log_prints=True)
def sweep(
    project: str = ".",
    grid: dict[str, list[Any]] | None = None,
    overrides: dict[str, Any] | None = None,
    max_parallel: int | None = None,
    name: str | None = None,
    mlflow_ui: str | None = None,
    concurrency_limit: str = EXPERIMENT_LIMIT,
    runner: str = "threads",
    cluster: str | None = None,
) -> dict[str, Any]:
    """Run every grid point (on top of ``overrides``) and promote the best one.

    ``runner``: ``threads`` | ``dask`` | ``ray``; ``cluster``: that engine's address, or none
    for a temporary local cluster with one worker per slot of the limit.
    """
    logger = get_run_logger()
    project_dir = Path(project).resolve()
    choice = choose_runner(runner, cluster)
    grid = dict(grid or DEFAULT_GRID)
    base = {**(overrides or {}), "registry.promote": False}
    points = expand_grid(grid)
    params = None
    for point in points:  # every point is checked before anything runs
        params = validate_overrides(project_dir, {**base, **point})
    assert params is not None
    name = name or experiment_name("sweep")
    uri = tracking.tracking_uri(project_dir)
    parent = tracking.start_run(
        params.tracking.experiment,
        {"grid": json.dumps(grid), "overrides": json.dumps(overrides or {}), "points": len(points)},
        tags={"bvae.sweep": name, "bvae.kind": "sweep"},
        run_name=name,
        uri=uri,
    )
    try:
        # On this machine the shared limit bounds the points; on a cluster its workers do,
        # unless max_parallel asks for a bound there too.
        limit = concurrency_limit if choice.local or max_parallel is not None else None
        slots = ensure_limit(limit, max_parallel) if limit else None
        logger.info(
            "sweep %s: %d points on %s, at most %s at once; MLflow parent run %s",
            name,
            len(points),
            choice.cluster or f"{choice.kind} (local)",
            slots or "the cluster's workers",
            parent.run_id,
        )
        outcomes, failed = _run_points(project_dir, name, points, base, parent, limit, choice, slots)
        rows, best, promotion = _compare_and_promote(name, grid, outcomes, params, parent, mlflow_ui)
    except BaseException:
        tracking.end_run(parent, "FAILED")
        raise
    tracking.end_run(parent, "FAILED" if failed else "FINISHED")
    if failed:
        raise SweepFailed(f"sweep {name}: {len(failed)} of {len(points)} points failed: {', '.join(failed)}")
    return {"sweep": name, "parent_run_id": parent.run_id, "rows": rows, "best": best, "promotion": promotion}


@flow(name="bvae-sweep-points", flow_run_name="{name}-points")
def sweep_points(
    project: str,
    name: str,
    points: list[dict[str, Any]],
    env: dict[str, str],
    limit: str | None,
    round_robin_gpus: bool,
) -> list[Experiment | None]:
    """Every point as a task on this flow's task runner; ``None`` for a point that failed."""
    futures = [
        run_pipeline.submit(
            project, f"{name}-{index}", point, {**env, **(_gpu_env(index) if round_robin_gpus else {})}, limit
        )
        for index, point in enumerate(points)
    ]
    wait(futures)
    return [future.result() if future.state.is_completed() else None for future in futures]


def _run_points(
    project_dir: Path, name: str, points, base, parent, limit: str | None, choice: RunnerChoice, slots
):
    """Run the points on the chosen task runner; collect what each gave."""
    runner = task_runner(choice, slots or default_slots())
    experiments = sweep_points.with_options(task_runner=runner)(
        str(project_dir),
        name,
        [{**base, **point} for point in points],
        {tracking.PARENT_RUN_ENV: parent.run_id},
        limit,
        choice.local,
    )
    outcomes, failed = [], []
    for index, (point, experiment) in enumerate(zip(points, experiments, strict=True)):
        if experiment is None:
            failed.append(f"{name}-{index}")
            outcomes.append({"name": f"{name}-{index}", "grid_values": point, "status": "failed"})
            continue
        if experiment.run_id:  # DVC's run-cache may have restored an earlier run: adopt it
            tracking.adopt_child(parent, experiment.run_id)
        outcomes.append(
            {
                "name": experiment.name,
                "grid_values": point,
                "metrics": experiment.metrics,
                "registration": experiment.registration,
                "worker": experiment.worker,
            }
        )
    return outcomes, failed


def _compare_and_promote(name: str, grid, outcomes, params, parent, mlflow_ui: str | None):
    """The comparison table (Prefect artifact, MLflow table) and the gate for the best point."""
    selection_metric = params.registry.selection_metric
    rows = comparison_rows(outcomes, selection_metric)
    scored = [row for row in rows if row["status"] == "completed" and row[selection_metric] is not None]
    best_row = max(scored, key=lambda row: row[selection_metric], default=None)
    promotion = None
    if best_row is not None and best_row["version"] is not None:
        promotion = registry.promote(
            params.registry.model_name, best_row["version"], params.registry.margin, uri=parent.tracking_uri
        ).__dict__
    best = best_row["experiment"] if best_row else None
    ui = mlflow_ui_base(parent.tracking_uri, mlflow_ui)
    markdown = sweep_markdown(name, rows, list(grid), selection_metric, best, promotion, ui)
    create_markdown_artifact(
        markdown=markdown, key="bvae-sweep", description=f"sweep {name}: one row per point"
    )
    columns = {key: [row.get(key) for row in rows] for key in rows[0]} if rows else {}
    tracking.log_table(
        parent,
        {k: [json.dumps(v) if isinstance(v, list | dict) else v for v in vs] for k, vs in columns.items()},
        "sweep/comparison.json",
    )
    tracking.log_text(parent, markdown, "sweep/comparison.md")
    if best_row is not None:
        tracking.log_metrics(parent, {f"best.{selection_metric}": float(best_row[selection_metric])})
        tracking.set_tags(
            parent, {"bvae.best_experiment": best, "bvae.best_version": str(best_row["version"])}
        )
    return rows, best, promotion


if __name__ == "__main__":
    sweep()
