"""Disentanglement metrics, following disentanglement_lib's protocols (Locatello et al. 2019).

Each metric module has a pure core on arrays (codes and factors in, a dict of floats out) and
a wrapper that draws its samples through :mod:`bvae.metrics.sampling` from the ground-truth
interface. Representations map factor configurations to codes (see ``sampling``), so a model
is encoded once per image and every metric reuses those codes.

``compute_all``, ``metric_sizes`` and ``protocol`` (from ``suite``) are loaded on first use, so
importing one metric (the traverse stage uses ``discrete``) does not import every metric.
"""

from __future__ import annotations

import importlib

__all__ = ["MetricSizes", "compute_all", "metric_sizes", "protocol"]


def __getattr__(name: str):
    if name in __all__:
        return getattr(importlib.import_module("bvae.metrics.suite"), name)
    raise AttributeError(f"module 'bvae.metrics' has no attribute {name!r}")
