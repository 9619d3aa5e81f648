"""Stage ``sweep-train`` (``sweeps/dvc.yaml``): ``sweep.grid`` trained as one ensemble.

Every member gets a single run's files in ``sweeps/train/<member>/`` (model file, run file,
curves, summary) and a child MLflow run with everything a single run's has, under one parent
run for the sweep. ``sweeps/checkpoint.pt`` (not a DVC output, as for ``train``) lets a killed
run resume every member; a rerun after the training finished but MLflow failed only logs.
"""

from __future__ import annotations

import json
import logging
import os
import time

from bvae import tracking
from bvae.collapse import CollapseWatch
from bvae.config import Params, ParamsError
from bvae.data.shards import load_dataset
from bvae.ensemble import EnsembleTrainer, Member
from bvae.fileio import atomic_path, write_json
from bvae.models import select_device
from bvae.stages.sweep_files import PARENT_RUN_FILE, SWEEP_FILE, SweepPaths, member_train_paths
from bvae.stages.train import (
    CurveLog,
    TrainPaths,
    end_run_if_possible,
    log_finished_run,
    resumable_state,
    write_outputs,
)
from bvae.sweep import SweepMember, sweep_members
from bvae.training import graphs_wanted, save_atomic

log = logging.getLogger(__name__)


class MemberView:
    """One member seen as a single run's trainer: what ``write_outputs`` and
    ``log_finished_run`` read, so a member's files and MLflow run are a single run's."""

    def __init__(self, trainer: EnsembleTrainer, k: int):
        self.model, self.model_config, self.step = trainer.models[k], trainer.model_config, trainer.step
        self.history, self._config = trainer.histories[k], trainer.member_config(k)

    def config_dict(self) -> dict:
        return self._config


def run_sweep_train(
    params: Params, paths: SweepPaths = SweepPaths(), *, fresh: bool = False, show_progress: bool = True
) -> dict:
    """Train every member of ``sweep.grid`` as one ensemble (or resume it), write each member's
    files, and track the sweep in MLflow as a parent run with one child run per member."""
    members = sweep_members(params)
    graphs_wanted(params.train, select_device(params.train.device, "train.device"), distributed=False)
    if params.train.nproc != 1:
        raise ParamsError("train.nproc must be 1 for a sweep: an ensemble trains its members in one process")
    tracking.check_tracking_server()
    if fresh and paths.checkpoint.exists():
        paths.checkpoint.unlink()
    dataset = load_dataset(paths.shards, show_progress=show_progress)
    digest = dataset.manifest.digest
    trainer = EnsembleTrainer(
        params.model,
        [Member(m.params.objective, m.params.train) for m in members],
        dataset.images,
        params.sweep.mechanism,
    )
    config = {"members": trainer.config_dicts(), "names": [m.name for m in members]}
    state = resumable_state(paths.checkpoint, config, digest, params.train.steps)
    if state is not None:
        trainer.load_state_dict(state)
        log.info("resuming %d members from %s at step %d", trainer.size, paths.checkpoint, trainer.step)
    log.info(
        "training %d %s β-VAEs together (%s) on %s for %d steps: %s",
        trainer.size,
        params.model.architecture,
        trainer.mechanism,
        trainer.device,
        params.train.steps,
        ", ".join(m.name for m in members),
    )
    parent, runs = _start_runs(params, members, state, dataset, paths)
    logged = (
        list(state.get("logged_rows", [len(h) for h in trainer.histories])) if state else [0] * len(members)
    )
    curves = [CurveLog(run, rows) for run, rows in zip(runs, logged, strict=True)]
    watches = [CollapseWatch(f"member {member.name}") for member in members]
    last_checkpoint: dict = dict(state) if state else {}  # a log-only rerun saves no new one

    def on_log(current: EnsembleTrainer) -> None:
        for curve, watch, history in zip(curves, watches, current.histories, strict=True):
            curve.catch_up(history)
            watch.catch_up(history)

    def on_checkpoint(current: EnsembleTrainer) -> None:
        payload = {
            **current.state_dict(),
            "config": config,
            "data_digest": digest,
            "mlflow_run_id": parent.run_id,
            "member_run_ids": [run.run_id for run in runs],
            "logged_rows": [curve.logged_rows for curve in curves],
            "model_logged": False,
        }
        save_atomic(payload, paths.checkpoint)
        last_checkpoint.update(payload)

    on_log(trainer)  # rows a lost server missed before the last checkpoint
    started = time.perf_counter()
    try:
        trainer.train(
            on_log=on_log,
            on_checkpoint=on_checkpoint,
            show_progress=show_progress,
        )
        seconds = time.perf_counter() - started
        summaries = _write_and_log(trainer, members, runs, parent, paths, dataset, curves, seconds)
    except BaseException as error:
        status = "FAILED" if isinstance(error, Exception) else "KILLED"
        for run in (*runs, parent):
            end_run_if_possible(run, status)
        raise
    if last_checkpoint:  # a rerun of a changed stage trains afresh, not "logs" again
        logged_rows = [curve.logged_rows for curve in curves]
        save_atomic({**last_checkpoint, "logged_rows": logged_rows, "model_logged": True}, paths.checkpoint)
    return summaries


def _start_runs(params: Params, members: list[SweepMember], state: dict | None, dataset, paths: SweepPaths):
    """The parent run and one child run per member: reopened after a resume, else new."""
    digest, source = dataset.manifest.digest, dataset.manifest.source
    experiment = params.tracking.experiment
    name = os.environ.get("DVC_EXP_NAME") or "sweep"
    parent = tracking.start_run(
        experiment,
        {
            "sweep.grid": json.dumps(params.sweep.grid),
            "members": len(members),
            **params.model_dump(mode="json", include={"model", "train"}),
        },
        tags={"bvae.kind": "sweep", "bvae.sweep": name, "data_digest": digest, "data_source": source},
        run_name=name,
        resume_run_id=state.get("mlflow_run_id") if state else None,
    )
    resumed = state.get("member_run_ids") if state else None
    runs = []
    for k, member in enumerate(members):
        run = tracking.start_run(
            experiment,
            member.params.model_dump(mode="json"),
            tags={
                "mlflow.parentRunId": parent.run_id,
                "bvae.sweep": name,
                "bvae.sweep_member": member.name,
                "objective": member.params.objective.kind,
                "architecture": member.params.model.architecture,
                "data_source": source,
                "data_digest": digest,
                "world_size": "1",
            },
            run_name=member.name,
            resume_run_id=resumed[k] if resumed else None,
        )
        if not resumed:
            tracking.log_dataset(
                run, paths.shards / "manifest.json", digest, source, dataset.manifest.num_images
            )
        runs.append(run)
    return parent, runs


def _write_and_log(
    trainer, members, runs, parent, paths: SweepPaths, dataset, curves, seconds: float
) -> dict:
    """Each member's files (a single run's), its MLflow model and files; the sweep file."""
    digest, source = dataset.manifest.digest, dataset.manifest.source
    summaries: dict[str, dict] = {}
    with atomic_path(paths.train, directory=True) as staging:
        entries = []
        for k, (member, run) in enumerate(zip(members, runs, strict=True)):
            files = member_train_paths(staging, member.name)
            member_paths = TrainPaths(
                paths.shards, files.model, paths.checkpoint, files.run_file, files.curves, files.summary
            )
            view = MemberView(trainer, k)
            summary = write_outputs(view, member_paths, digest, run.run_id, seconds, source)
            summary["ensemble_members"] = trainer.size
            write_json(member_paths.summary, summary)
            if curves[k].lost is not None:
                raise curves[k].lost
            log_finished_run(view, run, summary, dataset.images, member_paths)
            summaries[member.name] = summary
            entries.append(
                {
                    "name": member.name,
                    "point": member.point,
                    "run_id": run.run_id,
                    "experiment_id": run.experiment_id,
                }
            )
        write_json(staging / SWEEP_FILE, {"parent_run_id": parent.run_id, "members": entries})
        tracking.write_run_file(parent, staging / PARENT_RUN_FILE)
    tracking.log_metrics(parent, {"train_seconds": seconds, "members": float(trainer.size)})
    tracking.end_run(parent)
    return summaries
