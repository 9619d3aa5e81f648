"""Where one trained model's training files live: a single run's, or a sweep member's."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bvae.tracking.runs import RUN_FILE


@dataclass(frozen=True, kw_only=True)  # built by name: a reordered field cannot swap paths
class TrainFiles:
    """The train stage's outputs for one model: model file, MLflow run file, curves, summary."""

    model: Path = Path("models/model.pt")
    run_file: Path = RUN_FILE
    curves: Path = Path("reports/train/curves.csv")
    summary: Path = Path("reports/train/summary.json")

    @classmethod
    def in_folder(cls, folder: Path) -> TrainFiles:
        """A sweep member's: every file in its own folder (``sweeps/train/<member>/``)."""
        folder = Path(folder)
        return cls(
            model=folder / "model.pt",
            run_file=folder / "mlflow_run.json",
            curves=folder / "curves.csv",
            summary=folder / "summary.json",
        )
