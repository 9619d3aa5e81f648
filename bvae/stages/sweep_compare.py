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

import numpy as np
import torch
from scipy.stats import spearmanr

from bvae import tracking
from bvae.config import Params, strength_setting
from bvae.data.shards import load_dataset
from bvae.errors import MissingInput
from bvae.figures import save_study_chart, save_sweep_chart
from bvae.fileio import atomic_path, write_json
from bvae.metrics.udr import METHODS as UDR_METHODS
from bvae.metrics.udr import udr
from bvae.model_file import load_model
from bvae.objectives import kl_per_latent
from bvae.report_keys import HEADLINE, HEADLINE_LABELS
from bvae.representations import torch_encoder
from bvae.stages.sweep_files import PARENT_RUN_FILE, SweepPaths, read_sweep
from bvae.sweep import best_member, comparison_rows, finite_number, grid_keys, study_rows, sweep_members
from bvae.tables import MISSING, markdown_table, number
from bvae.tracking import metric_names

log = logging.getLogger(__name__)


def member_rows(params: Params, paths: SweepPaths, entries: list[dict]) -> list[dict]:
    """One row per member of ``sweep.json`` (:func:`bvae.sweep.comparison_rows`), with its
    active latents, its method and regularisation strength, and its MLflow run."""
    objectives = {member.name: member.params.objective for member in sweep_members(params)}
    varied = grid_keys(params.sweep.grid)
    points = []
    for entry in entries:
        figures = json.loads(paths.member(entry["name"]).metrics.read_text())
        # Every row has every grid key: a study's grids vary different keys (None: not this one's).
        point = {key: entry["point"].get(key) for key in varied}
        points.append((entry["name"], point, tracking.flatten(figures)))
    rows = comparison_rows(points, params.registry.selection_metric)
    for row, entry in zip(rows, entries, strict=True):
        summary = json.loads(paths.member(entry["name"]).summary.read_text())
        row["train.active_latents"] = summary["active_latents"]
        objective = objectives.get(entry["name"], params.objective)
        row["method"] = objective.kind
        row["strength"] = getattr(objective, strength_setting(objective.kind))
        row["mlflow_run_id"] = entry["run_id"]
    return rows


def _shown_columns(rows: list[dict]) -> list[str]:
    """The table's and the CSV's columns: every row key but the MLflow run id."""
    return [key for key in rows[0] if key != "mlflow_run_id"]


UDR_IMAGES = 1000  # disentanglement_lib's udr num_data_points
UDR_KEYS = tuple(f"udr.{method}" for method in UDR_METHODS)


def member_udr(paths: SweepPaths, names: list[str], seed: int) -> dict[str, dict[str, float]]:
    """Each member's UDR (Lasso and Spearman) from the mean codes of the same 1,000 random
    training images (bvae.metrics.udr); empty for a sweep of one member."""
    if len(names) < 2:
        return {}
    dataset = load_dataset(paths.shards)
    index = np.sort(np.random.default_rng(seed).choice(len(dataset.images), UDR_IMAGES, replace=False))
    images = dataset.images[index]
    codes, kls = [], []
    for name in names:
        mean, logvar = torch_encoder(load_model(paths.member(name).model), torch.device("cpu"))(images)
        mean, logvar = torch.from_numpy(mean).double(), torch.from_numpy(logvar).double()
        kls.append(kl_per_latent(mean, logvar).numpy())
        codes.append(mean.numpy())
    scores = {name: {} for name in names}
    for method, key in zip(UDR_METHODS, UDR_KEYS, strict=True):
        for name, value in zip(names, udr(codes, kls, method)[0], strict=True):
            scores[name][key] = float(value)
    return scores


def rank_agreement(rows: list[dict], first: str, second: str) -> float | None:
    """Spearman's rank correlation of two figures over the members that have both; ``None``
    for fewer than three such members or a constant figure."""
    pairs = [
        (row[first], row[second])
        for row in rows
        if finite_number(row.get(first)) and finite_number(row.get(second))
    ]
    if len(pairs) < 3 or len({a for a, _ in pairs}) < 2 or len({b for _, b in pairs}) < 2:
        return None
    return float(spearmanr([a for a, _ in pairs], [b for _, b in pairs]).statistic)


def udr_markdown(rows: list[dict], selection_metric: str, agreement: dict[str, float | None]) -> str:
    """The members ranked by UDR (Lasso) beside their rank by the selection metric."""

    def rank_of(key: str) -> dict[str, int]:
        scored = [row for row in rows if isinstance(row.get(key), int | float)]
        ordered = sorted(scored, key=lambda row: -row[key])
        return {row["member"]: place for place, row in enumerate(ordered, start=1)}

    by_udr, by_selection = rank_of(UDR_KEYS[0]), rank_of(selection_metric)
    ranked = sorted(rows, key=lambda row: by_udr.get(row["member"], len(rows) + 1))
    body = [
        [
            row["member"],
            row.get(UDR_KEYS[0]),
            row.get(UDR_KEYS[1]),
            by_udr.get(row["member"]),
            by_selection.get(row["member"]),
            row.get(selection_metric),
        ]
        for row in ranked
    ]
    header = ["member", "UDR (Lasso)", "UDR (Spearman)", "rank by UDR", "rank by selection", selection_metric]
    said = ", ".join(f"{method} {number(value)}" for method, value in agreement.items())
    return (
        "## Label-free ranking (UDR, Duan et al. 2020)\n\n"
        f"Spearman rank correlation of UDR with {selection_metric}: {said}.\n\n"
        f"{markdown_table(header, body)}"
    )


STUDY_METRICS = tuple((label, HEADLINE[name]) for name, label in HEADLINE_LABELS.items())


def study_markdown(study: list[dict]) -> str:
    """The study's table: each method at each strength, its seeds as median (min–max)."""

    def spread(value) -> str:
        if value is None:
            return MISSING
        median, low, high = value
        return number(median) if low == high else f"{number(median)} ({number(low)}–{number(high)})"

    header = ["method", "varies", "strength", "seeds", *(label for label, _ in STUDY_METRICS)]
    body = [
        [row["method"], strength_setting(row["method"]), row["strength"], row["seeds"]]
        + [spread(row[key]) for _, key in STUDY_METRICS]
        for row in study
    ]
    return markdown_table(header, body)


def comparison_markdown(
    rows: list[dict],
    selection_metric: str,
    best: str,
    study: list[dict] | None = None,
    agreement: dict[str, float | None] | None = None,
) -> str:
    """The study's table (methods × strengths, seeds summarised), the members best first (the
    best one starred), then the UDR ranking beside the supervised one (when there is one)."""
    columns = _shown_columns(rows)
    ranked = sorted(rows, key=lambda row: -(row[selection_metric] or -math.inf))
    body = [
        [f"{row['member']} ★" if row["member"] == best else row["member"], *(row[key] for key in columns[1:])]
        for row in ranked
    ]
    title = f"# Sweep: {len(rows)} members, best by {selection_metric}: {best}"
    by_method = f"## By method and strength\n\n{study_markdown(study)}\n\n## Members\n\n" if study else ""
    ranking = f"\n\n{udr_markdown(rows, selection_metric, agreement)}" if agreement is not None else ""
    return f"{title}\n\n{by_method}{markdown_table(columns, body)}{ranking}\n"


def run_sweep_compare(params: Params, paths: SweepPaths = SweepPaths()) -> dict:
    """The table and chart across members; logged to the sweep's parent run."""
    selection = params.registry.selection_metric
    sweep = read_sweep(paths)
    rows = member_rows(params, paths, sweep["members"])
    udr_scores = member_udr(paths, [row["member"] for row in rows], params.evaluate.seed)
    for row in rows:
        row.update(udr_scores.get(row["member"], {}))
    agreement = (
        {
            method: rank_agreement(rows, key, selection)
            for method, key in zip(UDR_METHODS, UDR_KEYS, strict=True)
        }
        if udr_scores
        else None
    )
    best_row = best_member(rows, selection)
    if best_row is None:
        raise MissingInput(f"no sweep member has a finite {selection}: nothing to compare or promote")
    best = best_row["member"]
    keys = grid_keys(params.sweep.grid)
    metrics = {
        "best": best,
        "selection_metric": selection,
        **({"udr_rank_correlation": agreement} if agreement is not None else {}),
        "members": {
            row["member"]: {k: v for k, v in row.items() if k not in ("member", "mlflow_run_id")}
            for row in rows
        },
    }
    write_json(paths.comparison, metrics)
    study = study_rows(rows, [key for _, key in STUDY_METRICS])
    with atomic_path(paths.comparison_markdown) as temporary:
        temporary.write_text(comparison_markdown(rows, selection, best, study, agreement))
    with atomic_path(paths.comparison_csv) as temporary, open(temporary, "w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=_shown_columns(rows), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    save_sweep_chart(paths.comparison_chart, rows, keys, selection)
    save_study_chart(paths.study_chart, study, STUDY_METRICS)
    log.info("best member by %s: %s", selection, best)
    if sweep.get("parent_run_given"):
        # One parent run per sweep: the Prefect sweep that gave it compares all its points there.
        log.info("the comparison is logged by the owner of the parent run, not here")
        return metrics
    parent = tracking.read_run_file(paths.train / PARENT_RUN_FILE)
    tracking.log_table(parent, {key: [row[key] for row in rows] for key in rows[0]}, "sweep/comparison.json")
    for path in (paths.comparison_markdown, paths.comparison_chart, paths.study_chart):
        tracking.log_artifact(parent, path, "sweep")
    tracking.log_metrics(parent, {metric_names.eval_metric(f"best.{selection}"): float(best_row[selection])})
    tracking.set_tags(parent, {"bvae.best_member": best})
    return metrics
