"""Flow ``bvae-sweep``: a grid over any params, each point a DVC experiment, run in parallel.

- The grid is data: ``{"objective.beta": [1, 2, 4, 6, 8, 16], "train.seed": [0, 1, 2]}``.
- Points that can share an ensemble (they differ only in ``bvae.config.MEMBER_KEYS``: the
  objective, learning rate, seed) are trained together: one ``sweeps/dvc.yaml`` experiment per
  group, at most ``max_members`` members each (memory). Every other key (architecture, batch
  size, …) splits the grid into groups; a group of one point runs the single pipeline.
- Experiments run as ``dvc exp run --temp`` (own temporary workspace: no DVC lock is shared) at
  most as many at once as the ``bvae-experiments`` concurrency limit allows (its size: the
  GPUs, else the CPU cores; ``max_parallel`` resizes it).
- ``runner`` picks where: Prefect's threads here, or a Dask / Ray cluster (``cluster``: its
  address; none: a temporary local one). The points run in a sub-flow ``bvae-sweep-points``
  whose task runner is that choice (``flows/runners.py``).
- One parent MLflow run for the whole sweep; each point's run (an ensemble's members too)
  names it as ``mlflow.parentRunId``. The id reaches the training stages explicitly, through
  ``BVAE_MLFLOW_PARENT_RUN_ID``; an ensemble then starts no parent of its own, and this flow
  logs the comparison of every point.
- Points register with ``registry.promote=false`` (``candidate`` only); at the end the best
  point goes through the same promotion gate as a single run.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.futures import wait

from bvae import tracking
from bvae.config import MEMBER_KEYS, ParamsError
from bvae.overrides import validate_overrides
from bvae.sweep import best_member, expand_grid
from bvae.tracking import metric_names, registry
from flows.experiments import Experiment
from flows.report import mlflow_ui_base, point_rows, sweep_markdown
from flows.retrain import experiment_name
from flows.runners import RunnerChoice, choose_runner, task_runner
from flows.tasks import EXPERIMENT_LIMIT, default_slots, ensure_limit, gpu_count, run_pipeline

DEFAULT_GRID: dict[str, list[Any]] = {"objective.beta": [1, 2, 4, 6, 8, 16], "train.seed": [0]}


class SweepFailed(RuntimeError):
    """Some points failed; the others were compared and their best went through the gate."""


@dataclass(frozen=True)
class Group:
    """One experiment of a sweep: the values of the keys an ensemble cannot vary (``fixed``)
    and, for an ensemble, the sub-grid of its members (``member_grid``)."""

    fixed: dict[str, Any]
    member_grid: dict[str, list[Any]] | None  # None: one point, the single pipeline

    @property
    def points(self) -> list[dict[str, Any]]:
        members = expand_grid(self.member_grid) if self.member_grid else [{}]
        return [{**self.fixed, **member} for member in members]


def _size(grid: Mapping[str, Sequence[Any]]) -> int:
    return math.prod(len(values) for values in grid.values())


def _split(grid: dict[str, list[Any]], max_members: int) -> list[dict[str, list[Any]]]:
    """Halve the longest list until every part has at most ``max_members`` points."""
    if _size(grid) <= max_members:
        return [grid]
    longest = max(grid, key=lambda key: len(grid[key]))
    half = len(grid[longest]) // 2
    return [
        *_split({**grid, longest: grid[longest][:half]}, max_members),
        *_split({**grid, longest: grid[longest][half:]}, max_members),
    ]


def plan_groups(grid: Mapping[str, Sequence[Any]], max_members: int) -> list[Group]:
    """Split the grid into ensembles: one per combination of the keys members cannot vary,
    cut along the longest member key so no ensemble has more than ``max_members`` members."""
    if max_members < 1:
        raise ParamsError(f"max_members must be at least 1, got {max_members}")
    expand_grid(grid)  # the grid's own checks
    fixed_grid = {key: list(values) for key, values in grid.items() if key not in MEMBER_KEYS}
    member_grid = {key: list(values) for key, values in grid.items() if key in MEMBER_KEYS}
    groups = []
    for fixed in expand_grid(fixed_grid) if fixed_grid else [{}]:
        for part in _split(member_grid, max_members):
            if _size(part) == 1:  # nothing to train together: the single pipeline
                groups.append(Group({**fixed, **{key: values[0] for key, values in part.items()}}, None))
            else:
                groups.append(Group(fixed, part))
    return groups


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
    max_members: int = 32,
) -> dict[str, Any]:
    """Run every grid point (on top of ``overrides``) and promote the best one.

    ``runner``: ``threads`` | ``dask`` | ``ray``; ``cluster``: that engine's address, or none
    for a temporary local cluster with one worker per slot of the limit. ``max_members``: the
    most points one ensemble trains (its memory: BENCHMARKS.md has GPU memory per member);
    1 trains every point alone.
    """
    logger = get_run_logger()
    project_dir = Path(project).resolve()
    choice = choose_runner(runner, cluster)
    grid = dict(grid or DEFAULT_GRID)
    base = {**(overrides or {}), "registry.promote": False}
    points = expand_grid(grid)
    groups = plan_groups(grid, max_members)
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
            "sweep %s: %d points as %d experiments (%d ensembles) on %s, at most %s at once; "
            "MLflow parent run %s",
            name,
            len(points),
            len(groups),
            sum(group.member_grid is not None for group in groups),
            choice.cluster or f"{choice.kind} (local)",
            slots or "the cluster's workers",
            parent.run_id,
        )
        outcomes, failed = _run_points(project_dir, name, groups, base, parent, limit, choice, slots)
        rows, best, promotion = _compare_and_promote(name, grid, outcomes, params, parent, mlflow_ui)
    except BaseException:
        tracking.end_run(parent, "FAILED")
        raise
    tracking.end_run(parent, "FAILED" if failed else "FINISHED")
    if failed:
        raise SweepFailed(
            f"sweep {name}: {len(failed)} of {len(groups)} experiments failed: {', '.join(failed)}"
        )
    return {"sweep": name, "parent_run_id": parent.run_id, "rows": rows, "best": best, "promotion": promotion}


@flow(name="bvae-sweep-points", flow_run_name="{name}-points")
def sweep_points(
    project: str,
    name: str,
    experiments: list[dict[str, Any]],
    env: dict[str, str],
    limit: str | None,
    round_robin_gpus: bool,
) -> list[Experiment | None]:
    """Every experiment (``overrides``, ``pipeline``) as a task on this flow's task runner;
    ``None`` for one that failed."""
    futures = [
        run_pipeline.submit(
            project,
            f"{name}-{index}",
            experiment["overrides"],
            {**env, **(_gpu_env(index) if round_robin_gpus else {})},
            limit,
            experiment["pipeline"],
        )
        for index, experiment in enumerate(experiments)
    ]
    wait(futures)
    return [future.result() if future.state.is_completed() else None for future in futures]


def _experiment_of(group: Group, base: dict[str, Any]) -> dict[str, Any]:
    """A group as the DVC experiment that trains it: an ensemble, or the single pipeline."""
    if group.member_grid is None:
        return {"overrides": {**base, **group.fixed}, "pipeline": "dvc.yaml"}
    overrides = {**base, **group.fixed, "sweep.grid": group.member_grid}
    return {"overrides": overrides, "pipeline": "sweeps/dvc.yaml"}


def _outcomes(group: Group, name: str, experiment: Experiment) -> list[dict[str, Any]]:
    """One outcome per point: a single experiment's, or each ensemble member's."""
    common = {"worker": experiment.worker}
    if experiment.members is None:
        return [
            {
                **common,
                "name": experiment.name,
                "grid_values": group.points[0],
                "metrics": experiment.metrics,
                "registration": experiment.registration,
            }
        ]
    versions = (experiment.registration or {}).get("versions", {})
    figures = experiment.metrics.get("members", {})
    return [
        {
            **common,
            "name": f"{experiment.name}/{member['name']}",
            "grid_values": {**group.fixed, **member["point"]},
            "metrics": figures.get(member["name"], {}),
            "registration": {
                "version": versions.get(member["name"]),
                "mlflow_run_id": member["run_id"],
                "mlflow_experiment_id": member.get("experiment_id"),
            },
        }
        for member in experiment.members
    ]


def _run_points(
    project_dir: Path,
    name: str,
    groups: list[Group],
    base,
    parent,
    limit: str | None,
    choice: RunnerChoice,
    slots,
):
    """Run the groups on the chosen task runner; collect what each point gave."""
    runner = task_runner(choice, slots or default_slots())
    experiments = sweep_points.with_options(task_runner=runner)(
        str(project_dir),
        name,
        [_experiment_of(group, base) for group in groups],
        {tracking.PARENT_RUN_ENV: parent.run_id},
        limit,
        choice.local,
    )
    outcomes, failed = [], []
    for index, (group, experiment) in enumerate(zip(groups, experiments, strict=True)):
        if experiment is None:
            failed.append(f"{name}-{index}")
            outcomes += [
                {"name": f"{name}-{index}", "grid_values": point, "status": "failed"}
                for point in group.points
            ]
            continue
        if experiment.run_id:  # DVC's run-cache may have restored an earlier run: adopt it
            tracking.adopt_child(parent, experiment.run_id)
        outcomes += _outcomes(group, name, experiment)
    return outcomes, failed


def _compare_and_promote(name: str, grid, outcomes, params, parent, mlflow_ui: str | None):
    """The comparison table (Prefect artifact, MLflow table) and the gate for the best point."""
    selection_metric = params.registry.selection_metric
    rows = point_rows(outcomes, selection_metric)
    best_row = best_member([row for row in rows if row["status"] == "completed"], selection_metric)
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
        best_figure = metric_names.eval_metric(f"best.{selection_metric}")
        tracking.log_metrics(parent, {best_figure: float(best_row[selection_metric])})
        tracking.set_tags(
            parent, {"bvae.best_experiment": best, "bvae.best_version": str(best_row["version"])}
        )
    return rows, best, promotion


if __name__ == "__main__":
    sweep()
