"""Stage ``train``: ``models/model.pt``, training curves, and an MLflow run.

Checkpoints go to ``models/checkpoint.pt`` every ``train.checkpoint_every`` steps (atomically).
Rerunning after a kill resumes from it, and reopens the same MLflow run, provided the
checkpoint was made with the same model/objective/train params and the same data; otherwise
training starts afresh.
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
from bvae.config import Params
from bvae.data.shards import load_dataset
from bvae.fileio import atomic_path, write_json
from bvae.training import Trainer, load_trusted, save_atomic

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


def _resumable(checkpoint: Path, config: dict, data_digest: str) -> dict | None:
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
    if state["step"] >= config["train"]["steps"]:
        # A finished run is not resumed: DVC reruns this stage because something changed
        # (code, for instance), so train afresh.
        log.info("checkpoint %s is of a finished run; training from scratch", checkpoint)
        return None
    return state


def run_train(params: Params, paths: TrainPaths = TrainPaths(), *, show_progress: bool = True) -> dict:
    """Train (or resume), write the model, curves and summary, and track it all in MLflow.

    Under ``torchrun`` every rank trains; rank 0 alone decides the resume, logs to MLflow and
    writes the checkpoint and the outputs. Other ranks return an empty summary.
    """
    world = distributed.world_from_env()
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
    state = _resumable(paths.checkpoint, trainer.config_dict(), digest) if world.is_main else None
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

    def on_log(row: dict[str, float]) -> None:
        if run is not None:
            tracking.log_metrics(run, {k: v for k, v in row.items() if k != "step"}, step=int(row["step"]))

    def on_checkpoint(current: Trainer) -> None:
        payload = current.state_dict()  # a collective under DDP: every rank takes part
        if run is not None:
            save_atomic({**payload, "data_digest": digest, "mlflow_run_id": run.run_id}, paths.checkpoint)
            write_curves(current.history, paths.curves)

    started = time.perf_counter()
    try:
        trainer.train(on_log=on_log, on_checkpoint=on_checkpoint, show_progress=show_progress)
    except Exception:
        if run is not None:
            tracking.end_run(run, "FAILED")
        raise
    except BaseException:  # Ctrl-C or a termination signal turned into SystemExit
        if run is not None:
            tracking.end_run(run, "KILLED")
        raise
    seconds = time.perf_counter() - started
    if run is None:
        distributed.barrier(world)
        return {}
    summary = finish(trainer, run, dataset.images, paths, digest, seconds)
    distributed.barrier(world)
    return summary


def finish(
    trainer: Trainer,
    run: tracking.RunHandle,
    images: np.ndarray,
    paths: TrainPaths,
    digest: str,
    seconds: float,
) -> dict:
    """Write the final model, curves and summary; log the model and files to the run."""
    # Back to the standard layout: what we save and export must not depend on channels_last.
    trainer.model.to(memory_format=torch.contiguous_format)
    model_file = {
        "format": 1,
        "config": trainer.config_dict(),
        "state_dict": trainer.model.state_dict(),
        "step": trainer.step,
        "data_digest": digest,
        "mlflow_run_id": run.run_id,
    }
    save_atomic(model_file, paths.model)
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
    }
    write_json(paths.summary, summary)
    tracking.log_metrics(
        run,
        {"final_" + key: value for key, value in summary.items() if isinstance(value, int | float)},
        step=trainer.step,
    )
    trainer.model.eval().cpu()  # exported for CPU; torch moves it where the consumer wants
    example = images[:2].astype(np.float32)[:, None]  # batch 2: pt2 export must not fix batch 1
    model_uri = tracking.log_torch_model(
        run,
        trainer.model,
        example,
        pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", f"numpy=={np.__version__}"],
    )
    for path in (paths.curves, paths.summary):
        tracking.log_artifact(run, path, "training")
    tracking.log_artifact(run, paths.model, "model_file")  # what `bvae pull` verifies and loads
    tracking.write_run_file(run, paths.run_file, model_uri=model_uri)
    tracking.end_run(run)
    log.info(
        "done: loss %.1f, reconstruction %.1f, KL %.2f, %d active latents; MLflow run %s",
        summary["loss"],
        summary["reconstruction"],
        summary["kl"],
        summary["active_latents"],
        run.run_id,
    )
    return summary


def remove_checkpoint(paths: TrainPaths = TrainPaths()) -> None:
    """Forget the resumable state (``bvae train --fresh``)."""
    if paths.checkpoint.exists():
        os.remove(paths.checkpoint)
