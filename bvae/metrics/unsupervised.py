"""disentanglement_lib's unsupervised scores: what a code's statistics say without labels.

Locatello et al. 2019 (section 5, and disentanglement_lib's ``unsupervised_metrics``) score
the mean codes of ``num_train`` random images by:

- ``gaussian_total_correlation``: the total correlation of a Gaussian with the codes'
  covariance Σ, ½·(Σ_i log Σ_ii − log det Σ): 0 when the dimensions are uncorrelated;
- ``gaussian_wasserstein_correlation``: 2·tr(Σ) − 2·tr((Σ · diag(Σ))^½), the squared
  2-Wasserstein distance between N(0, Σ) and N(0, diag Σ): 0 when uncorrelated; ``_norm`` is
  it divided by tr(Σ);
- ``mutual_info_score``: the mean, over pairs of distinct dimensions, of their mutual
  information with the codes in 20 equal-width bins (MIG's discretisation).

The covariance is NumPy's (divided by n − 1), as dlib's ``np.cov``. Guard (not in dlib, where
a constant dimension makes the Gaussian scores NaN): a dimension that is constant over the
sample is left out of the Gaussian scores, which is their limit as its variance goes to 0 (an
uncorrelated dimension adds nothing to either); with no varying dimension both are 0, and so
is the normalised one. A constant dimension has no information about any other, so it counts
0 in the mutual-information mean, as in dlib.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg

from bvae.metrics.discrete import histogram_discretize, mutual_information
from bvae.metrics.sampling import Representation, sample_codes_and_factors


def gaussian_total_correlation(covariance: np.ndarray) -> float:
    """½·(Σ_i log Σ_ii − log det Σ) of a positive-definite covariance."""
    _, log_determinant = np.linalg.slogdet(covariance)
    return float(0.5 * (np.sum(np.log(np.diag(covariance))) - log_determinant))


def gaussian_wasserstein_correlation(covariance: np.ndarray) -> float:
    """2·tr(Σ) − 2·tr((Σ · diag(Σ))^½), Σ's rows scaled by its variances (dlib's formula)."""
    root = scipy.linalg.sqrtm(covariance * np.diag(covariance)[:, None])
    return float(2 * np.trace(covariance) - 2 * np.trace(np.real(root)))


def compute_unsupervised(codes: np.ndarray, num_bins: int = 20) -> dict[str, float]:
    """The scores of ``(n, d)`` codes (see the module docstring)."""
    codes = np.asarray(codes, dtype=np.float64)
    covariance = np.atleast_2d(np.cov(codes.T))
    varying = np.diag(covariance) > 0
    kept = covariance[np.ix_(varying, varying)]
    if varying.any():
        total_correlation = gaussian_total_correlation(kept)
        wasserstein = gaussian_wasserstein_correlation(kept)
        normalised = wasserstein / float(np.trace(kept))
    else:
        total_correlation = wasserstein = normalised = 0.0
    discrete = histogram_discretize(codes, num_bins)
    dims = codes.shape[1]
    pairs = [
        mutual_information(discrete[:, i], discrete[:, j]) for i in range(dims) for j in range(dims) if i != j
    ]
    return {
        "gaussian_total_correlation": total_correlation,
        "gaussian_wasserstein_correlation": wasserstein,
        "gaussian_wasserstein_correlation_norm": normalised,
        "mutual_info_score": float(np.mean(pairs)) if pairs else 0.0,
    }


def unsupervised_scores(
    ground_truth,
    represent: Representation,
    rng: np.random.Generator,
    *,
    num_train: int = 10000,
    num_bins: int = 20,
) -> dict[str, float]:
    """The scores of the codes of ``num_train`` random images (dlib: 10,000)."""
    codes, _ = sample_codes_and_factors(ground_truth, represent, num_train, rng)
    return compute_unsupervised(codes, num_bins)
