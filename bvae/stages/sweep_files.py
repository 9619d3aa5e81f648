"""Where a sweep's files live (``sweeps/``): the one home of its layout and of ``sweep.json``."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from bvae.errors import MissingInput
from bvae.stages.run_files import SHARDS, RunFiles

SWEEP_FILE = "sweep.json"  # in sweeps/train/: the members, their points and MLflow runs
PARENT_RUN_FILE = "mlflow_run.json"  # in sweeps/train/: the sweep's parent MLflow run


@dataclass(frozen=True, kw_only=True)  # built by name: a reordered field cannot swap paths
class SweepPaths:
    shards: Path = SHARDS
    train: Path = Path("sweeps/train")
    baselines: Path = Path("sweeps/baselines.json")
    checkpoint: Path = Path("sweeps/checkpoint.pt")
    members: Path = Path("sweeps/members")
    comparison: Path = Path("sweeps/comparison.json")
    comparison_markdown: Path = Path("sweeps/comparison.md")
    comparison_csv: Path = Path("sweeps/comparison.csv")
    comparison_chart: Path = Path("sweeps/comparison.png")
    study_chart: Path = Path("sweeps/study.png")  # each metric against each method's strength
    registered: Path = Path("sweeps/registered.json")

    def member(self, name: str, *, train: Path | None = None, members: Path | None = None) -> RunFiles:
        """A member's files (:meth:`RunFiles.member`). ``train`` / ``members``: the staging
        folder that stands in for ``self.train`` / ``self.members`` while a stage writes it."""
        return RunFiles.member(name, trained_in=train or self.train, inspected_in=members or self.members)


def read_sweep(paths: SweepPaths) -> dict:
    sweep_file = paths.train / SWEEP_FILE
    if not sweep_file.exists():
        raise MissingInput(
            f"{sweep_file} not found: run the sweep-train stage first (`dvc repro sweeps/dvc.yaml`)."
        )
    return json.loads(sweep_file.read_text())
