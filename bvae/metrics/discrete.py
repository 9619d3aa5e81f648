"""Discretisation, mutual information and entropy, computed here rather than by scikit-learn.

``mutual_information`` equals ``sklearn.metrics.mutual_info_score`` (natural log, plug-in
estimate from the contingency table), but is pinned in our code so a library change cannot
move MIG or modularity.
"""

from __future__ import annotations

import numpy as np


def histogram_discretize(codes: np.ndarray, num_bins: int = 20) -> np.ndarray:
    """Per code dimension, ``num_bins`` equal-width bins over its observed range (dlib's rule).

    ``codes`` is ``(n, d)``; returns int bin ids ``(n, d)``.
    """
    codes = np.asarray(codes, dtype=np.float64)
    binned = np.zeros(codes.shape, dtype=np.int64)
    for column in range(codes.shape[1]):
        edges = np.histogram(codes[:, column], num_bins)[1][:-1]
        binned[:, column] = np.digitize(codes[:, column], edges)
    return binned


def mutual_information(first: np.ndarray, second: np.ndarray) -> float:
    """I(X; Y) in nats of two discrete label arrays (plug-in estimate).

    A variable with one value carries no information: exactly 0, not the 2.2e-16 that
    ``log(p / (p * 1))`` can round to (modularity would read that as a perfectly modular code).
    Per-cell terms below machine epsilon are zeroed as scikit-learn's ``mutual_info_score`` does.
    """
    _, first_ids = np.unique(first, return_inverse=True)
    _, second_ids = np.unique(second, return_inverse=True)
    if first_ids.max() == 0 or second_ids.max() == 0:
        return 0.0
    joint = np.zeros((first_ids.max() + 1, second_ids.max() + 1))
    np.add.at(joint, (first_ids, second_ids), 1.0)
    joint /= joint.sum()
    outer = joint.sum(axis=1, keepdims=True) * joint.sum(axis=0, keepdims=True)
    nonzero = joint > 0
    terms = joint[nonzero] * np.log(joint[nonzero] / outer[nonzero])
    terms[np.abs(terms) < np.finfo(terms.dtype).eps] = 0.0
    return float(max(0.0, np.sum(terms)))


def mutual_information_matrix(discrete_codes: np.ndarray, factors: np.ndarray) -> np.ndarray:
    """``(num_codes, num_factors)`` matrix of I(code_i; factor_j)."""
    return np.array(
        [
            [mutual_information(discrete_codes[:, i], factors[:, j]) for j in range(factors.shape[1])]
            for i in range(discrete_codes.shape[1])
        ]
    )


def entropy(labels: np.ndarray) -> float:
    """H(Y) in nats of a discrete label array."""
    _, counts = np.unique(labels, return_counts=True)
    probabilities = counts / counts.sum()
    return float(-np.sum(probabilities * np.log(probabilities)))
