"""BetaVAE score (Higgins et al. 2017, Sec. 3), disentanglement_lib's protocol.

Each point: a random factor k; two batches of 64 that share factor k's value; the feature is
the mean over the batch of |z1 − z2| per code dimension and the label is k. A linear
classifier learns k from the feature on 10,000 points and is scored on 5,000 more.

Classifier: disentanglement_lib's numbers came from scikit-learn's LogisticRegression default
of its day, liblinear one-vs-rest (C = 1, L2). Newer scikit-learn defaults to lbfgs
multinomial, which moves the score, so the liblinear OvR model is pinned here.
"""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.multiclass import OneVsRestClassifier

from bvae.metrics.sampling import Representation, sample_pair_batches
from bvae.progress import progress


def liblinear_ovr(seed: int) -> OneVsRestClassifier:
    """The pinned linear classifier: liblinear, one-vs-rest, C = 1, L2 (sklearn < 0.22 default)."""
    return OneVsRestClassifier(LogisticRegression(solver="liblinear", C=1.0, random_state=seed))


def compute_beta_vae_score(
    train_features: np.ndarray,
    train_labels: np.ndarray,
    eval_features: np.ndarray,
    eval_labels: np.ndarray,
    seed: int = 0,
) -> dict[str, float]:
    """Train/eval accuracy of the pinned linear classifier on (feature, factor) points."""
    if len(np.unique(train_labels)) < 2:
        raise ValueError("the BetaVAE score needs points for at least two factors")
    model = liblinear_ovr(seed).fit(train_features, train_labels)
    return {
        "train_accuracy": float(np.mean(model.predict(train_features) == train_labels)),
        "eval_accuracy": float(np.mean(model.predict(eval_features) == eval_labels)),
    }


def beta_vae_points(
    ground_truth,
    represent: Representation,
    num_points: int,
    rng: np.random.Generator,
    batch_size: int = 64,
    bar=None,
) -> tuple[np.ndarray, np.ndarray]:
    """``num_points`` (feature, factor) points; ``bar``: a progress bar to advance per point."""
    features, labels = [], []
    for _ in range(num_points):
        factor, first, second = sample_pair_batches(ground_truth, batch_size, rng)
        features.append(np.mean(np.abs(represent(first, rng) - represent(second, rng)), axis=0))
        labels.append(factor)
        if bar is not None:
            bar.update(1)
    return np.array(features), np.array(labels)


def beta_vae_score(
    ground_truth,
    represent: Representation,
    rng: np.random.Generator,
    *,
    batch_size: int = 64,
    num_train: int = 10000,
    num_eval: int = 5000,
    seed: int = 0,
) -> dict[str, float]:
    total = num_train + num_eval
    with progress(total=total, desc=f"BetaVAE {total:,} points", unit="point") as bar:
        train = beta_vae_points(ground_truth, represent, num_train, rng, batch_size, bar)
        evaluation = beta_vae_points(ground_truth, represent, num_eval, rng, batch_size, bar)
    return compute_beta_vae_score(*train, *evaluation, seed=seed)
