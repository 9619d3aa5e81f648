"""DCI: disentanglement, completeness, informativeness (Eastwood & Williams 2018).

One classifier per factor predicts it from the code; the per-code importances of all factors
form a ``(num_codes, num_factors)`` matrix R. Disentanglement weights 1 − H(R_i·) (base
num_factors) by each code's share of importance; completeness weights 1 − H(R_·j) (base
num_codes) by each factor's share; informativeness is the classifiers' accuracy.

Estimators (``estimator``):
- ``gbt`` (the default): disentanglement_lib's, scikit-learn's GradientBoostingClassifier with
  its defaults (100 stages, depth 3) pinned here. On dSprites it fits 113 trees a stage
  (3+6+40+32+32 classes), so it is slow on mixed codes (minutes at 10,000 points). The five
  per-factor fits are independent and run on all cores (threads: scikit-learn's tree builder
  releases the GIL), with the same numbers as one after the other.
- ``forest``: a random forest (100 trees, depth ≤ 10, all cores), much faster, with impurity
  importances. It gives the same oracle values (ground truth 1, constant 0) but different
  numbers on mixed codes (e.g. disentanglement 0.10 lower on a rotated code): *not comparable*
  with disentanglement_lib's or published figures, and labelled so in the evaluate report.
"""

from __future__ import annotations

import numpy as np
from joblib import Parallel, delayed
from scipy import stats
from sklearn.ensemble import GradientBoostingClassifier, RandomForestClassifier

from bvae.metrics.sampling import Representation, sample_codes_and_factors
from bvae.progress import progress

ESTIMATORS = ("gbt", "forest")


def _classifier(estimator: str, seed: int):
    if estimator == "gbt":
        return GradientBoostingClassifier(
            n_estimators=100, learning_rate=0.1, max_depth=3, subsample=1.0, random_state=seed
        )
    if estimator == "forest":
        # Every feature at every split: with sqrt(d) features, unrelated codes win splits and
        # soak up importance (ground truth would score D = C = 0.75 instead of 1).
        return RandomForestClassifier(
            n_estimators=100, max_depth=10, max_features=None, n_jobs=-1, random_state=seed
        )
    raise ValueError(f"DCI estimator must be one of {ESTIMATORS}, got {estimator!r}")


def _fit_factor(estimator, seed, train_codes, train_labels, test_codes, test_labels):
    """One factor's importances and train / test accuracy."""
    model = _classifier(estimator, seed).fit(train_codes, train_labels)
    return (
        np.abs(model.feature_importances_),
        np.mean(model.predict(train_codes) == train_labels),
        np.mean(model.predict(test_codes) == test_labels),
    )


def importance_matrix(
    train_codes: np.ndarray,
    train_factors: np.ndarray,
    test_codes: np.ndarray,
    test_factors: np.ndarray,
    estimator: str = "gbt",
    seed: int = 0,
    n_jobs: int = -1,
) -> tuple[np.ndarray, float, float]:
    """R ``(num_codes, num_factors)``, and the mean train / test accuracy over factors.

    ``gbt`` fits the factors on ``n_jobs`` threads (-1: all cores), most classes first so the
    40-class orientation does not start last; the forest is parallel inside already.
    """
    num_factors = train_factors.shape[1]
    order = sorted(range(num_factors), key=lambda j: -len(np.unique(train_factors[:, j])))
    with progress(total=num_factors, desc=f"DCI {estimator} fits", unit="factor", every_percent=1) as bar:

        def fit(j: int):
            fitted = _fit_factor(
                estimator, seed, train_codes, train_factors[:, j], test_codes, test_factors[:, j]
            )
            bar.update(1)  # a line per factor fitted, with the time left
            return fitted

        fits = Parallel(n_jobs=n_jobs if estimator == "gbt" else 1, prefer="threads")(
            delayed(fit)(j) for j in order
        )
    by_factor = dict(zip(order, fits, strict=True))
    matrix = np.stack([by_factor[j][0] for j in range(num_factors)], axis=1)
    train_accuracy = [by_factor[j][1] for j in range(num_factors)]
    test_accuracy = [by_factor[j][2] for j in range(num_factors)]
    return matrix, float(np.mean(train_accuracy)), float(np.mean(test_accuracy))


def disentanglement(matrix: np.ndarray) -> float:
    per_code = 1.0 - stats.entropy(matrix.T + 1e-11, base=matrix.shape[1])
    weights = matrix if matrix.sum() > 0 else np.ones_like(matrix)
    return float(np.sum(per_code * weights.sum(axis=1) / weights.sum()))


def completeness(matrix: np.ndarray) -> float:
    per_factor = 1.0 - stats.entropy(matrix + 1e-11, base=matrix.shape[0])
    weights = matrix if matrix.sum() > 0 else np.ones_like(matrix)
    return float(np.sum(per_factor * weights.sum(axis=0) / weights.sum()))


def compute_dci(
    train_codes: np.ndarray,
    train_factors: np.ndarray,
    test_codes: np.ndarray,
    test_factors: np.ndarray,
    estimator: str = "gbt",
    seed: int = 0,
) -> dict[str, float]:
    matrix, train_accuracy, test_accuracy = importance_matrix(
        train_codes, train_factors, test_codes, test_factors, estimator, seed
    )
    return {
        "disentanglement": disentanglement(matrix),
        "completeness": completeness(matrix),
        "informativeness_train": train_accuracy,
        "informativeness_test": test_accuracy,
    }


def dci(
    ground_truth,
    represent: Representation,
    rng: np.random.Generator,
    *,
    num_train: int = 10000,
    num_test: int = 5000,
    estimator: str = "gbt",
    seed: int = 0,
) -> dict[str, float]:
    train = sample_codes_and_factors(ground_truth, represent, num_train, rng)
    test = sample_codes_and_factors(ground_truth, represent, num_test, rng)
    return compute_dci(*train, *test, estimator=estimator, seed=seed)
