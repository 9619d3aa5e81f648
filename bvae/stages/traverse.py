"""Stage ``traverse``: ``reports/traversals/`` (images) and ``reports/latents.json``.

For a few seed images (one per shape at least), every latent is swept while the others stay
at the seed's posterior mean; rows are ordered by KL with the KL printed beside them. Also:
animated traversals (GIF), reconstructions beside originals, a KL-per-latent bar chart, the
training curves as PNG (readable offline, unlike ``dvc plots show``'s Vega), and the latent →
factor table. Every image goes into the training's MLflow run under ``traversals/``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from bvae import collapse, figures, objectives, tracking, traversal
from bvae.config import Params, TraverseConfig
from bvae.data import factors
from bvae.data.ground_truth import DSprites
from bvae.data.shards import load_dataset
from bvae.fileio import atomic_path, check_output_folder, write_json
from bvae.model_file import load_model
from bvae.models import BetaVAE
from bvae.representations import torch_encoder
from bvae.runtime import select_device
from bvae.stages.run_files import SHARDS, RunFiles, trained_run

log = logging.getLogger(__name__)


def torch_decoder(model: BetaVAE, device: torch.device) -> traversal.Decoder:
    model = model.to(device).to(memory_format=torch.contiguous_format).eval()

    @torch.inference_mode()
    def decode(latents: np.ndarray) -> np.ndarray:
        logits = model.decode(torch.from_numpy(np.asarray(latents, dtype=np.float32)).to(device))
        return torch.sigmoid(logits).squeeze(1).float().cpu().numpy()

    return decode


def seed_classes(config: TraverseConfig, rng: np.random.Generator) -> np.ndarray:
    """Seed images: one canonical sprite per shape (large, upright, centred), then random ones."""
    canonical = np.array([[0, shape, 5, 0, 16, 16] for shape in range(3)])
    extra = factors.classes_from_index(rng.integers(0, factors.NUM_IMAGES, size=config.extra_seeds))
    return np.concatenate([canonical, extra])


def reconstruction_classes(count: int, rng: np.random.Generator) -> np.ndarray:
    """The images shown with their reconstructions: the shapes in turn, the scales and
    orientations spread from smallest to largest across the row, positions at random (not
    the first of a sorted sample, which are all the smallest unrotated square)."""
    spread = np.arange(count) / max(count - 1, 1)
    sizes = factors.FACTOR_SIZES
    return np.stack(
        [
            np.zeros(count, np.int64),  # colour: dSprites has one
            np.arange(count) % sizes[1],
            np.rint(spread * (sizes[2] - 1)).astype(np.int64),
            np.rint(spread * (sizes[3] - 1)).astype(np.int64),
            rng.integers(0, sizes[4], size=count),
            rng.integers(0, sizes[5], size=count),
        ],
        axis=1,
    )


def render_reports(
    model: BetaVAE,
    data: DSprites,
    config: TraverseConfig,
    out_dir: Path,
    curves_csv: Path | None = None,
    device: torch.device | None = None,
) -> dict:
    """Write every image into ``out_dir`` and return the latent table (the renderer a pulled
    registry model uses too)."""
    device = device or select_device(config.device, "traverse.device")
    rng = np.random.default_rng(config.seed)
    encode, decode = torch_encoder(model, device), torch_decoder(model, device)
    sample = np.sort(rng.choice(len(data), size=config.sample_images, replace=False))
    latents_mean, latents_logvar = encode(data.images[sample])
    kl_per_latent = objectives.kl_per_latent(
        torch.from_numpy(latents_mean), torch.from_numpy(latents_logvar)
    ).numpy()
    order = traversal.order_by_kl(kl_per_latent)
    latent_dim = model.config.latent_dim
    if config.mode == "quantile":
        values = traversal.quantile_values(latents_mean, config.steps)
    else:
        values = traversal.linear_values(latent_dim, config.steps, config.low, config.high)
    labels = [f"z{k}  KL {kl_per_latent[k]:.2f}" for k in order]
    seeds = seed_classes(config, rng)
    seed_means, _ = encode(data.images[factors.index_from_classes(seeds)])
    for number, (classes, seed_code) in enumerate(zip(seeds, seed_means, strict=True)):
        name = factors.SHAPE_NAMES[classes[1]] if number < 3 else f"random{number - 2}"
        grid = traversal.traversal_grid(decode, seed_code, values, order)
        title = f"seed {name}: latents by KL, {config.mode} sweep"
        figures.save_labelled_grid(
            out_dir / f"traversal_{name}.png", traversal.mosaic(grid), labels, title=title
        )
        figures.save_gif(
            out_dir / f"traversal_{name}.gif",
            traversal.animation_frames(grid),
            frame_ms=config.gif_frame_ms,
            panel_labels=[f"z{k} KL {kl_per_latent[k]:.1f}" for k in order],
        )
    shown = factors.index_from_classes(reconstruction_classes(config.reconstructions, rng))
    originals = data.images[shown].astype(np.float32)
    reconstructions = decode(encode(data.images[shown])[0])
    pairs = np.stack([originals, reconstructions])
    figures.save_labelled_grid(
        out_dir / "reconstructions.png", traversal.mosaic(pairs), ["original", "reconstruction"]
    )
    figures.save_kl_bar_chart(out_dir / "kl_per_latent.png", kl_per_latent, config.active_kl)
    if curves_csv is not None and curves_csv.exists():
        figures.save_training_curves(out_dir / "training_curves.png", figures.read_curves(curves_csv))
    factor_classes = factors.classes_from_index(sample)[:, list(factors.VARYING_FACTOR_INDICES)]
    names = [factors.FACTOR_NAMES[k] for k in factors.VARYING_FACTOR_INDICES]
    table = traversal.latent_factor_table(
        latents_mean,
        latents_logvar,
        factor_classes,
        names,
        kl_per_latent,
        active_kl=config.active_kl,
        entangled_share=config.entangled_share,
    )
    return {
        "latents": table,
        "summary": traversal.latent_summary(table),
        # one code for every image while the KL is paid: posterior collapse (bvae.collapse)
        "collapsed": collapse.codes_collapsed(float(kl_per_latent.sum()), latents_mean),
        "largest_mean_sd": float(latents_mean.astype(np.float64).std(axis=0).max()),
        "entangled_share": config.entangled_share,
        "order": [f"z{k}" for k in order],
        "sample_images": int(len(sample)),
    }


def run_traverse(
    params: Params,
    files: RunFiles = RunFiles(),
    *,
    shards: Path = SHARDS,
    model: BetaVAE | None = None,
    force: bool = False,
) -> dict:
    config = params.traverse
    check_output_folder(files.traversals, force=force)  # these two before the data load
    device = select_device(config.device, "traverse.device")
    run = trained_run(files)  # the images go to this run at the end
    if run is not None:
        tracking.check_tracking_server(run.tracking_uri)
    data = DSprites(load_dataset(shards).images)
    model = model or load_model(files.model)
    with atomic_path(files.traversals, directory=True, force=force) as staging:
        report = render_reports(model, data, config, staging, files.curves, device)
    write_json(files.latents, report)
    with atomic_path(files.latents_markdown) as temporary:
        temporary.write_text(
            traversal.latent_table_markdown(report["latents"], config.entangled_share, report["collapsed"])
        )
    for row in report["latents"]:
        log.info(
            "%s: %s (KL %.2f, variance %.4f)",
            row["latent"],
            row["encodes"],
            row["kl"],
            row["mean_posterior_variance"],
        )
    log.info("%s", traversal.summary_line(report["summary"]))
    if report["collapsed"]:
        log.warning("%s", traversal.COLLAPSED_NOTE)
    if run is not None:
        tracking.log_artifacts(run, files.traversals, "traversals")
        for path in (files.latents, files.latents_markdown):
            tracking.log_artifact(run, path, "traversals")
        log.info("images logged to MLflow run %s under traversals/", run.run_id)
    return report
