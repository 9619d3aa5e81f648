"""Unsupervised Disentanglement Ranking (Duan et al. 2020, "Unsupervised Model Selection for
Variational Disentangled Representation Learning", ICLR; section 3 and eq. 3).

A disentangled representation is the one that models trained with other seeds agree on, up to
permutation and sign. For models i and j, the mean codes of the same images (1,000 random
ones in dlib) are compared latent by latent: R(a, b) is |Spearman correlation|, or |Lasso
coefficient| regressing j's codes on i's, both standardised per latent. Only informative
latents count, those whose KL to the prior, averaged over the images, is above 0.01 nats.
Then, as disentanglement_lib's ``relative_strength_disentanglement``:

    UDR_ij = ½ · [ mean_b max_a R(a,b)² / Σ_a R(a,b) + mean_a max_b R(a,b)² / Σ_b R(a,b) ]

1 when every informative latent of one model has exactly one counterpart in the other, lower
as they mix. The paper's eq. 3 weights the two sums by 1/(d_i + d_j) instead; the two agree
when both models have as many informative latents. A model's score is the median of UDR_ji
over the other models j (dlib's column median). A row or column of R that sums to 0 adds 0
(dlib's ``nan_to_num``); a pair where either model has no informative latent scores 0 (dlib:
NaN). Lasso: scikit-learn's, α = 0.1, as dlib.

Sources read for the definitions: Duan et al. 2020 (arXiv 1905.12614) section 3, and
disentanglement_lib's ``evaluation/udr/metrics/udr.py``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.stats import rankdata
from sklearn.linear_model import Lasso

KL_THRESHOLD = 0.01  # nats: disentanglement_lib's kl_filter_threshold
LASSO_ALPHA = 0.1
METHODS = ("lasso", "spearman")


def _standardise(codes: np.ndarray) -> np.ndarray:
    centred = codes - codes.mean(axis=0)
    std = codes.std(axis=0)
    return np.divide(centred, std, out=np.zeros_like(centred), where=std > 0)


def similarity(codes_a: np.ndarray, codes_b: np.ndarray, method: str) -> np.ndarray:
    """``(d_a, d_b)``: how strongly latent a of one model and latent b of the other agree."""
    a, b = _standardise(np.asarray(codes_a, np.float64)), np.asarray(codes_b, np.float64)
    if method == "spearman":
        ranks_a = _standardise(np.apply_along_axis(rankdata, 0, a))
        ranks_b = _standardise(np.apply_along_axis(rankdata, 0, b))
        return np.abs(ranks_a.T @ ranks_b / len(a))
    if method == "lasso":
        model = Lasso(alpha=LASSO_ALPHA, random_state=0).fit(a, _standardise(b))
        return np.abs(np.atleast_2d(model.coef_)).T
    raise ValueError(f"UDR's similarity is 'lasso' or 'spearman', not {method!r}")


def pair_score(matrix: np.ndarray, informative_a: np.ndarray, informative_b: np.ndarray) -> float:
    """UDR_ij of a similarity matrix, over the informative latents of each side."""
    kept = matrix[np.ix_(informative_a, informative_b)]
    if kept.size == 0:
        return 0.0
    with np.errstate(divide="ignore", invalid="ignore"):
        columns = np.nan_to_num(kept.max(axis=0) ** 2 / kept.sum(axis=0))
        rows = np.nan_to_num(kept.max(axis=1) ** 2 / kept.sum(axis=1))
    return float((columns.mean() + rows.mean()) / 2)


def udr(
    codes: Sequence[np.ndarray],
    kl_per_latent: Sequence[np.ndarray],
    method: str = "lasso",
    threshold: float = KL_THRESHOLD,
) -> tuple[np.ndarray, np.ndarray]:
    """Each model's UDR (the median of its column: UDR_ji over the others j) and the ``(K, K)``
    matrix of UDR_ij (diagonal NaN). ``codes``: each model's mean codes ``(n, d)`` of the same n images;
    ``kl_per_latent``: each model's KL per latent over them ``(d,)``."""
    count = len(codes)
    if count < 2:
        raise ValueError("UDR compares models with each other: it needs at least two")
    informative = [np.asarray(kl) > threshold for kl in kl_per_latent]
    # As dlib: an uninformative latent is zeroed before the fit, so Lasso cannot lean on its
    # (standardised, so amplified) noise, then left out of the score.
    codes = [
        _standardise(np.asarray(c, np.float64)) * mask for c, mask in zip(codes, informative, strict=True)
    ]
    scores = np.full((count, count), np.nan)
    for i in range(count):
        for j in range(count):
            if i != j:
                scores[i, j] = pair_score(
                    similarity(codes[i], codes[j], method), informative[i], informative[j]
                )
    return np.nanmedian(scores, axis=0), scores
