"""Stage ``sweep-register``: every member becomes a ``candidate`` version; the best member goes
through the champion gate (unless ``registry.promote`` is false: the Prefect sweep flow then
gates its overall best itself). Writes ``sweeps/registered.json``.
"""

from __future__ import annotations

import json
import logging

from bvae.config import LABEL_FREE_SELECTIONS, Params
from bvae.fileio import write_json
from bvae.stages.register import run_register
from bvae.stages.sweep_files import SweepPaths
from bvae.tracking.registry import promote

log = logging.getLogger(__name__)


def run_sweep_register(params: Params, paths: SweepPaths = SweepPaths()) -> dict:
    """Every member a ``candidate`` version; the best member through the champion gate."""
    selection = params.registry.selection_metric
    comparison = json.loads(paths.comparison.read_text())
    candidates = params.registry.model_copy(update={"promote": False})
    registrations = {}
    for name, figures in comparison["members"].items():
        computed = figures.get(selection) if selection in LABEL_FREE_SELECTIONS else None  # UDR
        registration = run_register(
            params.model_copy(update={"registry": candidates}), paths.member(name), computed
        )
        registrations[name] = registration
    best = comparison["best"]
    versions = {name: registration.version for name, registration in registrations.items()}
    result = {
        "best": best,
        "selection_metric": selection,
        "selection_value": registrations[best].selection_value,
        "versions": versions,
    }
    if params.registry.promote:
        promotion = promote(params.registry.model_name, versions[best], params.registry.margin)
        result.update(champion_version=promotion.champion_version, promoted=promotion.promoted)
        log.info(
            "best member %s (version %s): %s",
            best,
            versions[best],
            "promoted to champion"
            if promotion.promoted
            else f"champion stays version {promotion.champion_version}",
        )
    write_json(paths.registered, result)
    return result
