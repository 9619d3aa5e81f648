"""What bvae's MLflow metrics are called, so that a run's charts read curves first.

MLflow 3's run page ("Model metrics") sections the charts by the part of a metric's name
before its last ``/`` and orders the sections alphabetically (seen in MLflow 3.17's UI in
headless Chromium, 2026-12-02: ``curves`` (5 charts), ``curves/kl`` (10), ``eval`` (7),
``summary`` (7)). bvae names every metric into these sections, in that order:

- ``curves/``: the training curves, a point per ``train.log_every`` steps: ``curves/loss``,
  ``curves/reconstruction``, ``curves/kl``, ``curves/kl/z0`` … (KL per latent),
  ``curves/largest_mean_sd``, ``curves/steps_per_second``, and ``curves/capacity`` for the
  capacity objective only (a β run's C is 0 throughout: a flat line says nothing);
- ``eval/``: the headline evaluation figures (``eval/`` + a ``reports/metrics.json`` key, e.g.
  ``eval/model.mean.mig.discrete_mig``), each one value; every figure is in the run's
  ``evaluation/figures.json`` table;
- ``summary/``: the end of training (``summary.json``'s figures), each one value.

A single figure is logged once, at step 0: it is a number of the run (the runs table, the
compare view), not a one-point series drawn at the last step. ``curves.csv`` keeps its plain
column names: ``dvc plots`` reads those.
"""

from __future__ import annotations

from collections.abc import Mapping

CURVES, EVAL, SUMMARY = "curves/", "eval/", "summary/"  # alphabetical: the curves come first


def curve_metrics(row: Mapping[str, float], objective_kind: str) -> dict[str, float]:
    """One ``curves.csv`` row as ``curves/`` metrics (the row's ``step`` is the metrics' step)."""
    metrics = {}
    for column, value in row.items():
        if column == "step" or (column == "capacity" and objective_kind != "capacity"):
            continue
        if column.startswith("kl_z"):
            metrics[f"{CURVES}kl/z{column.removeprefix('kl_z')}"] = value
        else:
            metrics[CURVES + column] = value
    return metrics


def summary_metrics(summary: Mapping[str, object], objective_kind: str | None = None) -> dict[str, float]:
    """A training summary's single figures as ``summary/`` metrics (numbers only; the
    capacity only for the capacity objective; a sweep's parent run has no objective)."""
    return {
        SUMMARY + key: float(value)
        for key, value in summary.items()
        if isinstance(value, int | float)
        and not isinstance(value, bool)
        and not (key == "capacity" and objective_kind != "capacity")
    }


def eval_metric(key: str) -> str:
    """The MLflow name of a ``reports/metrics.json`` figure: ``eval/`` + its dotted key."""
    return EVAL + key


def run_name(objective, seed: int, architecture: str) -> str:
    """A single run's MLflow name when DVC gives none (a plain ``dvc repro``): what it trained,
    ``beta4-seed0-conv`` or ``capacity-g1000-c25-seed0-conv`` (``objective``: an
    ``ObjectiveConfig``)."""
    if objective.kind == "capacity":
        setting = f"capacity-g{objective.gamma:g}-c{objective.capacity_max_nats:g}"
    elif objective.kind == "beta_tc":
        setting = f"beta_tc-beta{objective.beta:g}"
    elif objective.kind == "factor":
        setting = f"factor-g{objective.gamma:g}"
    elif objective.kind in ("dip_i", "dip_ii"):
        setting = f"{objective.kind}-od{objective.lambda_od:g}-d{objective.dip_lambda_d():g}"
    else:
        setting = f"beta{objective.beta:g}"
    return f"{setting}-seed{seed}-{architecture}"
