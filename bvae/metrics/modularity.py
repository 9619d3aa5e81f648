"""Modularity and explicitness (Ridgeway & Mozer 2018), disentanglement_lib's protocol.

Modularity: from the ``(num_codes, num_factors)`` mutual information (codes in 20 bins), how
much each code concentrates on a single factor (1 − the share of squared MI off its best
factor, averaged; codes with no information score 0). Explicitness: per factor, the ROC-AUC of
a one-vs-rest logistic regression on the standardised codes (liblinear pinned, as for BetaVAE).
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score
from sklearn.preprocessing import label_binarize

from bvae.metrics.beta_vae import liblinear_ovr
from bvae.metrics.discrete import histogram_discretize, mutual_information_matrix
from bvae.metrics.sampling import Representation, sample_codes_and_factors


def modularity(information: np.ndarray) -> float:
    squared = np.square(information)
    best = squared.max(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        deviation = (squared.sum(axis=1) - best) / (best * (squared.shape[1] - 1.0))
    score = 1.0 - deviation
    score[best == 0] = 0.0
    return float(np.mean(score))


def _standardise(codes: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    return (codes - mean) / np.where(std > 0, std, 1.0)


def explicitness(train_codes, train_labels, test_codes, test_labels, seed: int = 0) -> tuple[float, float]:
    model = liblinear_ovr(seed).fit(train_codes, train_labels)
    scores = []
    for codes, labels in ((train_codes, train_labels), (test_codes, test_labels)):
        truth = label_binarize(labels, classes=model.classes_)
        if truth.shape[1] == 1:  # two classes: label_binarize gives one column
            truth = np.hstack([1 - truth, truth])
        scores.append(float(roc_auc_score(truth, model.predict_proba(codes), average="macro")))
    return scores[0], scores[1]


def compute_modularity_explicitness(
    train_codes: np.ndarray,
    train_factors: np.ndarray,
    test_codes: np.ndarray,
    test_factors: np.ndarray,
    num_bins: int = 20,
    seed: int = 0,
) -> dict[str, float]:
    information = mutual_information_matrix(histogram_discretize(train_codes, num_bins), train_factors)
    mean, std = train_codes.mean(axis=0), train_codes.std(axis=0)
    train_scaled, test_scaled = (
        _standardise(train_codes, mean, std),
        _standardise(test_codes, mean, std),
    )
    pairs = [
        explicitness(train_scaled, train_factors[:, j], test_scaled, test_factors[:, j], seed)
        for j in range(train_factors.shape[1])
    ]
    return {
        "modularity": modularity(information),
        "explicitness_train": float(np.mean([train for train, _ in pairs])),
        "explicitness_test": float(np.mean([test for _, test in pairs])),
    }


def modularity_explicitness(
    ground_truth,
    represent: Representation,
    rng: np.random.Generator,
    *,
    num_train: int = 10000,
    num_test: int = 5000,
    seed: int = 0,
) -> dict[str, float]:
    train = sample_codes_and_factors(ground_truth, represent, num_train, rng)
    test = sample_codes_and_factors(ground_truth, represent, num_test, rng)
    return compute_modularity_explicitness(*train, *test, seed=seed)
