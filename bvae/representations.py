"""Representations to score: a trained encoder, and the baselines Higgins et al. compare with.

Each is a ``represent(factor_classes, rng) -> codes`` callable (see ``bvae.metrics.sampling``).
Encoders run lazily: an image is encoded the first time a metric asks for it and cached, so
the mean and the sampled representation share one encoding, and a CPU run at fast sample sizes
encodes a fraction of the 737,280 images. ``encode_all`` fills the whole table at once, which
is what a GPU should do.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from sklearn.decomposition import PCA, FastICA
from sklearn.pipeline import make_pipeline

from bvae.data.ground_truth import FactorGridData
from bvae.metrics.sampling import Representation, table_representation
from bvae.models import BetaVAE, images_to_input
from bvae.progress import progress

Encoder = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


def torch_encoder(model: BetaVAE, device: torch.device, batch_size: int = 2048) -> Encoder:
    """uint8 images ``(n, 64, 64)`` → posterior (mean, logvar) as float32 arrays, in batches."""
    model = model.to(device).eval()
    memory_format = torch.channels_last if model.config.architecture == "conv" else torch.contiguous_format
    model = model.to(memory_format=memory_format)

    @torch.inference_mode()
    def encode(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        means, logvars = [], []
        for start in range(0, len(images), batch_size):
            batch = torch.from_numpy(np.ascontiguousarray(images[start : start + batch_size])).to(device)
            batch = images_to_input(batch).contiguous(memory_format=memory_format)
            mean, logvar = model.encode(batch)
            means.append(mean.float().cpu().numpy())
            logvars.append(logvar.float().cpu().numpy())
        return np.concatenate(means), np.concatenate(logvars)

    return encode


class EncodedTable:
    """Posterior means and log-variances of dataset images, encoded on first use."""

    def __init__(self, ground_truth: FactorGridData, encode: Encoder, code_dim: int):
        self.ground_truth, self.encode = ground_truth, encode
        self.mean = np.zeros((len(ground_truth), code_dim), dtype=np.float32)
        self.logvar = np.zeros((len(ground_truth), code_dim), dtype=np.float32)
        self.filled = np.zeros(len(ground_truth), dtype=bool)

    @property
    def num_encoded(self) -> int:
        return int(self.filled.sum())

    def ensure(self, index: np.ndarray) -> None:
        missing = np.unique(index[~self.filled[index]])
        if len(missing):
            self.mean[missing], self.logvar[missing] = self.encode(self.ground_truth.images[missing])
            self.filled[missing] = True

    def encode_all(self, chunk: int = 65536, show_progress: bool = True) -> None:
        with progress(total=len(self.filled), desc="encode", unit="img", disable=not show_progress) as bar:
            for start in range(0, len(self.filled), chunk):
                stop = min(start + chunk, len(self.filled))
                self.ensure(np.arange(start, stop))
                bar.update(stop - start)

    def representation(self, *, sampled: bool = False) -> Representation:
        """The posterior mean, or a fresh z ~ q(z|x) per request (drawn from the metric's rng)."""

        lookup = table_representation(self.ground_truth, self.mean, self.logvar, sampled=sampled)

        def represent(factor_classes: np.ndarray, rng: np.random.Generator) -> np.ndarray:
            self.ensure(self.ground_truth.index_from_factors(factor_classes))
            return lookup(factor_classes, rng)

        return represent


def pixel_baseline(
    ground_truth: FactorGridData, method: str, num_components: int, num_fit: int, seed: int
) -> Representation:
    """PCA or ICA of the flattened pixels, fitted on ``num_fit`` random images."""
    rng = np.random.default_rng(seed)
    fit_index = rng.choice(len(ground_truth), size=min(num_fit, len(ground_truth)), replace=False)
    pixels = ground_truth.images[np.sort(fit_index)].reshape(len(fit_index), -1).astype(np.float64)
    if method == "pca":
        model = PCA(n_components=num_components, random_state=seed)
    elif method == "ica":
        # PCA to the same dimension first: the whitening FastICA would do itself, but from a
        # randomised PCA in ~2 s instead of an SVD of the whole pixel matrix (~50 s).
        model = make_pipeline(
            PCA(n_components=num_components, random_state=seed),
            FastICA(n_components=num_components, whiten="unit-variance", max_iter=400, random_state=seed),
        )
    else:
        raise ValueError(f"pixel baselines are 'pca' and 'ica', got {method!r}")
    model.fit(pixels)

    def represent(factor_classes: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        images = ground_truth.sample_observations_from_factors(factor_classes, rng)
        return model.transform(images.reshape(len(images), -1).astype(np.float64))

    return represent
