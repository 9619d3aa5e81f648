"""Label-free scores: dlib's unsupervised scores and UDR on constructed codes whose answer is
known (identity, rotated and constant codes; identical, permuted and random models)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bvae.metrics.udr import udr
from bvae.metrics.unsupervised import compute_unsupervised


def gaussian_codes(n=4000, d=4, seed=0):
    return np.random.default_rng(seed).standard_normal((n, d))


def test_independent_codes_score_no_correlation():
    scores = compute_unsupervised(gaussian_codes())
    assert abs(scores["gaussian_total_correlation"]) < 5e-3
    assert abs(scores["gaussian_wasserstein_correlation"]) < 5e-3
    assert scores["mutual_info_score"] < 0.05  # the plug-in estimate's small positive bias


def test_rotated_codes_have_the_closed_form_correlations():
    """Two unit-variance codes mixed to correlation ρ: TC = −½·log(1 − ρ²); Σ·diag(Σ) = Σ, whose
    root has trace √(1 + ρ) + √(1 − ρ), so WC = 4 − 2·(√(1 + ρ) + √(1 − ρ)) (ρ the sample's)."""
    raw = gaussian_codes(d=2)
    angle = math.pi / 8
    mixed = raw @ np.array([[math.cos(angle), math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    codes = mixed / mixed.std(axis=0, ddof=1)
    rho = float(np.corrcoef(codes.T)[0, 1])
    scores = compute_unsupervised(codes)
    assert scores["gaussian_total_correlation"] == pytest.approx(-0.5 * math.log(1 - rho**2), rel=1e-9)
    wasserstein = 4 - 2 * (math.sqrt(1 + rho) + math.sqrt(1 - rho))
    assert scores["gaussian_wasserstein_correlation"] == pytest.approx(wasserstein, rel=1e-6)
    assert scores["gaussian_wasserstein_correlation_norm"] == pytest.approx(wasserstein / 2, rel=1e-6)
    assert scores["mutual_info_score"] > compute_unsupervised(raw)["mutual_info_score"]


def test_constant_codes_are_guarded():
    """A collapsed model's code is constant: every score defined, no NaN. A constant dimension
    beside varying ones leaves the Gaussian scores as the varying ones alone give them."""
    assert compute_unsupervised(np.ones((500, 3))) == {
        "gaussian_total_correlation": 0.0,
        "gaussian_wasserstein_correlation": 0.0,
        "gaussian_wasserstein_correlation_norm": 0.0,
        "mutual_info_score": 0.0,
    }
    varying = gaussian_codes(d=2)
    with_constant = compute_unsupervised(np.column_stack([varying, np.full(len(varying), 3.0)]))
    alone = compute_unsupervised(varying)
    for name in ("gaussian_total_correlation", "gaussian_wasserstein_correlation"):
        assert with_constant[name] == pytest.approx(alone[name])


@pytest.mark.parametrize("method", ["lasso", "spearman"])
def test_udr_ranks_agreeing_models_first(method):
    """Three models that encode the same factors (one of them permuted and sign-flipped, one
    with small noise) and one random code: the agreeing ones score high, the permuted copy as
    the original, the random one lowest; a latent without KL does not count."""
    rng = np.random.default_rng(1)
    factors = rng.standard_normal((1000, 4))
    original = np.column_stack([factors, 0.01 * rng.standard_normal(1000)])  # 4 informative + 1 dead
    permuted = original[:, [2, 0, 3, 1, 4]] * np.array([1, -1, 1, -1, 1])
    noisy = original + 0.05 * rng.standard_normal(original.shape)
    random_code = rng.standard_normal((1000, 5))
    kl = np.array([1.0, 1.0, 1.0, 1.0, 0.0])
    scores, pairs = udr(
        [original, permuted, noisy, random_code], [kl, kl[[2, 0, 3, 1, 4]], kl, np.ones(5)], method
    )
    assert scores[0] == pytest.approx(scores[1], abs=1e-9)  # a permutation changes nothing
    # Not 1: Lasso shrinks each unit coefficient by α (0.9 each, so 0.81 / 0.9), and the
    # Spearman matrix of independent latents holds small correlations off the diagonal.
    assert pairs[0, 1] > 0.85 and pairs[1, 0] > 0.85
    assert scores.argmin() == 3 and scores[3] < 0.6 * scores[0]
    assert np.isnan(np.diag(pairs)).all()


def test_udr_of_a_model_without_informative_latents_is_zero():
    codes = [gaussian_codes(1000, 3, seed) for seed in range(3)]
    scores, pairs = udr(codes, [np.ones(3), np.ones(3), np.zeros(3)], "spearman")
    assert pairs[2, 0] == 0.0 and pairs[0, 2] == 0.0 and scores[2] == 0.0
    with pytest.raises(ValueError, match="at least two"):
        udr(codes[:1], [np.ones(3)])


def test_the_scores_agree_with_independent_formulas():
    """Cross-checks against other implementations of the published definitions: the Gaussian
    total correlation as the marginals' entropies minus the joint's (SciPy's entropies), the
    Wasserstein correlation as the closed-form W₂² between N(0, Σ) and N(0, diag Σ) in its
    symmetric form tr Σ + tr D − 2·tr (D^½ Σ D^½)^½ (eigendecompositions), the MI score from
    scikit-learn's mutual_info_score, and UDR's Spearman matrix from SciPy's spearmanr."""
    from scipy.stats import multivariate_normal, norm, spearmanr
    from sklearn.metrics import mutual_info_score

    from bvae.metrics.discrete import histogram_discretize
    from bvae.metrics.udr import similarity

    rng = np.random.default_rng(4)
    codes = rng.standard_normal((3000, 3)) @ rng.standard_normal((3, 3))
    covariance = np.cov(codes.T)
    scores = compute_unsupervised(codes)
    marginals = sum(norm(scale=math.sqrt(covariance[i, i])).entropy() for i in range(3))
    expected_tc = marginals - multivariate_normal(cov=covariance).entropy()
    assert scores["gaussian_total_correlation"] == pytest.approx(expected_tc, rel=1e-9)
    half = np.diag(np.sqrt(np.diag(covariance)))
    values = np.linalg.eigvalsh(half @ covariance @ half)
    expected_wc = 2 * np.trace(covariance) - 2 * np.sum(np.sqrt(values))
    assert scores["gaussian_wasserstein_correlation"] == pytest.approx(expected_wc, rel=1e-8)
    binned = histogram_discretize(codes, 20)
    pairs = [mutual_info_score(binned[:, i], binned[:, j]) for i in range(3) for j in range(3) if i != j]
    assert scores["mutual_info_score"] == pytest.approx(np.mean(pairs), rel=1e-9)
    other = codes[:, ::-1] + 0.3 * rng.standard_normal(codes.shape)
    rho = np.abs(spearmanr(codes, other).statistic[:3, 3:])
    assert np.allclose(similarity(codes, other, "spearman"), rho, atol=1e-12)
