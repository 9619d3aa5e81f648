"""Stage ``train``: ``models/model.pt``, training curves, and an MLflow run.

Checkpoints go to ``models/checkpoint.pt`` every ``train.checkpoint_every`` steps (atomically).
Rerunning after a kill resumes from it, and reopens the same MLflow run, provided the
checkpoint was made with the same model/objective/train params and the same data; otherwise
training starts afresh.

Training never depends on the tracking server to keep its result. If the server stops
answering, training goes on; the curve rows wait in the checkpoint (``logged_rows`` says how
many MLflow has), the model and reports are written, the run is marked FAILED if the server
can still hear it, and the stage exits 75 (retry later). The rerun finds the finished
checkpoint with ``model_logged`` false and logs the rest without training again.
"""

from __future__ import annotations

import csv
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from bvae import distributed, tracking
from bvae.collapse import CollapseWatch, collapse_record
from bvae.config import Params
from bvae.data.shards import load_dataset
from bvae.fileio import atomic_path, write_json
from bvae.model_file import save_model_file
from bvae.models import select_device
from bvae.tracking.flavour import log_torch_model
from bvae.training import Trainer, graphs_wanted, load_trusted, save_atomic

log = logging.getLogger(__name__)

# A latent whose average KL stays under this carries (almost) no information: "inactive".
ACTIVE_KL_NATS = 0.1


@dataclass(frozen=True)
class TrainPaths:
    shards: Path = Path("data/shards")
    model: Path = Path("models/model.pt")
    checkpoint: Path = Path("models/checkpoint.pt")
    run_file: Path = tracking.RUN_FILE
    curves: Path = Path("reports/train/curves.csv")
    summary: Path = Path("reports/train/summary.json")


def write_curves(rows: list[dict[str, float]], path: Path) -> None:
    """The curve rows as CSV (what ``dvc plots`` reads), written atomically."""
    if not rows:
        return
    with atomic_path(path) as temporary, open(temporary, "w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def resumable_state(checkpoint: Path, config: dict, data_digest: str, steps: int) -> dict | None:
    """The checkpoint's state if training with ``config`` on ``data_digest`` should resume from
    it (or only log a finished run MLflow has not got yet); ``None`` to train afresh."""
    if not checkpoint.exists():
        return None
    try:
        state = load_trusted(checkpoint)
    except Exception as error:  # noqa: BLE001 - an unreadable checkpoint is just not resumed
        log.warning("ignoring unreadable checkpoint %s (%s)", checkpoint, error)
        return None
    if state.get("config") != config or state.get("data_digest") != data_digest:
        log.info("checkpoint %s is from other params or data; training from scratch", checkpoint)
        return None
    if state["step"] >= steps:
        if state.get("model_logged") is False:
            log.info("checkpoint %s is of a finished run not yet logged to MLflow: logging it", checkpoint)
            return state
        # A finished, logged run is not resumed: DVC reruns this stage because something
        # changed (code, for instance), so train afresh.
        log.info("checkpoint %s is of a finished run; training from scratch", checkpoint)
        return None
    return state


class CurveLog:
    """Curve rows to MLflow while the server answers. After the first failure it stops trying
    (each try would wait for retries) and training goes on; ``logged_rows`` is kept in the
    checkpoint so the rerun logs the rest."""

    def __init__(self, run: tracking.RunHandle | None, logged_rows: int):
        self.run, self.logged_rows, self.lost = run, logged_rows, None

    def catch_up(self, history: list[dict[str, float]]) -> None:
        if self.run is None or self.lost is not None:
            return
        try:
            for row in history[self.logged_rows :]:
                metrics = {key: value for key, value in row.items() if key != "step"}
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


def run_train(
    params: Params, paths: TrainPaths = TrainPaths(), *, fresh: bool = False, show_progress: bool = True
) -> dict:
    """Train (or resume), write the model, curves and summary, and track it all in MLflow.

    Under ``torchrun`` every rank trains; rank 0 alone decides the resume, logs to MLflow and
    writes the checkpoint and the outputs. Other ranks return an empty summary. ``fresh``
    forgets the checkpoint first (``bvae train --fresh``).
    """
    world = distributed.world_from_env()
    # What can fail in a second fails before the 2.8 GiB load: the device and the server.
    graphs_wanted(params.train, select_device(params.train.device, "train.device"), world.distributed)
    if world.is_main:
        tracking.check_tracking_server()
    if fresh and world.is_main:
        remove_checkpoint(paths)
    dataset = load_dataset(paths.shards, show_progress=show_progress and world.is_main)
    trainer = Trainer(params.model, params.objective, params.train, dataset.images, world)
    try:
        return _train_ranks(params, paths, trainer, dataset, show_progress and world.is_main)
    finally:
        distributed.shutdown()


def _train_ranks(params: Params, paths: TrainPaths, trainer: Trainer, dataset, show_progress: bool) -> dict:
    world, digest = trainer.world, dataset.manifest.digest
    log.info(
        "training %s β-VAE (%s objective) on %s for %d steps%s",
        params.model.architecture,
        params.objective.kind,
        trainer.device,
        params.train.steps,
        f" (rank {world.rank} of {world.size})" if world.distributed else "",
    )
    state = (
        resumable_state(paths.checkpoint, trainer.config_dict(), digest, params.train.steps)
        if world.is_main
        else None
    )
    state = distributed.broadcast(state, world)
    if state is not None:
        trainer.load_state_dict(state)
        log.info("resuming from %s at step %d", paths.checkpoint, trainer.step)
    run = None
    if world.is_main:
        run = tracking.start_run(
            params.tracking.experiment,
            params.model_dump(mode="json"),
            tags={
                "objective": params.objective.kind,
                "architecture": params.model.architecture,
                "data_source": dataset.manifest.source,
                "data_digest": digest,
                "world_size": str(world.size),
            },
            resume_run_id=state.get("mlflow_run_id") if state else None,
        )
        if state is None:
            tracking.log_dataset(
                run,
                paths.shards / "manifest.json",
                digest,
                dataset.manifest.source,
                dataset.manifest.num_images,
            )
        tracking.write_run_file(run, paths.run_file)

    curves = CurveLog(run, state.get("logged_rows", len(state["history"])) if state else 0)
    curves.catch_up(trainer.history)  # rows a lost server missed before the last checkpoint
    watch = CollapseWatch()
    watch.catch_up(trainer.history)

    def on_log(row: dict[str, float]) -> None:
        curves.catch_up(trainer.history)
        if world.is_main:
            watch.catch_up(trainer.history)

    last_checkpoint: dict = dict(state) if state else {}  # a log-only rerun saves no new one

    def on_checkpoint(current: Trainer) -> None:
        payload = current.state_dict()  # a collective under DDP: every rank takes part
        if run is not None:
            last_checkpoint.update(
                payload,
                data_digest=digest,
                mlflow_run_id=run.run_id,
                logged_rows=curves.logged_rows,
                model_logged=False,
            )
            save_atomic(last_checkpoint, paths.checkpoint)
            write_curves(current.history, paths.curves)

    started = time.perf_counter()
    try:
        trainer.train(
            on_log=on_log,
            on_checkpoint=on_checkpoint,
            show_progress=show_progress,
        )
    except Exception:
        if run is not None:
            end_run_if_possible(run, "FAILED")
        raise
    except BaseException:  # Ctrl-C or a termination signal turned into SystemExit
        if run is not None:
            end_run_if_possible(run, "KILLED")
        raise
    seconds = time.perf_counter() - started
    if run is None:
        distributed.barrier(world)
        return {}
    summary = write_outputs(trainer, paths, digest, run.run_id, seconds, dataset.manifest.source)
    try:
        if curves.lost is not None:
            raise curves.lost
        log_finished_run(trainer, run, summary, dataset.images, paths)
    except tracking.TrackingError as error:
        end_run_if_possible(run, "FAILED")
        raise tracking.TrackingError(
            f"{error}. Training finished: {paths.model}, {paths.checkpoint} and "
            f"{paths.summary.parent}/ are saved. When the server answers again, rerun "
            "`dvc repro` (or `bvae train`): it logs this run to MLflow without training again."
        ) from None
    if last_checkpoint:  # the rerun of a changed stage trains afresh, not "logs" again
        save_atomic(
            {**last_checkpoint, "logged_rows": curves.logged_rows, "model_logged": True}, paths.checkpoint
        )
    distributed.barrier(world)
    return summary


def write_outputs(
    trainer: Trainer, paths: TrainPaths, digest: str, run_id: str, seconds: float, data_source: str
) -> dict:
    """Write the final model, curves and summary: the result, whatever MLflow does next."""
    # Back to the standard layout: what we save and export must not depend on channels_last.
    trainer.model.to(memory_format=torch.contiguous_format)
    save_model_file(
        paths.model,
        config=trainer.config_dict(),
        state_dict=trainer.model.state_dict(),
        step=trainer.step,
        data_digest=digest,
        mlflow_run_id=run_id,
    )
    write_curves(trainer.history, paths.curves)
    last = trainer.history[-1]
    kl_per_latent = [last[f"kl_z{k}"] for k in range(trainer.model_config.latent_dim)]
    rates = [row["steps_per_second"] for row in trainer.history]
    summary = {
        "step": trainer.step,
        "loss": last["loss"],
        "reconstruction": last["reconstruction"],
        "kl": last["kl"],
        "capacity": last["capacity"],
        "active_latents": int(sum(kl > ACTIVE_KL_NATS for kl in kl_per_latent)),
        "kl_per_latent": kl_per_latent,
        "steps_per_second": float(np.median(rates)),
        "train_seconds": seconds,
        "data_source": data_source,  # official or procedural: what the shards were made from
        **collapse_record(trainer.history),  # collapsed: the code ignores the image (bvae.collapse)
    }
    write_json(paths.summary, summary)
    return summary


def log_finished_run(
    trainer: Trainer, run: tracking.RunHandle, summary: dict, images: np.ndarray, paths: TrainPaths
) -> None:
    """Log the final figures, the model and the files to the run, and end it."""
    tracking.log_metrics(
        run,
        {
            "final_" + key: value
            for key, value in summary.items()
            if isinstance(value, int | float) and not isinstance(value, bool)
        },
        step=trainer.step,
    )
    tracking.set_tags(run, {"collapsed": str(summary["collapsed"]).lower()})
    trainer.model.eval().cpu()  # exported for CPU; torch moves it where the consumer wants
    example = images[:2].astype(np.float32)[:, None]  # binary images: what the served model accepts
    model_uri, model_id = log_torch_model(
        run,
        trainer.model,
        example,
        pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", f"numpy=={np.__version__}"],
    )
    for path in (paths.curves, paths.summary):
        tracking.log_artifact(run, path, "training")
    tracking.log_artifact(run, paths.model, "model_file")  # what `bvae pull` verifies and loads
    tracking.write_run_file(run, paths.run_file, model_uri=model_uri, model_id=model_id)
    tracking.end_run(run)
    log.info(
        "done: loss %.1f, reconstruction %.1f, KL %.2f, %d active latents%s; MLflow run %s",
        summary["loss"],
        summary["reconstruction"],
        summary["kl"],
        summary["active_latents"],
        " (COLLAPSED: the code ignores the image)" if summary["collapsed"] else "",
        run.run_id,
    )


def remove_checkpoint(paths: TrainPaths = TrainPaths()) -> None:
    """Forget the resumable state (``bvae train --fresh``)."""
    if paths.checkpoint.exists():
        os.remove(paths.checkpoint)
