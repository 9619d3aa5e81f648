"""SAP score (Kumar et al. 2018, Sec. 3), discrete factors, disentanglement_lib's protocol.

For each (code, factor) pair a one-dimensional linear SVM (C = 0.01, balanced classes) predicts
the factor from that code alone; the score matrix holds test accuracies. SAP is the mean over
factors of the gap between the two best codes. The SVM's dual formulation (the default of
disentanglement_lib's scikit-learn) is pinned: newer releases choose it automatically.

A constant code is fitted like any other, as disentanglement_lib does: its SVM predicts one
class for every point and scores at chance (that class's share), not 0, so it narrows the gap
of a factor that only one code explains exactly as it does in dlib.
"""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.svm import LinearSVC

from bvae.metrics.sampling import Representation, sample_codes_and_factors


def score_matrix(
    train_codes: np.ndarray,
    train_factors: np.ndarray,
    test_codes: np.ndarray,
    test_factors: np.ndarray,
) -> np.ndarray:
    matrix = np.zeros((train_codes.shape[1], train_factors.shape[1]))
    for i in range(train_codes.shape[1]):
        for j in range(train_factors.shape[1]):
            classifier = LinearSVC(C=0.01, class_weight="balanced", dual=True, max_iter=1000, random_state=0)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                classifier.fit(train_codes[:, i : i + 1], train_factors[:, j])
            matrix[i, j] = np.mean(classifier.predict(test_codes[:, i : i + 1]) == test_factors[:, j])
    return matrix


def compute_sap(
    train_codes: np.ndarray,
    train_factors: np.ndarray,
    test_codes: np.ndarray,
    test_factors: np.ndarray,
) -> dict[str, float]:
    matrix = np.sort(score_matrix(train_codes, train_factors, test_codes, test_factors), axis=0)
    gap = matrix[-1] - matrix[-2] if matrix.shape[0] > 1 else matrix[-1]
    return {"sap_score": float(np.mean(gap))}


def sap(
    ground_truth,
    represent: Representation,
    rng: np.random.Generator,
    *,
    num_train: int = 10000,
    num_test: int = 5000,
) -> dict[str, float]:
    train = sample_codes_and_factors(ground_truth, represent, num_train, rng)
    test = sample_codes_and_factors(ground_truth, represent, num_test, rng)
    return compute_sap(*train, *test)
