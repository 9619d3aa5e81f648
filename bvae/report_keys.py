"""The keys of ``reports/metrics.json``, known from the evaluate config before anything runs.

``registry.selection_metric`` must name one of them; ``bvae.config`` checks it when params are
loaded, so a typo fails at once instead of after train, evaluate and traverse have run.
"""

from __future__ import annotations

from collections.abc import Iterable

# The scores each metric's compute function returns (bvae.metrics; the evaluate test checks
# that a real report has exactly these keys).
SCORE_NAMES: dict[str, tuple[str, ...]] = {
    "beta_vae": ("train_accuracy", "eval_accuracy"),
    "factor_vae": ("train_accuracy", "eval_accuracy", "num_active_dims"),
    "mig": ("discrete_mig",),
    "dci": ("disentanglement", "completeness", "informativeness_train", "informativeness_test"),
    "sap": ("sap_score",),
    "modularity": ("modularity", "explicitness_train", "explicitness_test"),
    "unsupervised": (
        "gaussian_total_correlation",
        "gaussian_wasserstein_correlation",
        "gaussian_wasserstein_correlation_norm",
        "mutual_info_score",
    ),
}
HELDOUT_FIGURES = ("reconstruction_nats", "kl_nats", "negative_elbo_nats", "largest_mean_sd", "num_images")

# The few figures people compare models by (registry tags, MLflow metrics, flow tables).
HEADLINE = {
    "factor_vae": "model.mean.factor_vae.eval_accuracy",
    "beta_vae": "model.mean.beta_vae.eval_accuracy",
    "mig": "model.mean.mig.discrete_mig",
    "dci_disentanglement": "model.mean.dci.disentanglement",
}
HEADLINE_LABELS = {
    "factor_vae": "FactorVAE",
    "beta_vae": "BetaVAE",
    "mig": "MIG",
    "dci_disentanglement": "DCI",
}


def headline_keys(selection_metric: str) -> list[str]:
    """The headline figures' keys, the selection metric first, then held-out fit."""
    keys = [selection_metric, *HEADLINE.values()]
    keys += [f"heldout.{name}" for name in HELDOUT_FIGURES if name not in ("largest_mean_sd", "num_images")]
    return list(dict.fromkeys(keys))


def figure_keys(metrics: Iterable[str], representations: Iterable[str], baselines: Iterable[str]) -> set[str]:
    """Every numeric key of the report but the timings (``seconds.*``, never a selection)."""
    scores = {f"{metric}.{name}" for metric in metrics for name in SCORE_NAMES[metric]}
    keys = {f"model.{kind}.{score}" for kind in representations for score in scores}
    keys |= {f"baselines.{baseline}.{score}" for baseline in baselines for score in scores}
    return keys | {f"heldout.{name}" for name in HELDOUT_FIGURES} | {"model_images_encoded"}
