"""Stage ``evaluate``: ``reports/metrics.json`` (DVC metrics), logged to the training's run.

Scores the trained model's mean and sampled representations and the baselines (ground-truth
factors, PCA and ICA of the pixels, an untrained network of the same architecture) with every
configured metric, plus reconstruction and KL (nats/image) on held-out images and the time
each metric took, and ``protocol``: the sample sizes and estimators used and whether the
figures are comparable with disentanglement_lib's, and ``collapsed``: whether the model's code
is one constant for every held-out image (bvae.collapse); also MLflow tags ``eval.protocol.*``.
Keys are dotted paths (``model.mean.factor_vae.eval_accuracy``), the same in
``dvc metrics show`` and in MLflow.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import torch

from bvae import collapse, tracking
from bvae.config import EvaluateConfig, Params
from bvae.data.ground_truth import DSprites
from bvae.data.shards import load_dataset
from bvae.fileio import write_json
from bvae.metrics.sampling import factor_representation
from bvae.metrics.suite import compute_all, metric_sizes, protocol
from bvae.model_file import model_from_state, read_model_file
from bvae.models import BetaVAE, images_to_input
from bvae.objectives import kl_per_latent, largest_mean_sd, reconstruction_nll
from bvae.report_keys import headline_keys
from bvae.representations import EncodedTable, pixel_baseline, torch_encoder
from bvae.runtime import select_device
from bvae.stages.run_files import SHARDS, RunFiles, trained_run
from bvae.stages.shared_baselines import SharedBaselines
from bvae.tracking import metric_names

log = logging.getLogger(__name__)


@torch.inference_mode()
def heldout_figures(
    model: BetaVAE,
    images: np.ndarray,
    device: torch.device,
    seed: int,
    batch_size: int,
    gaussian_std: float = 0.1,
) -> dict[str, float]:
    """Reconstruction and KL in nats/image on ``images``, one posterior sample each (ELBO terms).

    The reconstruction is under the model's own likelihood (``model.likelihood``; a Gaussian
    one with the ``gaussian_std`` it was trained with), so it is the ELBO term it optimised.
    """
    generator = torch.Generator(device=device).manual_seed(seed)
    model = model.to(device).to(memory_format=torch.contiguous_format).eval()
    reconstruction, kl, count, means = 0.0, 0.0, 0, []
    for start in range(0, len(images), batch_size):
        batch = images_to_input(torch.from_numpy(images[start : start + batch_size]).to(device))
        mean, logvar = model.encode(batch)
        means.append(mean.float().cpu())
        logits = model.decode(BetaVAE.reparameterize(mean, logvar, generator))
        nll = reconstruction_nll(model.config.likelihood, logits, batch, gaussian_std)
        reconstruction += nll.item() * len(batch)
        kl += kl_per_latent(mean, logvar).sum().item() * len(batch)
        count += len(batch)
    return {
        "reconstruction_nats": reconstruction / count,
        "kl_nats": kl / count,
        "negative_elbo_nats": (reconstruction + kl) / count,
        # 0 when every image gets one code (posterior collapse: bvae.collapse)
        "largest_mean_sd": float(largest_mean_sd(torch.cat(means).double())),
        "num_images": count,
    }


def _score(name: str, ground_truth, represent, config: EvaluateConfig, seconds: dict) -> dict:
    def report(metric: str, scores: dict, elapsed: float) -> None:
        seconds[f"{name}.{metric}"] = elapsed
        log.info("%s %s %s (%.1f s)", name, metric, {k: round(v, 3) for k, v in scores.items()}, elapsed)

    results = compute_all(
        ground_truth,
        represent,
        sizes=metric_sizes(config.sample_sizes),
        metrics=config.metrics,
        dci_estimator=config.dci_estimator,
        seed=config.seed,
        on_metric=report,
        on_start=lambda metric: log.info("%s %s: computing…", name, metric),
    )
    results.pop("seconds")
    return results


def _encoded_table(
    model: BetaVAE, ground_truth: DSprites, device: torch.device, config: EvaluateConfig, encode_seconds: list
) -> EncodedTable:
    """The model's codes of the dataset, encoded lazily (or all at once on a GPU), the encoding
    time added to ``encode_seconds[0]``."""
    encoder = torch_encoder(model, device, config.encode_batch_size)

    def encode(images):
        start = time.perf_counter()
        try:
            return encoder(images)
        finally:
            encode_seconds[0] += time.perf_counter() - start

    table = EncodedTable(ground_truth, encode, model.config.latent_dim)
    if config.encode_all == "on" or (config.encode_all == "auto" and device.type == "cuda"):
        table.encode_all()
    return table


def score_baselines(
    params: Params,
    ground_truth: DSprites,
    latent_dim: int,
    device: torch.device,
    seconds: dict[str, float],
    encode_seconds: list,
) -> dict:
    """Every configured baseline scored with every metric. They depend only on the data and on
    ``evaluate.*`` and ``model.*``, so a sweep's members share one computation (``sweep-baselines``)."""
    config = params.evaluate
    baselines = {}
    for baseline in config.baselines:
        if baseline == "ground_truth":
            represent = factor_representation
        elif baseline in ("pca", "ica"):
            start = time.perf_counter()
            represent = pixel_baseline(
                ground_truth, baseline, latent_dim, config.baseline_fit_images, config.seed
            )
            seconds[f"baselines.{baseline}.fit"] = time.perf_counter() - start
        else:  # untrained: the same architecture at its random initialisation
            torch.manual_seed(config.seed)
            untrained = BetaVAE(params.model)
            represent = _encoded_table(
                untrained, ground_truth, device, config, encode_seconds
            ).representation()
        baselines[baseline] = _score(f"baselines.{baseline}", ground_truth, represent, config, seconds)
    return baselines


def run_evaluate(
    params: Params,
    files: RunFiles = RunFiles(),
    *,
    shards: Path = SHARDS,
    score_model: bool = True,
    shared_baselines: SharedBaselines | None = None,
) -> dict:
    """Compute every configured figure, write ``reports/metrics.json``, log it to MLflow.

    ``shared_baselines``: baseline figures already computed for these params and data (a
    sweep's), taken instead of scoring the baselines again.
    """
    config = params.evaluate
    device = select_device(config.device, "evaluate.device")
    state = read_model_file(files.model) if score_model else None
    run = trained_run(files, state) if score_model else None  # the figures go to this run at the end
    if run is not None:
        tracking.check_tracking_server(run.tracking_uri)
    dataset = load_dataset(shards)
    if shared_baselines is not None:
        shared_baselines.check(params, dataset.manifest.digest)
    ground_truth = DSprites(dataset.images)
    report: dict = {}
    seconds: dict[str, float] = {}
    encode_seconds = [0.0]

    model = model_from_state(state, files.model) if state is not None else None
    if model is not None:
        table = _encoded_table(model, ground_truth, device, config, encode_seconds)
        report["model"] = {
            kind: _score(
                f"model.{kind}",
                ground_truth,
                table.representation(sampled=kind == "sampled"),
                config,
                seconds,
            )
            for kind in config.representations
        }
        rng = np.random.default_rng(config.seed)
        heldout = rng.choice(len(ground_truth), size=config.heldout_images, replace=False)
        report["heldout"] = heldout_figures(
            model,
            ground_truth.images[np.sort(heldout)],
            device,
            config.seed,
            config.encode_batch_size,
            gaussian_std=state["config"]["objective"]["gaussian_std"],
        )
        report["model_images_encoded"] = table.num_encoded
    if shared_baselines is None:
        latent_dim = model.config.latent_dim if model is not None else params.model.latent_dim
        report["baselines"] = score_baselines(
            params, ground_truth, latent_dim, device, seconds, encode_seconds
        )
    else:
        log.info("baselines: the sweep's, computed once for every member (%s)", shared_baselines.source)
        report["baselines"] = shared_baselines.baselines
        report["baselines_computed_by"] = shared_baselines.source  # their seconds are that run's
        seconds.update(shared_baselines.seconds)
    seconds["encoding"] = encode_seconds[0]
    report["seconds"] = seconds
    report["protocol"] = protocol(config.sample_sizes, config.dci_estimator)
    if "heldout" in report:
        heldout = report["heldout"]
        collapsed = collapse.is_collapsed(heldout["kl_nats"], heldout["largest_mean_sd"])
        report["protocol"]["collapsed"] = collapsed
        if collapsed:
            log.warning(
                "posterior collapse: the model's code is the same for all %d held-out images "
                "(largest sd of a latent's mean %.4f) while it pays %.2f nats of KL, so every score "
                "below describes no representation; the register stage will not make it champion. "
                "Try: %s.",
                heldout["num_images"],
                heldout["largest_mean_sd"],
                heldout["kl_nats"],
                collapse.WHAT_TO_TRY,
            )
    if not report["protocol"]["comparable_to_dlib"]:
        log.warning(
            "these figures are not comparable with disentanglement_lib's or published ones: %s",
            report["protocol"]["differs_from_dlib"],
        )
    write_json(files.metrics, report)
    if model is not None and run is not None:
        log_evaluation(run, report, params.registry.selection_metric, dataset.manifest)
        tracking.set_tags(
            run,
            {
                key: str(value)
                for key, value in tracking.flatten(report["protocol"], "eval.protocol.").items()
            },
        )
        tracking.log_artifact(run, files.metrics, "evaluation")
    return report


def log_evaluation(run: tracking.RunHandle, report: dict, selection_metric: str, manifest) -> None:
    """Every figure as one table (``evaluation/figures.json``, which the MLflow UI shows and
    compares across runs); the headline figures also as metrics of the run and of its logged
    model, filed under the dataset, so the run's charts are its training curves, not a wall of
    single-value bars."""
    figures = {
        key: value
        for key, value in tracking.flatten({k: v for k, v in report.items() if k != "protocol"}).items()
        if isinstance(value, int | float) and not isinstance(value, bool)
    }
    table = {"figure": list(figures), "value": [float(value) for value in figures.values()]}
    tracking.log_table(run, table, "evaluation/figures.json")
    keys = [key for key in headline_keys(selection_metric) if key in figures]
    headline = {metric_names.eval_metric(key): figures[key] for key in keys}
    dataset = tracking.dataset_identity(manifest.source, manifest.digest)
    tracking.log_metrics(run, headline, model_id=run.model_id, dataset=dataset)
    log.info(
        "logged %d figures (evaluation/figures.json) and %d headline metrics to MLflow run %s",
        len(figures),
        len(headline),
        run.run_id,
    )
