"""The training checkpoint: its one home (saved, loaded, format checked, the resume decision).

A checkpoint is :meth:`bvae.training.Trainer.state_dict` plus what the training stage needs
to pick its runs up again (the data digest, the MLflow run ids, how many curve rows MLflow
has, whether the models were logged). It is not a DVC output: a rerun after a kill finds it
and resumes. It is written atomically, so a kill never leaves half of one.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

from bvae.fileio import atomic_path

log = logging.getLogger(__name__)

# 2: one layout for one model or many (``members``); 1 was a single run's or an ensemble's own.
CHECKPOINT_FORMAT = 2


def save_checkpoint(state: dict, path: str | os.PathLike) -> None:
    """``torch.save`` to a temporary sibling, then rename."""
    with atomic_path(path) as temporary:
        torch.save({**state, "format": CHECKPOINT_FORMAT}, temporary)


def read_checkpoint(path: str | os.PathLike) -> dict:
    """A checkpoint's contents, loaded with ``weights_only=True``: tensors and plain data only."""
    return torch.load(Path(path), map_location="cpu", weights_only=True)


def resumable_state(path: Path, config: dict, data_digest: str, steps: int) -> dict | None:
    """The checkpoint's state if training with ``config`` on ``data_digest`` should resume from
    it (or only log a finished run MLflow has not got yet); ``None`` to train afresh."""
    if not path.exists():
        return None
    try:
        state = read_checkpoint(path)
    except Exception as error:  # noqa: BLE001 - an unreadable checkpoint is just not resumed
        log.warning("ignoring unreadable checkpoint %s (%s)", path, error)
        return None
    if state.get("format") != CHECKPOINT_FORMAT:
        log.warning(
            "checkpoint %s is format %s, this bvae resumes format %d (another version wrote it); "
            "training from scratch",
            path,
            state.get("format"),
            CHECKPOINT_FORMAT,
        )
        return None
    if state.get("config") != config or state.get("data_digest") != data_digest:
        log.info("checkpoint %s is from other params or data; training from scratch", path)
        return None
    if state["step"] >= steps:
        if state.get("model_logged") is False:
            log.info("checkpoint %s is of a finished run not yet logged to MLflow: logging it", path)
            return state
        # A finished, logged run is not resumed: DVC reruns the stage because something
        # changed (code, for instance), so train afresh.
        log.info("checkpoint %s is of a finished run; training from scratch", path)
        return None
    return state


def remove_checkpoint(path: Path) -> None:
    """Forget the resumable state (``bvae train --fresh``)."""
    if path.exists():
        os.remove(path)
