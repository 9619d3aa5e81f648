"""Training stages: ``train`` (one model) and ``sweep-train`` (a grid), one code path.

:class:`TrackedTraining` is what both stages run: one :class:`~bvae.training.Trainer` of
K ≥ 1 members, one checkpoint, one MLflow run per member (under a parent run for a sweep),
the collapse watch, and each member's files written as a single run's.

Checkpoints go to the stage's checkpoint file every ``train.checkpoint_every`` steps
(atomically; :mod:`bvae.checkpoint`). Rerunning after a kill resumes from it, and reopens the
same MLflow runs, provided it was made with the same params and the same data; otherwise
training starts afresh.

Training never depends on the tracking server to keep its result. If the server stops
answering, training goes on; the curve rows wait in the checkpoint (``logged_rows`` says how
many MLflow has), the models and reports are written, the runs are marked FAILED if the
server can still hear them, and the stage exits 75 (retry later). The rerun finds the
finished checkpoint with ``model_logged`` false and logs the rest without training again.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from bvae import distributed, tracking
from bvae import runtime as runtimes
from bvae.checkpoint import remove_checkpoint, resumable_state, save_checkpoint
from bvae.collapse import CollapseWatch, collapse_record
from bvae.config import Params
from bvae.data.shards import load_dataset
from bvae.fileio import atomic_path, check_writable, write_json
from bvae.model_file import save_model_file
from bvae.objectives import KIND_TERMS
from bvae.runtime import Runtime
from bvae.stages.run_files import SHARDS, RunFiles
from bvae.stages.sweep_files import PARENT_RUN_FILE, SWEEP_FILE, SweepPaths
from bvae.sweep import sweep_members
from bvae.tracking import metric_names
from bvae.tracking.flavour import log_torch_model
from bvae.training import Member, Trainer

log = logging.getLogger(__name__)

# A latent whose average KL stays under this carries (almost) no information: "inactive".
ACTIVE_KL_NATS = 0.1


CHECKPOINT = Path("models/checkpoint.pt")  # the resumable state: not a DVC output (a killed run resumes)


@dataclass(frozen=True)
class MemberRun:
    """One model a training stage trains, and the MLflow run it gets."""

    params: Params
    name: str | None = None  # a sweep member's name (its MLflow run name); None: a single run
    tags: dict[str, str] = field(default_factory=dict)
    # Known before training (a single run's): the run file is written as the run starts and
    # the curves at every checkpoint. A sweep member's files appear only at the end.
    files: RunFiles | None = None


@dataclass(frozen=True)
class ParentRun:
    """A sweep's parent MLflow run: started here, or ``given`` (its id, from whoever started the
    sweep: a Prefect sweep's one parent run). A given run is only read: its members nest under
    it, and its owner logs to it and ends it."""

    params: dict
    tags: dict[str, str]
    name: str
    given: str | None = None


def write_curves(rows: list[dict[str, float]], path: Path) -> None:
    """The curve rows as CSV (what ``dvc plots`` reads), written atomically."""
    if not rows:
        return
    with atomic_path(path) as temporary, open(temporary, "w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


class CurveLog:
    """Curve rows to MLflow while the server answers. After the first failure it stops trying
    (each try would wait for retries) and training goes on; ``logged_rows`` is kept in the
    checkpoint so the rerun logs the rest."""

    def __init__(self, run: tracking.RunHandle | None, logged_rows: int, objective_kind: str):
        self.run, self.logged_rows, self.lost = run, logged_rows, None
        self.objective_kind = objective_kind

    def catch_up(self, history: list[dict[str, float]]) -> None:
        if self.run is None or self.lost is not None:
            return
        try:
            for row in history[self.logged_rows :]:
                metrics = metric_names.curve_metrics(row, self.objective_kind)
                tracking.log_metrics(self.run, metrics, step=int(row["step"]))
                self.logged_rows += 1
        except tracking.TrackingError as error:
            self.lost = error
            log.warning("%s; training goes on, the curves wait in the checkpoint", error)


def end_run_if_possible(run: tracking.RunHandle, status: str) -> None:
    try:
        tracking.end_run(run, status)
    except tracking.TrackingError as error:
        log.warning("could not mark MLflow run %s %s (%s)", run.run_id, status, error)


class TrackedTraining:
    """Train K members (or resume them) with a checkpoint and MLflow runs; write and log each
    member's files. A context manager: leaving it by an error marks the runs FAILED (KILLED for
    Ctrl-C or a termination signal); leaving it normally records that the models are logged.

    Under ``torchrun`` (one member) every rank trains; rank 0 alone decides the resume, logs
    to MLflow and writes the checkpoint and the outputs.
    """

    def __init__(
        self,
        params: Params,
        members: list[MemberRun],
        runtime: Runtime,
        dataset,
        checkpoint: Path,
        shards: Path,
        parent: ParentRun | None = None,
        show_progress: bool = True,
    ):
        self.members, self.checkpoint, self.dataset = members, checkpoint, dataset
        self.show_progress = show_progress
        self.trainer = trainer = Trainer(
            params.model,
            [Member(m.params.objective, m.params.train) for m in members],
            dataset.images,
            runtime,
        )
        self.world, self.digest = trainer.world, dataset.manifest.digest
        self.config = {"members": trainer.config_dicts(), "names": [m.name for m in members]}
        state = (
            resumable_state(checkpoint, self.config, self.digest, params.train.steps)
            if self.world.is_main
            else None
        )
        state = distributed.broadcast(state, self.world)
        if state is not None:
            trainer.load_state_dict(state)
            how_many = f"{trainer.size} members " if trainer.size > 1 else ""
            log.info("resuming %sfrom %s at step %d", how_many, checkpoint, trainer.step)
        self._log_start(params)
        self.parent, self.runs = None, [None] * len(members)
        self.owns_parent = parent is not None and parent.given is None
        if self.world.is_main:
            self.parent, self.runs = self._start_runs(params, parent, state, shards)
        logged = state["logged_rows"] if state else [0] * len(members)
        self.curves = [
            CurveLog(run, rows, member.params.objective.kind)
            for run, rows, member in zip(self.runs, logged, members, strict=True)
        ]
        self.watches = [CollapseWatch(f"member {m.name}" if m.name else "the model") for m in members]
        self.last_checkpoint: dict = dict(state) if state else {}  # a log-only rerun saves no new one
        self.seconds = 0.0

    def _log_start(self, params: Params) -> None:
        trainer, world = self.trainer, self.world
        if trainer.size == 1:
            log.info(
                "training %s β-VAE (%s objective) on %s for %d steps%s",
                params.model.architecture,
                params.objective.kind,
                trainer.device,
                params.train.steps,
                f" (rank {world.rank} of {world.size})" if world.distributed else "",
            )
            return
        log.info(
            "training %d %s β-VAEs together (%s) on %s for %d steps: %s",
            trainer.size,
            params.model.architecture,
            trainer.mechanism,
            trainer.device,
            params.train.steps,
            ", ".join(str(m.name) for m in self.members),
        )

    def _start_runs(self, params: Params, parent_spec: ParentRun | None, state: dict | None, shards: Path):
        """The parent run (a sweep's) and one run per member: reopened after a resume, else new."""
        experiment = params.tracking.experiment
        parent = None
        if parent_spec is not None and parent_spec.given:
            parent = tracking.existing_run(parent_spec.given)
        elif parent_spec is not None:
            parent = tracking.start_run(
                experiment,
                parent_spec.params,
                tags=parent_spec.tags,
                run_name=parent_spec.name,
                resume_run_id=state.get("parent_run_id") if state else None,
            )
        resumed = state.get("member_run_ids") if state else None
        runs: list[tracking.RunHandle] = []
        try:
            self._start_member_runs(params, parent, resumed, shards, runs)
        except BaseException as error:  # a run is never left RUNNING by a failed start
            status = "FAILED" if isinstance(error, Exception) else "KILLED"
            owned = parent if parent_spec is not None and not parent_spec.given else None
            for run in (*runs, owned):
                if run is not None:
                    end_run_if_possible(run, status)
            raise
        return parent, runs

    def _start_member_runs(self, params: Params, parent, resumed, shards: Path, runs: list) -> None:
        """One run per member, appended to ``runs`` as each starts (so a failure can end them)."""
        manifest = self.dataset.manifest
        experiment = params.tracking.experiment
        for k, member in enumerate(self.members):
            tags = {
                **({"mlflow.parentRunId": parent.run_id} if parent else {}),
                **member.tags,
                "objective": member.params.objective.kind,
                "architecture": member.params.model.architecture,
                "data_source": manifest.source,
                "data_digest": manifest.digest,
                "world_size": str(self.world.size),
                **runtimes.machine_tags(self.trainer.runtime),
            }
            run = tracking.start_run(
                experiment,
                member.params.model_dump(mode="json"),
                tags=tags,
                run_name=member.name,
                resume_run_id=resumed[k] if resumed else None,
                fallback_name=metric_names.run_name(
                    member.params.objective, member.params.train.seed, member.params.model.architecture
                ),
            )
            runs.append(run)
            if not resumed:
                tracking.log_dataset(
                    run, shards / "manifest.json", manifest.digest, manifest.source, manifest.num_images
                )
            if member.files is not None:
                tracking.write_run_file(run, member.files.run_file)

    # -- training ---------------------------------------------------------------------------
    def _on_log(self, trainer: Trainer) -> None:
        if not self.world.is_main:
            return
        for curve, watch, history in zip(self.curves, self.watches, trainer.histories, strict=True):
            curve.catch_up(history)
            watch.catch_up(history)

    def _on_checkpoint(self, trainer: Trainer) -> None:
        payload = trainer.state_dict()  # a collective under DDP: every rank takes part
        if not self.world.is_main:
            return
        self.last_checkpoint.update(
            payload,
            config=self.config,
            data_digest=self.digest,
            parent_run_id=self.parent.run_id if self.parent else None,
            member_run_ids=[run.run_id for run in self.runs],
            logged_rows=[curve.logged_rows for curve in self.curves],
            model_logged=False,
        )
        save_checkpoint(self.last_checkpoint, self.checkpoint)
        for member, history in zip(self.members, trainer.histories, strict=True):
            if member.files is not None:
                write_curves(history, member.files.curves)

    def train(self) -> None:
        self._on_log(self.trainer)  # rows a lost server missed before the last checkpoint
        started = time.perf_counter()
        self.trainer.train(
            on_log=self._on_log,
            on_checkpoint=self._on_checkpoint,
            show_progress=self.show_progress and self.world.is_main,
        )
        self.seconds = time.perf_counter() - started

    # -- outputs ----------------------------------------------------------------------------
    def write_outputs(self, files: list[RunFiles], **extra) -> list[dict]:
        """Each member's model file, curves and summary: the result, whatever MLflow does
        next. ``extra`` goes into every summary. Other ranks than 0 write nothing."""
        if not self.world.is_main:
            return []
        return [self._write_member(k, member_files, extra) for k, member_files in enumerate(files)]

    def _write_member(self, k: int, files: RunFiles, extra: dict) -> dict:
        trainer, history = self.trainer, self.trainer.histories[k]
        model = trainer.models[k]
        # Back to the standard layout: what we save and export must not depend on channels_last.
        model.to(memory_format=torch.contiguous_format)
        save_model_file(
            files.model,
            config=trainer.member_config(k),
            state_dict=model.state_dict(),
            step=trainer.step,
            data_digest=self.digest,
            mlflow_run_id=self.runs[k].run_id,
        )
        write_curves(history, files.curves)
        last = history[-1]
        kl_per_latent = [last[f"kl_z{z}"] for z in range(trainer.model_config.latent_dim)]
        summary = {
            "step": trainer.step,
            "loss": last["loss"],
            "reconstruction": last["reconstruction"],
            "kl": last["kl"],
            "capacity": last["capacity"],
            **{term: last[term] for term in KIND_TERMS[trainer.members[k].objective.kind]},
            "active_latents": int(sum(kl > ACTIVE_KL_NATS for kl in kl_per_latent)),
            "kl_per_latent": kl_per_latent,
            "steps_per_second": float(np.median([row["steps_per_second"] for row in history])),
            "train_seconds": self.seconds,
            "data_source": self.dataset.manifest.source,  # official or procedural shards
            **collapse_record(history),  # collapsed: the code ignores the image (bvae.collapse)
            **extra,
        }
        write_json(files.summary, summary)
        return summary

    def log_outputs(self, files: list[RunFiles], summaries: list[dict]) -> None:
        """Log each member's final figures, model and files to its run and end it (then the
        parent's). A lost server: the runs are marked FAILED and the error says how to retry."""
        if not self.world.is_main:
            return
        try:
            for k, (member_files, summary) in enumerate(zip(files, summaries, strict=True)):
                if self.curves[k].lost is not None:
                    raise self.curves[k].lost
                self._log_member(k, member_files, summary)
            if self.owns_parent:
                tracking.log_metrics(
                    self.parent,
                    metric_names.summary_metrics(
                        {"train_seconds": self.seconds, "members": self.trainer.size}
                    ),
                )
                tracking.end_run(self.parent)
        except tracking.TrackingError as error:
            if len(files) == 1:
                saved = f"{files[0].model}, {self.checkpoint} and {files[0].summary.parent}/ are saved"
            else:
                saved = (
                    f"{files[0].model.parent.parent}/ ({len(files)} members) and {self.checkpoint} are saved"
                )
            raise tracking.TrackingError(
                f"{error}. Training finished: {saved}. When the server answers again, rerun "
                "`dvc repro` (or the stage's `bvae` command): it logs the runs to MLflow without "
                "training again."
            ) from None

    def _log_member(self, k: int, files: RunFiles, summary: dict) -> None:
        run, model = self.runs[k], self.trainer.models[k]
        tracking.set_tags(run, {"collapsed": str(summary["collapsed"]).lower()})
        model.eval().cpu()  # exported for CPU; torch moves it where the consumer wants
        example = self.dataset.images[:2].astype(np.float32)[:, None]  # what the served model accepts
        model_uri, model_id = log_torch_model(
            run,
            model,
            example,
            pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", f"numpy=={np.__version__}"],
        )
        for path in (files.curves, files.summary):
            tracking.log_artifact(run, path, "training")
        tracking.log_artifact(run, files.model, "model_file")  # what `bvae pull` verifies and loads
        # After the model: MLflow links the run's step-0 metrics to a model logged after them,
        # and the model's page lists its evaluation, not the training summary.
        kind = self.members[k].params.objective.kind
        tracking.log_metrics(run, metric_names.summary_metrics(summary, kind))
        tracking.write_run_file(run, files.run_file, model_uri=model_uri, model_id=model_id)
        tracking.end_run(run)
        log.info(
            "done%s: loss %.1f, reconstruction %.1f, KL %.2f, %d active latents%s; MLflow run %s",
            f" ({self.members[k].name})" if self.members[k].name else "",
            summary["loss"],
            summary["reconstruction"],
            summary["kl"],
            summary["active_latents"],
            " (COLLAPSED: the code ignores the image)" if summary["collapsed"] else "",
            run.run_id,
        )

    # -- the context ------------------------------------------------------------------------
    def __enter__(self) -> TrackedTraining:
        return self

    def __exit__(self, kind, error, traceback) -> None:
        if error is not None:
            status = "FAILED" if isinstance(error, Exception) else "KILLED"
            for run in (*self.runs, self.parent if self.owns_parent else None):
                if run is not None:
                    end_run_if_possible(run, status)
            return
        if self.world.is_main and self.last_checkpoint:  # a rerun of a changed stage trains afresh
            logged_rows = [curve.logged_rows for curve in self.curves]
            save_checkpoint(
                {**self.last_checkpoint, "logged_rows": logged_rows, "model_logged": True}, self.checkpoint
            )
        distributed.barrier(self.world)


def run_train(
    params: Params,
    files: RunFiles = RunFiles(),
    *,
    shards: Path = SHARDS,
    checkpoint: Path = CHECKPOINT,
    fresh: bool = False,
    show_progress: bool = True,
) -> dict:
    """Stage ``train``: one model (under ``torchrun``, one model on every rank). Returns its
    summary (other ranks: an empty dict). ``fresh`` forgets the checkpoint first."""
    world = distributed.world_from_env()
    # What can fail in a second fails before the 2.8 GiB load: the runtime and the server.
    runtime = runtimes.decide(params.train, params.model, world=world, kinds=[params.objective.kind])
    if world.is_main:
        tracking.check_tracking_server()
        check_writable(path.parent for path in (files.model, files.run_file, files.curves, checkpoint))
    if fresh and world.is_main:
        remove_checkpoint(checkpoint)
    dataset = load_dataset(shards, show_progress=show_progress and world.is_main)
    try:
        member = MemberRun(params, files=files)
        with TrackedTraining(
            params, [member], runtime, dataset, checkpoint, shards, show_progress=show_progress
        ) as training:
            training.train()
            summaries = training.write_outputs([files])
            training.log_outputs([files], summaries)
        return summaries[0] if summaries else {}
    finally:
        distributed.shutdown()


def run_sweep_train(
    params: Params, paths: SweepPaths = SweepPaths(), *, fresh: bool = False, show_progress: bool = True
) -> dict:
    """Stage ``sweep-train`` (``sweeps/dvc.yaml``): ``sweep.grid`` trained as one ensemble.

    Every member gets a single run's files in ``sweeps/train/<member>/`` (the folder is
    replaced as a whole) and a child MLflow run under one parent run for the sweep: this
    stage's, or the one ``BVAE_MLFLOW_PARENT_RUN_ID`` names (a Prefect sweep's: one parent for
    the whole sweep, ensembles and single points alike). ``sweeps/checkpoint.pt`` lets a killed
    run resume every member. Returns the summaries by member name."""
    members = sweep_members(params)
    kinds = [member.params.objective.kind for member in members]
    runtime = runtimes.decide(params.train, params.model, len(members), params.sweep.mechanism, kinds=kinds)
    tracking.check_tracking_server()
    check_writable([paths.train.parent, paths.checkpoint.parent])
    if fresh:
        remove_checkpoint(paths.checkpoint)
    dataset = load_dataset(paths.shards, show_progress=show_progress)
    name = os.environ.get("DVC_EXP_NAME") or "sweep"
    parent = ParentRun(
        params={
            "sweep.grid": json.dumps(params.sweep.grid),
            "members": len(members),
            **params.model_dump(mode="json", include={"model", "train"}),
        },
        tags={
            "bvae.kind": "sweep",
            "bvae.sweep": name,
            "data_digest": dataset.manifest.digest,
            "data_source": dataset.manifest.source,
        },
        name=name,
        given=os.environ.get(tracking.PARENT_RUN_ENV) or None,
    )
    runs = [
        MemberRun(m.params, name=m.name, tags={"bvae.sweep": name, "bvae.sweep_member": m.name})
        for m in members
    ]
    with TrackedTraining(
        params, runs, runtime, dataset, paths.checkpoint, paths.shards, parent, show_progress
    ) as training:
        training.train()
        with atomic_path(paths.train, directory=True) as staging:
            summaries = training.write_outputs(
                [paths.member(m.name, train=staging) for m in members], ensemble_members=len(members)
            )
            entries = [
                {"name": m.name, "point": m.point, "run_id": run.run_id, "experiment_id": run.experiment_id}
                for m, run in zip(members, training.runs, strict=True)
            ]
            record = {
                "parent_run_id": training.parent.run_id,
                "parent_run_given": parent.given is not None,  # then its owner compares the sweep
                "members": entries,
            }
            write_json(staging / SWEEP_FILE, record)
            tracking.write_run_file(training.parent, staging / PARENT_RUN_FILE)
        training.log_outputs([paths.member(m.name) for m in members], summaries)
    return {m.name: summary for m, summary in zip(members, summaries, strict=True)}
