"""Stage ``sweep-baselines``: the baselines' figures, computed once for every member of a sweep
(``sweeps/baselines.json``).

A separate stage because they depend only on the data, ``evaluate.*`` and ``model.*``: DVC
keeps them while the grid, the objective or the training change, and ``sweep-evaluate`` gives
them to every member instead of scoring them again per member.
"""

from __future__ import annotations

import logging

from bvae.config import Params
from bvae.data.ground_truth import DSprites
from bvae.data.shards import load_dataset
from bvae.runtime import select_device
from bvae.stages.evaluate import score_baselines
from bvae.stages.shared_baselines import write_shared_baselines
from bvae.stages.sweep_files import SweepPaths

log = logging.getLogger(__name__)


def run_sweep_baselines(params: Params, paths: SweepPaths = SweepPaths()) -> dict:
    """Score every configured baseline once and write ``sweeps/baselines.json``."""
    device = select_device(params.evaluate.device, "evaluate.device")
    dataset = load_dataset(paths.shards)
    seconds: dict[str, float] = {}
    encode_seconds = [0.0]
    baselines = score_baselines(
        params, DSprites(dataset.images), params.model.latent_dim, device, seconds, encode_seconds
    )
    seconds["baselines.encoding"] = encode_seconds[0]  # the untrained network's
    write_shared_baselines(paths.baselines, baselines, seconds, params, dataset.manifest.digest)
    log.info("%d baselines scored for every member -> %s", len(baselines), paths.baselines)
    return baselines
