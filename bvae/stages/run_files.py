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

from bvae.errors import BadInput
from bvae.model_file import read_model_file
from bvae.tracking.runs import RUN_FILE, RunHandle, read_run_file

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


class StaleRunFile(BadInput, ValueError):
    """The run file names another MLflow run than the one that trained the model file."""


def trained_run(files: RunFiles, model_state: dict | None = None) -> RunHandle | None:
    """The MLflow run that trained ``files.model``: the run file's (None without one), refused
    when the model file records another run. A train that failed after starting its run
    leaves the run file naming that FAILED run beside the previous model; a later stage must
    not log the previous model's figures into it. ``model_state``: the model file, when the
    caller has already read it."""
    if not files.run_file.exists():
        return None
    run = read_run_file(files.run_file)
    if model_state is None and files.model.exists():
        model_state = read_model_file(files.model)
    trained_in = (model_state or {}).get("mlflow_run_id")
    if trained_in is not None and trained_in != run.run_id:
        raise StaleRunFile(
            f"{files.run_file} names MLflow run {run.run_id}, but {files.model} was trained in run "
            f"{trained_in}: the last training started a run and stopped before it wrote its model. "
            "Rerun the train stage (`dvc repro train`)."
        )
    return run
