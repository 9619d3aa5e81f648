"""Metric oracles (disentanglement_lib's idea) on codes built from the factor classes of the
dSprites grid (sizes 3, 6, 40, 32, 32), at disentanglement_lib's sample sizes.

Two kinds of expected value, marked at each assertion:
- **derived**: worked out from the metric's definition (the derivation is written beside it),
  e.g. 20 histogram bins cannot resolve 32- and 40-valued factors, so the ground truth's MIG
  is 0.90, not 1.
- **snapshot**: what this implementation gave when the test was written, with no closed form
  behind it (e.g. SAP's one-dimensional SVMs on a 32-valued factor). A snapshot guards against
  regressions; independent cross-checks against disentanglement_lib are what vouch for it.
"""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import mutual_info_score

from bvae.data import factors
from bvae.data.ground_truth import FactorGridData
from bvae.metrics import compute_all, metric_sizes
from bvae.metrics.dci import completeness, disentanglement
from bvae.metrics.discrete import entropy, histogram_discretize, mutual_information
from bvae.metrics.sampling import factor_representation, table_representation
from bvae.metrics.sap import score_matrix as sap_score_matrix

DLIB = metric_sizes("dlib")
FAST = metric_sizes("fast")


@pytest.fixture(scope="module")
def grid():
    """The dSprites factor grid without pixels: the oracles need only factors."""
    no_pixels = np.broadcast_to(np.zeros((1, 1), np.uint8), (factors.NUM_IMAGES, 1))
    return FactorGridData(no_pixels, factors.FACTOR_NAMES, factors.FACTOR_SIZES)


def score(
    grid,
    represent,
    sizes=DLIB,
    metrics=("beta_vae", "factor_vae", "mig", "dci", "sap", "modularity"),
    seed=0,
):
    results = compute_all(grid, represent, sizes=sizes, metrics=metrics, dci_estimator="forest", seed=seed)
    results.pop("seconds")
    return results


def rotate_pair(first: int, second: int, angle: float):
    cos, sin = np.cos(angle), np.sin(angle)

    def represent(factor_classes, rng):
        codes = factor_classes.astype(np.float64)
        a, b = codes[:, first].copy(), codes[:, second].copy()
        codes[:, first], codes[:, second] = cos * a - sin * b, sin * a + cos * b
        return codes

    return represent


@pytest.fixture(scope="module")
def ground_truth_scores(grid):
    return score(grid, factor_representation)


def test_ground_truth_factors(ground_truth_scores):
    s = ground_truth_scores
    # Derived: fixing factor k leaves code k with zero variance, so every vote is right.
    assert s["factor_vae"]["eval_accuracy"] == 1.0 and s["factor_vae"]["num_active_dims"] == 5
    # Derived: |z1 - z2| is exactly 0 in the fixed factor's code and > 0 elsewhere (separable).
    assert s["beta_vae"]["eval_accuracy"] == 1.0
    # Derived: each factor is predicted by its own code alone (one-hot importance matrix).
    for key in ("disentanglement", "completeness", "informativeness_test"):
        assert s["dci"][key] == pytest.approx(1.0, abs=1e-6)
    # Derived: codes are independent of the other factors; only plug-in MI bias is left.
    assert s["modularity"]["modularity"] == pytest.approx(1.0, abs=1e-3)
    # Derived: the code is the factor, so MIG_k = H(bin(v_k)) / H(v_k) (the runner-up has
    # MI 0). Shape (3 values) and scale (6) keep a bin each: 1. Orientation's 40 values fill
    # 20 equal bins two by two: ln 20 / ln 40 = 0.812. Position's 32 values over 20 bins of
    # width 1.55 give 12 bins of two values and 8 of one:
    # (12/16 ln 16 + 8/32 ln 32) / ln 32 = 0.850. Mean of (1, 1, 0.812, 0.850, 0.850) = 0.902.
    assert s["mig"]["discrete_mig"] == pytest.approx(0.90, abs=0.02)
    # Snapshot: 1-D linear SVMs cannot isolate the middle values of a 32-valued factor.
    assert s["sap"]["sap_score"] == pytest.approx(0.25, abs=0.04)


def test_constant_code(grid):
    s = score(grid, lambda f, rng: np.zeros((len(f), 5)), sizes=FAST)
    # Derived: a constant carries no information, so every information-based score is 0.
    assert s["mig"]["discrete_mig"] == 0.0
    assert s["factor_vae"] == {"train_accuracy": 0.0, "eval_accuracy": 0.0, "num_active_dims": 0}
    # Derived: identical inputs for every class leave the classifier at chance, 1 in 5.
    assert s["beta_vae"]["eval_accuracy"] == pytest.approx(0.2, abs=0.05)
    assert s["dci"]["disentanglement"] == pytest.approx(0.0, abs=1e-6)
    assert s["dci"]["completeness"] == pytest.approx(0.0, abs=1e-6)
    assert s["sap"]["sap_score"] == 0.0 and s["modularity"]["modularity"] == 0.0


def test_duplicated_latents(grid):
    s = score(grid, lambda f, rng: np.concatenate([f, f], axis=1).astype(float), metrics=("mig", "dci"))
    # Derived: the top two codes carry the same information, so every gap is 0.
    assert s["mig"]["discrete_mig"] == pytest.approx(0.0, abs=1e-9)
    # Derived: each factor's importance splits evenly over its two copies among K = 10 codes:
    # completeness = 1 - H_10(1/2, 1/2) = 1 - ln 2 / ln 10 = 0.699.
    assert s["dci"]["completeness"] == pytest.approx(0.70, abs=0.05)
    # Derived: each code still serves one factor only.
    assert s["dci"]["disentanglement"] == pytest.approx(1.0, abs=0.01)


def test_two_factors_mixed_by_45_degrees(grid):
    s = score(grid, rotate_pair(3, 4, np.pi / 4), metrics=("beta_vae", "factor_vae", "mig", "dci"))
    # Derived: fixing shape, scale or orientation zeroes its own code: those 3/5 of the votes
    # are right. Fixing posX or posY leaves both mixed codes with the same variance, so the
    # vote lands on either at random and the majority classifier gets half of those 2/5:
    # 3/5 + 2/5 · 1/2 = 0.80.
    assert s["factor_vae"]["eval_accuracy"] == pytest.approx(0.80, abs=0.03)
    # Snapshots: no closed form at these sample sizes.
    assert s["mig"]["discrete_mig"] == pytest.approx(0.56, abs=0.03)
    assert s["beta_vae"]["eval_accuracy"] == pytest.approx(0.81, abs=0.03)
    assert s["dci"]["disentanglement"] == pytest.approx(0.81, abs=0.03)


def test_full_random_rotation_hurts_mig_dci_sap_most(grid, ground_truth_scores):
    rotation = np.linalg.qr(np.random.default_rng(0).standard_normal((5, 5)))[0]
    s = score(grid, lambda f, rng: f.astype(float) @ rotation, sizes=FAST)
    # Snapshot bounds: every code mixes all factors, so the axis-aligned scores collapse.
    assert s["mig"]["discrete_mig"] < 0.3 < ground_truth_scores["mig"]["discrete_mig"]
    assert s["dci"]["disentanglement"] < 0.3 and s["sap"]["sap_score"] < 0.1
    # A linear classifier on |z1 - z2| still finds the fixed factor most of the time.
    assert s["beta_vae"]["eval_accuracy"] > 0.75


def test_pure_noise_latents_change_nothing(grid, ground_truth_scores):
    def with_noise(f, rng):
        return np.concatenate([f.astype(float), rng.standard_normal((len(f), 3))], axis=1)

    s = score(grid, with_noise, metrics=("mig", "factor_vae", "dci"))
    # Derived: independent noise shares no information with any factor, and its normalised
    # variance (1) never undercuts a fixed factor's code (0).
    assert s["mig"]["discrete_mig"] == pytest.approx(ground_truth_scores["mig"]["discrete_mig"], abs=0.01)
    assert s["factor_vae"]["eval_accuracy"] == 1.0 and s["factor_vae"]["num_active_dims"] == 8
    assert s["dci"]["disentanglement"] == pytest.approx(1.0, abs=0.01)
    assert s["dci"]["completeness"] == pytest.approx(1.0, abs=0.01)


def test_permutation_invariance_and_determinism(grid):
    mixing = rotate_pair(0, 2, 0.3)
    order = np.array([3, 0, 4, 1, 2])
    first = score(grid, mixing, sizes=FAST)
    permuted = score(grid, lambda f, rng: mixing(f, rng)[:, order], sizes=FAST)
    again = score(grid, mixing, sizes=FAST)
    assert again == first  # same seed, same numbers
    for metric, values in first.items():
        for key, value in values.items():
            assert permuted[metric][key] == pytest.approx(value, abs=0.02), (metric, key)


def test_sampled_table_shares_the_mean_streams(grid):
    rng_table = np.random.default_rng(0)
    mean = rng_table.standard_normal((factors.NUM_IMAGES, 4)).astype(np.float32)
    logvar = np.full_like(mean, -20.0)  # sd 4.5e-5: the samples sit on the means
    by_mean = score(grid, table_representation(grid, mean), sizes=FAST, metrics=("mig",))
    by_sample = score(
        grid, table_representation(grid, mean, logvar, sampled=True), sizes=FAST, metrics=("mig",)
    )
    assert by_sample["mig"]["discrete_mig"] == pytest.approx(by_mean["mig"]["discrete_mig"], abs=1e-3)


def test_discrete_helpers_match_their_definitions():
    rng = np.random.default_rng(0)
    first, second = rng.integers(0, 7, 5000), rng.integers(0, 5, 5000)
    second[:2500] = first[:2500] % 5
    assert mutual_information(first, second) == pytest.approx(mutual_info_score(first, second), abs=1e-12)
    assert entropy(second) == pytest.approx(mutual_info_score(second, second), abs=1e-12)
    codes = rng.standard_normal((1000, 2))
    binned = histogram_discretize(codes, 20)
    assert binned.min() == 1 and binned.max() == 20  # np.digitize against the left edges
    assert completeness(np.eye(4)) == pytest.approx(1.0) and disentanglement(np.eye(4)) == pytest.approx(1.0)
    assert disentanglement(np.ones((4, 4))) == pytest.approx(0.0, abs=1e-9)


def test_a_constant_code_beside_the_factors(grid):
    """An independent cross-check found both: with seed 2 the constant code's mutual
    information rounded to 2.2e-16 and modularity scored it 1; SAP scored it 0, not chance."""

    def with_constant(f, rng):
        return np.concatenate([f.astype(float), np.full((len(f), 1), 0.3)], axis=1)

    s = score(grid, with_constant, metrics=("modularity",), seed=2)
    # Derived: the five factor codes score ≈ 1 as in the ground truth; a code with no
    # information scores 0, as disentanglement_lib defines it: (5 · 1 + 0) / 6.
    assert s["modularity"]["modularity"] == pytest.approx(5 / 6, abs=1e-3)
    labels = np.random.default_rng(1).integers(0, 40, DLIB.train)
    assert all(mutual_information(np.full(n, 7), labels[:n]) == 0.0 for n in range(9990, 10001))

    rng = np.random.default_rng(1)
    train_factors, test_factors = grid.sample_factors(DLIB.train, rng), grid.sample_factors(DLIB.test, rng)
    constant_row = sap_score_matrix(
        np.zeros((DLIB.train, 1)), train_factors, np.zeros((DLIB.test, 1)), test_factors
    )[0]
    # Derived: the constant code's SVM predicts one class everywhere, so it scores that class's
    # share of the test points: chance, 1 / (number of values), as in disentanglement_lib.
    for name, size, accuracy in zip(grid.factor_names, grid.factor_sizes, constant_row, strict=True):
        assert accuracy == pytest.approx(1 / size, abs=0.3 / size), name


def test_dci_default_is_dlibs_gbt_fitted_in_parallel_with_the_same_numbers(grid):
    """The default was a random forest, whose numbers differ from disentanglement_lib's on
    mixed codes; gbt (dlib's) is the default now, its per-factor fits run on all cores."""
    from bvae.config import EvaluateConfig
    from bvae.metrics import protocol
    from bvae.metrics.dci import importance_matrix
    from bvae.metrics.sampling import sample_codes_and_factors

    assert EvaluateConfig().dci_estimator == "gbt"
    mixed = rotate_pair(0, 1, np.pi / 4)
    train_codes, train_factors = sample_codes_and_factors(grid, mixed, 400, np.random.default_rng(0))
    test_codes, test_factors = sample_codes_and_factors(grid, mixed, 200, np.random.default_rng(1))
    # Shape and scale only (3 and 6 classes): gbt fits a tree per class and stage.
    data = (train_codes, train_factors[:, :2], test_codes, test_factors[:, :2])
    one_by_one = importance_matrix(*data, estimator="gbt", n_jobs=1)
    in_parallel = importance_matrix(*data, estimator="gbt", n_jobs=2)
    assert np.array_equal(one_by_one[0], in_parallel[0]) and one_by_one[1:] == in_parallel[1:]
    assert protocol("dlib", "gbt")["comparable_to_dlib"] is True
    labelled = protocol("dlib", "forest")
    assert labelled["comparable_to_dlib"] is False and "dci_estimator forest" in labelled["differs_from_dlib"]


def test_long_metrics_report_progress_with_the_time_left(grid, caplog):
    """Off a terminal (a DVC or Prefect log), BetaVAE and FactorVAE log a line per 10 % of
    their points, with the time left, and DCI a line per factor fitted."""
    import logging

    caplog.set_level(logging.INFO, logger="bvae.progress")
    score(grid, factor_representation, sizes=metric_sizes("smoke"), metrics=("beta_vae", "factor_vae", "dci"))
    lines = [record.getMessage() for record in caplog.records if record.name == "bvae.progress"]
    for metric in ("BetaVAE", "FactorVAE"):
        own = [line for line in lines if line.startswith(metric)]
        assert len(own) == 10 and "s left" in own[0] and own[-1].split(": ")[1].startswith("100%"), own
    assert len([line for line in lines if line.startswith("DCI")]) == 5  # the grid's 5 factors
