"""Stage ``report``: ``reports/report.html``, the run's results in one offline page.

Reads what train, evaluate and traverse wrote (curves and summary, metrics, the latent table,
the images), renders it with :mod:`bvae.report` and logs the page to the training's MLflow
run as ``report/report.html``, which the MLflow UI shows in its artifact view.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from bvae import tracking
from bvae.config import Params
from bvae.errors import MissingInput
from bvae.figures import metrics_chart_png
from bvae.fileio import atomic_path
from bvae.report import CHART_SCORES, Figure, ReportInputs, metric_columns, render_html
from bvae.stages.run_files import RunFiles, trained_run

log = logging.getLogger(__name__)

ARTIFACT_PATH = "report"
REPORTED_PARAMS = ("model", "objective", "train")  # with data.source: dvc.yaml's params of the stage

# The figures in the order the page shows them; traversals follow, grid then animation.
LEADING_FIGURES = {
    "training_curves.png": "Training curves: loss, KL and capacity, KL per latent",
    "kl_per_latent.png": "KL per latent at the end of training",
    "reconstructions.png": "Originals (top) and reconstructions (bottom)",
}


def _read_json(path: Path, stage: str) -> dict:
    if not path.exists():
        raise MissingInput(f"{path} not found: run the {stage} stage first (`dvc repro {stage}`).")
    return json.loads(path.read_text())


def collect_figures(folder: Path) -> list[Figure]:
    """The traverse stage's images: the charts first, then each seed's grid and animation."""
    figures = [
        Figure(caption, Path(name).suffix, (folder / name).read_bytes())
        for name, caption in LEADING_FIGURES.items()
        if (folder / name).exists()
    ]
    for grid in sorted(folder.glob("traversal_*.png")):
        seed = grid.stem.removeprefix("traversal_")
        figures.append(Figure(f"Traversal from the {seed} seed: rows by KL", ".png", grid.read_bytes()))
        animation = grid.with_suffix(".gif")
        if animation.exists():
            caption = f"Traversal from the {seed} seed, animated"
            figures.append(Figure(caption, ".gif", animation.read_bytes()))
    return figures


LOCAL_UI = "http://127.0.0.1:5000"  # where `mlflow ui` serves a file store by default


def run_link(run: tracking.RunHandle) -> tuple[str, str | None]:
    """The run's page, and the command that serves it when the store is a file (SQLite):
    ``mlflow ui`` on it serves that page at its default address."""
    if run.tracking_uri.startswith(("http://", "https://")):
        return tracking.ui_page(run.tracking_uri, run.experiment_id, run.run_id), None
    command = f"mlflow ui --backend-store-uri {run.tracking_uri}"
    return tracking.ui_page(LOCAL_UI, run.experiment_id, run.run_id), command


def metrics_figure(metrics: dict) -> Figure | None:
    """The chart of the model's headline scores beside every baseline's."""
    columns = metric_columns(metrics)
    if not any((values.get(m) or {}).get(n) is not None for _, values in columns for m, n in CHART_SCORES):
        return None
    return Figure("The model against the baselines", ".png", metrics_chart_png(columns, CHART_SCORES))


def run_report(params: Params, files: RunFiles = RunFiles()) -> Path:
    summary = _read_json(files.summary, "train")
    metrics = _read_json(files.metrics, "evaluate")
    latents = _read_json(files.latents, "traverse")
    run = trained_run(files)
    dumped = params.model_dump(mode="json")
    described = {section: dumped[section] for section in REPORTED_PARAMS}  # what made this model
    flat_params = {"data.source": params.data.source, **tracking.flatten(described)}
    trained_on = summary.get("data_source")  # what data.source resolved to (auto: either)
    which = f"MLflow run {run.run_id[:8]}" if run else "not tracked"
    link, browse = run_link(run) if run else (None, None)
    chart = metrics_figure(metrics)
    inputs = ReportInputs(
        title=f"β-VAE on dSprites, {params.objective.kind} objective ({which})",
        params=flat_params,
        train_summary=summary,
        metrics=metrics,
        latents=latents,
        figures=[*([chart] if chart else []), *collect_figures(files.traversals)],
        run_link=link,
        run_id=run.run_id if run else None,
        browse_command=browse,
        commit=tracking.git_commit(Path.cwd()),
        data_source=f"{trained_on} dSprites (data.source: {params.data.source})" if trained_on else None,
    )
    with atomic_path(files.report) as temporary:
        temporary.write_text(render_html(inputs), encoding="utf-8")
    log.info("wrote %s (%.1f MB, self-contained)", files.report, files.report.stat().st_size / 1e6)
    if run is not None:
        tracking.log_artifact(run, files.report, ARTIFACT_PATH)
        tracking.set_tags(run, {"bvae.report": f"{ARTIFACT_PATH}/{files.report.name}"})
        log.info("logged to MLflow run %s as %s/%s", run.run_id, ARTIFACT_PATH, files.report.name)
    return files.report
