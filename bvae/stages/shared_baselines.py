"""Baseline figures computed once and shared (``sweeps/baselines.json``): saved, loaded and
checked here.

The baselines (ground-truth factors, PCA and ICA of the pixels, an untrained network) depend
only on the data, ``evaluate.*`` and ``model.*``, which every member of a sweep shares; scored
again per member they were half of each member's evaluation. The file records what they were
computed for, and an evaluation whose params or data differ refuses it rather than print
another configuration's figures.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from bvae.config import Params, ParamsError
from bvae.errors import MissingInput
from bvae.fileio import write_json

FORMAT = "bvae-shared-baselines/1"


def computed_for(params: Params, dataset_digest: str) -> dict:
    """What baseline figures depend on: the evaluation and model params and the data."""
    sections = params.model_dump(mode="json", include={"evaluate", "model"})
    return {**sections, "dataset_digest": dataset_digest}


def _differences(expected: dict, recorded: dict) -> list[str]:
    keys = []
    for section in sorted(set(expected) | set(recorded)):
        mine, theirs = expected.get(section), recorded.get(section)
        if isinstance(mine, dict) and isinstance(theirs, dict):
            keys += [
                f"{section}.{k}" for k in sorted(set(mine) | set(theirs)) if mine.get(k) != theirs.get(k)
            ]
        elif mine != theirs:
            keys.append(section)
    return keys


@dataclass(frozen=True)
class SharedBaselines:
    baselines: dict  # {baseline: {metric: {score: value}}}, as in an evaluation report
    seconds: dict[str, float]  # the computation's own timings (baselines.<name>.<metric>)
    computed_for: dict
    source: str  # the file they came from, named in the evaluation report

    def check(self, params: Params, dataset_digest: str) -> None:
        """Refuse figures computed for other params or data: they would be another run's."""
        differing = _differences(computed_for(params, dataset_digest), self.computed_for)
        if differing:
            raise ParamsError(
                f"{self.source} holds baselines computed for other settings ({', '.join(differing)}): "
                "recompute them with `bvae sweep-baselines` (`dvc exp run sweeps/dvc.yaml` does)."
            )


def write_shared_baselines(
    path: Path, baselines: dict, seconds: dict[str, float], params: Params, dataset_digest: str
) -> None:
    write_json(
        path,
        {
            "format": FORMAT,
            "computed_for": computed_for(params, dataset_digest),
            "baselines": baselines,
            "seconds": seconds,
        },
    )


def read_shared_baselines(path: Path) -> SharedBaselines:
    if not path.exists():
        raise MissingInput(
            f"{path} not found: run the sweep-baselines stage first (`dvc exp run sweeps/dvc.yaml`)."
        )
    data = json.loads(path.read_text())
    if data.get("format") != FORMAT:
        raise ParamsError(
            f"{path} is {data.get('format')!r}, this bvae reads {FORMAT!r}: "
            "recompute it with `bvae sweep-baselines`."
        )
    return SharedBaselines(data["baselines"], data["seconds"], data["computed_for"], str(path))
