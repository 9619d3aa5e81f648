"""Disentanglement metrics, following disentanglement_lib's protocols (Locatello et al. 2019).

Each metric module has a pure core on arrays (codes and factors in, a dict of floats out) and
a wrapper that draws its samples through :mod:`bvae.metrics.sampling` from the ground-truth
interface. Representations map factor configurations to codes (see ``sampling``), so a model
is encoded once per image and every metric reuses those codes.
"""

from bvae.metrics.suite import MetricSizes, compute_all, metric_sizes

__all__ = ["MetricSizes", "compute_all", "metric_sizes"]
