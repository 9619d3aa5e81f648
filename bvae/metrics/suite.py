"""All metrics for one representation, at disentanglement_lib's sample sizes or fast ones.

``sample_sizes: dlib`` reproduces the published protocols; ``fast`` (a tenth of the points)
is for quick looks; ``smoke`` (a hundredth of the batch metrics' points) only proves that a
pipeline runs end to end. Each metric draws from its own generator, seeded from ``seed`` and
the metric's name, so adding or removing a metric never changes another's numbers.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from bvae.metrics.beta_vae import beta_vae_score
from bvae.metrics.dci import dci
from bvae.metrics.factor_vae import factor_vae_score
from bvae.metrics.mig import discrete_mig
from bvae.metrics.modularity import modularity_explicitness
from bvae.metrics.sampling import Representation
from bvae.metrics.sap import sap
from bvae.metrics.unsupervised import unsupervised_scores

METRICS = ("beta_vae", "factor_vae", "mig", "dci", "sap", "modularity", "unsupervised")


@dataclass(frozen=True)
class MetricSizes:
    beta_vae_train: int = 10000
    beta_vae_eval: int = 5000
    factor_vae_train: int = 10000
    factor_vae_eval: int = 5000
    factor_vae_variance: int = 10000
    batch_size: int = 64
    mig_train: int = 10000
    num_bins: int = 20
    train: int = 10000  # DCI, SAP, modularity/explicitness
    test: int = 5000
    unsupervised_train: int = 10000  # dlib's unsupervised_metrics.num_train


def metric_sizes(name: str) -> MetricSizes:
    """``dlib`` (the published protocols), ``fast`` (a tenth of the points) or ``smoke`` (a
    hundredth: it proves that a pipeline runs end to end; its numbers are noise)."""
    if name == "dlib":
        return MetricSizes()
    if name == "fast":
        return MetricSizes(1000, 500, 1000, 500, 2000, 64, 1000, 20, 1000, 500, 1000)
    if name == "smoke":  # batch metrics at a hundredth; 500 single points keep all 40 classes in
        return MetricSizes(100, 50, 100, 50, 500, 64, 500, 20, 500, 500, 500)
    raise ValueError(f"sample sizes must be 'dlib', 'fast' or 'smoke', got {name!r}")


def protocol(sample_sizes: str, dci_estimator: str) -> dict[str, object]:
    """What the figures were computed with, and whether they are comparable with
    disentanglement_lib's (its sample sizes and estimators) and so with published numbers."""
    differences = []
    if sample_sizes != "dlib":
        differences.append(f"sample_sizes {sample_sizes} (dlib: 10,000 / 5,000 points)")
    if dci_estimator != "gbt":
        differences.append(f"dci_estimator {dci_estimator} (dlib: gbt, gradient-boosted trees)")
    return {
        "sample_sizes": sample_sizes,
        "dci_estimator": dci_estimator,
        "explicitness_classifier": "liblinear one-vs-rest logistic regression (dlib's)",
        "sap_classifier": "LinearSVC C=0.01, balanced, dual (dlib's)",
        "comparable_to_dlib": not differences,
        "differs_from_dlib": "; ".join(differences) or "nothing",
    }


def _runners(sizes: MetricSizes, dci_estimator: str, seed: int) -> dict[str, Callable]:
    return {
        "beta_vae": lambda gt, rep, rng: beta_vae_score(
            gt,
            rep,
            rng,
            batch_size=sizes.batch_size,
            num_train=sizes.beta_vae_train,
            num_eval=sizes.beta_vae_eval,
            seed=seed,
        ),
        "factor_vae": lambda gt, rep, rng: factor_vae_score(
            gt,
            rep,
            rng,
            batch_size=sizes.batch_size,
            num_train=sizes.factor_vae_train,
            num_eval=sizes.factor_vae_eval,
            num_variance_estimate=sizes.factor_vae_variance,
        ),
        "mig": lambda gt, rep, rng: discrete_mig(
            gt, rep, rng, num_train=sizes.mig_train, num_bins=sizes.num_bins
        ),
        "dci": lambda gt, rep, rng: dci(
            gt,
            rep,
            rng,
            num_train=sizes.train,
            num_test=sizes.test,
            estimator=dci_estimator,
            seed=seed,
        ),
        "sap": lambda gt, rep, rng: sap(gt, rep, rng, num_train=sizes.train, num_test=sizes.test),
        "modularity": lambda gt, rep, rng: modularity_explicitness(
            gt, rep, rng, num_train=sizes.train, num_test=sizes.test, seed=seed
        ),
        "unsupervised": lambda gt, rep, rng: unsupervised_scores(
            gt, rep, rng, num_train=sizes.unsupervised_train, num_bins=sizes.num_bins
        ),
    }


def metric_rng(seed: int, metric: str) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(metric.encode())])


def compute_all(
    ground_truth,
    represent: Representation,
    *,
    sizes: MetricSizes = MetricSizes(),
    metrics: Sequence[str] = METRICS,
    dci_estimator: str = "gbt",
    seed: int = 0,
    on_metric: Callable[[str, dict[str, float], float], None] | None = None,
    on_start: Callable[[str], None] | None = None,
) -> dict[str, dict[str, float]]:
    """``{metric: {score: value}}`` plus ``{"seconds": {metric: wall seconds}}``; ``on_start``
    and ``on_metric`` hear of each metric as it starts and ends (progress for the log)."""
    unknown = set(metrics) - set(METRICS)
    if unknown:
        raise ValueError(f"unknown metrics {sorted(unknown)}; known: {', '.join(METRICS)}")
    runners = _runners(sizes, dci_estimator, seed)
    results: dict[str, dict[str, float]] = {"seconds": {}}
    for metric in metrics:
        if on_start is not None:
            on_start(metric)
        start = time.perf_counter()
        results[metric] = runners[metric](ground_truth, represent, metric_rng(seed, metric))
        results["seconds"][metric] = time.perf_counter() - start
        if on_metric is not None:
            on_metric(metric, results[metric], results["seconds"][metric])
    return results
