"""FactorVAE score (Kim & Mnih 2018, Sec. 4), disentanglement_lib's protocol.

Codes are scaled by their global standard deviation (from 10,000 samples); dimensions with
std < 0.05 are pruned as collapsed. Each vote: a batch of 64 with one random factor fixed;
the pruned-and-scaled dimension of least variance in the batch votes for that factor. The
majority-vote classifier maps each dimension to the factor it was most often chosen for;
accuracy on 10,000 training votes and 5,000 evaluation votes.

``num_active_dims`` counts the dimensions that survive pruning (disentanglement_lib reports
the length of its boolean mask instead, i.e. the code size).
"""

from __future__ import annotations

import numpy as np

from bvae.metrics.sampling import (
    Representation,
    sample_codes_and_factors,
    sample_fixed_factor_batch,
)
from bvae.progress import progress

PRUNE_STD = 0.05


def active_dimensions(global_variances: np.ndarray, threshold: float = PRUNE_STD) -> np.ndarray:
    return np.sqrt(global_variances) >= threshold


def vote(batch_codes: np.ndarray, global_variances: np.ndarray, active: np.ndarray) -> int:
    """The active dimension (index into the code) whose scaled variance is smallest."""
    local = np.var(batch_codes, axis=0, ddof=1)
    active_index = np.flatnonzero(active)
    return int(active_index[np.argmin(local[active] / global_variances[active])])


def compute_factor_vae_score(train_votes: np.ndarray, eval_votes: np.ndarray) -> dict[str, float]:
    """Accuracy of the majority-vote classifier; votes are ``(num_factors, code_dim)`` counts."""
    classifier = np.argmax(train_votes, axis=0)  # the factor each dimension votes for most
    columns = np.arange(train_votes.shape[1])
    return {
        "train_accuracy": float(train_votes[classifier, columns].sum() / train_votes.sum()),
        "eval_accuracy": float(eval_votes[classifier, columns].sum() / eval_votes.sum()),
    }


def factor_vae_score(
    ground_truth,
    represent: Representation,
    rng: np.random.Generator,
    *,
    batch_size: int = 64,
    num_train: int = 10000,
    num_eval: int = 5000,
    num_variance_estimate: int = 10000,
) -> dict[str, float]:
    codes, _ = sample_codes_and_factors(ground_truth, represent, num_variance_estimate, rng)
    global_variances = np.var(codes, axis=0, ddof=1)
    active = active_dimensions(global_variances)
    if not active.any():
        return {"train_accuracy": 0.0, "eval_accuracy": 0.0, "num_active_dims": 0}
    num_factors = len(ground_truth.factor_sizes)

    def votes(count: int, bar) -> np.ndarray:
        table = np.zeros((num_factors, codes.shape[1]), dtype=np.int64)
        for _ in range(count):
            factor, factors = sample_fixed_factor_batch(ground_truth, batch_size, rng)
            table[factor, vote(represent(factors, rng), global_variances, active)] += 1
            bar.update(1)
        return table

    total = num_train + num_eval
    with progress(total=total, desc=f"FactorVAE {total:,} votes", unit="vote") as bar:
        scores = compute_factor_vae_score(votes(num_train, bar), votes(num_eval, bar))
    return {**scores, "num_active_dims": int(active.sum())}
