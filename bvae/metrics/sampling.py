"""Drawing codes and factors for the metrics: the one shared sampler.

A *representation* maps ``(n, num_factors)`` factor classes to ``(n, code_dim)`` codes,
drawing any randomness it needs (a sampled posterior) from the generator it is given:

    represent(factor_classes, rng) -> codes

:func:`table_representation` looks codes up in a per-image table (a model encoded once over
the dataset; exact for dSprites, where a factor configuration has exactly one image),
:func:`encoder_representation` renders the observations and calls an encoder, as
disentanglement_lib does, and :func:`factor_representation` is the ground truth itself.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from bvae.data.ground_truth import GroundTruthData

Representation = Callable[[np.ndarray, np.random.Generator], np.ndarray]


def table_representation(
    ground_truth,
    latents_mean: np.ndarray,
    latents_logvar: np.ndarray | None = None,
    *,
    sampled: bool = False,
) -> Representation:
    """Codes from per-image tables indexed like the dataset: the mean, or z ~ q(z|x)."""
    if sampled and latents_logvar is None:
        raise ValueError("the sampled representation needs the posterior log-variances")

    def represent(factor_classes: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        index = ground_truth.index_from_factors(factor_classes)
        mean = latents_mean[index].astype(np.float64)
        if not sampled:
            return mean
        std = np.exp(0.5 * latents_logvar[index].astype(np.float64))
        # Noise from a child generator: the metric's own stream (and so the images it asks
        # for) stays as for the mean representation, which can then share its encodings.
        return mean + std * rng.spawn(1)[0].standard_normal(mean.shape)

    return represent


def encoder_representation(
    ground_truth: GroundTruthData, encode: Callable[[np.ndarray], np.ndarray]
) -> Representation:
    """Codes of the rendered observations (disentanglement_lib's representation_function)."""

    def represent(factor_classes: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return np.asarray(encode(ground_truth.sample_observations_from_factors(factor_classes, rng)))

    return represent


def factor_representation(factor_classes: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The ground-truth factor classes as the code: the perfect-disentanglement baseline."""
    return np.asarray(factor_classes, dtype=np.float64)


def sample_codes_and_factors(
    ground_truth: GroundTruthData,
    represent: Representation,
    num_points: int,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """``num_points`` i.i.d. factor configurations and their codes: ``(codes, factors)``."""
    factors = ground_truth.sample_factors(num_points, rng)
    return represent(factors, rng), factors


def sample_fixed_factor_batch(
    ground_truth: GroundTruthData, batch_size: int, rng: np.random.Generator
) -> tuple[int, np.ndarray]:
    """A batch sharing one random factor's value (FactorVAE's votes): ``(factor, factors)``."""
    factor = int(rng.integers(len(ground_truth.factor_sizes)))
    factors = ground_truth.sample_factors(batch_size, rng)
    factors[:, factor] = factors[0, factor]
    return factor, factors


def sample_pair_batches(
    ground_truth: GroundTruthData, batch_size: int, rng: np.random.Generator
) -> tuple[int, np.ndarray, np.ndarray]:
    """Two batches that agree on one random factor (the BetaVAE score's pairs)."""
    factor = int(rng.integers(len(ground_truth.factor_sizes)))
    first = ground_truth.sample_factors(batch_size, rng)
    second = ground_truth.sample_factors(batch_size, rng)
    second[:, factor] = first[:, factor]
    return factor, first, second
