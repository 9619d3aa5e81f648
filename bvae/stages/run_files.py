"""Where one trained model's files live, whichever stage writes them: the one run layout.

Every per-model stage (train, evaluate, traverse, report, register) takes a :class:`RunFiles`;
the defaults are the single pipeline's (``dvc.yaml``). A sweep member's are
:meth:`RunFiles.member`: its training files in ``sweeps/train/<member>/`` and what evaluate,
traverse and report write in ``sweeps/members/<member>/``. Two folders, not one, because each
is one DVC stage's output (``sweep-train``'s, ``sweep-evaluate``'s) and DVC does not let one
stage write inside another's output.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bvae.tracking.runs import RUN_FILE

SHARDS = Path("data/shards")  # what every stage reads (dvc.yaml's shard stage writes it)


@dataclass(frozen=True, kw_only=True)  # built by name: a reordered field cannot swap paths
class RunFiles:
    """One model's files, grouped by the stage that writes them."""

    # train
    model: Path = Path("models/model.pt")
    run_file: Path = RUN_FILE  # the MLflow run every later stage logs into
    curves: Path = Path("reports/train/curves.csv")
    summary: Path = Path("reports/train/summary.json")
    # evaluate
    metrics: Path = Path("reports/metrics.json")
    # traverse
    traversals: Path = Path("reports/traversals")
    latents: Path = Path("reports/latents.json")
    latents_markdown: Path = Path("reports/latents.md")
    # report
    report: Path = Path("reports/report.html")
    # register: None for a sweep member (the sweep keeps one record for all, sweeps/registered.json)
    registered: Path | None = Path("models/registered.json")

    @classmethod
    def member(cls, name: str, *, trained_in: Path, inspected_in: Path) -> RunFiles:
        """A sweep member's: ``<trained_in>/<name>/`` (``sweeps/train``) and
        ``<inspected_in>/<name>/`` (``sweeps/members``)."""
        trained, inspected = Path(trained_in) / name, Path(inspected_in) / name
        return cls(
            model=trained / "model.pt",
            run_file=trained / "mlflow_run.json",
            curves=trained / "curves.csv",
            summary=trained / "summary.json",
            metrics=inspected / "metrics.json",
            traversals=inspected / "traversals",
            latents=inspected / "latents.json",
            latents_markdown=inspected / "latents.md",
            report=inspected / "report.html",
            registered=None,
        )
