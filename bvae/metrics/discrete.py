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
    """I(X; Y) in nats of two discrete label arrays (plug-in estimate)."""
    _, first_ids = np.unique(first, return_inverse=True)
    _, second_ids = np.unique(second, return_inverse=True)
    joint = np.zeros((first_ids.max() + 1, second_ids.max() + 1))
    np.add.at(joint, (first_ids, second_ids), 1.0)
    joint /= joint.sum()
    outer = joint.sum(axis=1, keepdims=True) * joint.sum(axis=0, keepdims=True)
    nonzero = joint > 0
    return float(max(0.0, np.sum(joint[nonzero] * np.log(joint[nonzero] / outer[nonzero]))))


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
