"""``models/model.pt``, the one home of the model file: saved, loaded, version-checked, digested.

A ``torch.save`` dict of tensors and plain data (``format``, ``config`` with the model,
objective and train sections, ``state_dict``, ``step``, ``data_digest``, ``mlflow_run_id``),
loaded with ``weights_only=True``: nothing in it can run code. Every way a file can fail to
be one ends in a one-line :class:`ModelFileError` that says what the file is not.

Formats: 2 records ``model.init`` (the initial weights, bvae.models.initialise); 1 predates
it, and every format-1 model was initialised as ``pytorch``, which reading one says.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
from pathlib import Path

import torch

from bvae.errors import BadInput
from bvae.fileio import atomic_path
from bvae.models import BetaVAE, ModelConfig

MODEL_FILE_FORMAT = 2
# Formats this version reads, each upgraded to the current one's meaning on load.
READABLE_FORMATS = (1, 2)
# Before format 2 there was no model.init: every model had PyTorch's default initialisation.
FORMAT_1_INIT = "pytorch"


class ModelFileError(BadInput, ValueError):
    """A path that is not a bvae model file this version can read."""


class MissingModelFile(BadInput, FileNotFoundError):
    """The model file is not there (yet): the train stage makes it."""


def save_model_file(
    path: str | os.PathLike,
    *,
    config: dict,
    state_dict: dict,
    step: int,
    data_digest: str,
    mlflow_run_id: str | None,
) -> None:
    """Write the model file atomically (a temporary sibling, then a rename)."""
    payload = {
        "format": MODEL_FILE_FORMAT,
        "config": config,
        "state_dict": state_dict,
        "step": step,
        "data_digest": data_digest,
        "mlflow_run_id": mlflow_run_id,
    }
    with atomic_path(path) as temporary:
        torch.save(payload, temporary)


def _load(path: Path) -> object:
    if path.is_dir():
        raise ModelFileError(f"{path} is a folder, not a model file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        if "Weights only load failed" in str(error):
            raise ModelFileError(
                f"{path} is not a bvae model file: it holds pickled Python objects, which bvae "
                "never unpickles (they can run code). Use a model.pt written by `bvae train`."
            ) from None
        raise ModelFileError(f"{path} is not a bvae model file (not a readable torch.save file)") from None
    except PermissionError as error:
        raise ModelFileError(f"{path} cannot be read: {error.strerror}") from None
    except Exception as error:  # noqa: BLE001 - torch's unpickler raises anything on garbage
        # (KeyError: 101 for a text file, EOFError for an empty one, zip errors...)
        raise ModelFileError(
            f"{path} is not a bvae model file (not a readable torch.save file: "
            f"{type(error).__name__} {str(error).splitlines()[0] if str(error) else ''})"
        ) from None


def read_model_file(path: str | os.PathLike) -> dict:
    """The model file's contents, checked: format version, config sections and weights."""
    path = Path(path)
    if not path.exists():
        raise MissingModelFile(f"{path} not found: run the train stage first (`dvc repro train`).")
    state = _load(path)
    if not isinstance(state, dict) or "format" not in state or "state_dict" not in state:
        found = sorted(state)[:6] if isinstance(state, dict) else type(state).__name__
        raise ModelFileError(
            f"{path} is not a bvae model file (found {found}; a model file holds format, "
            "config and state_dict). A training checkpoint is models/checkpoint.pt, not model.pt."
        )
    if state["format"] not in READABLE_FORMATS:
        raise ModelFileError(
            f"{path} is model file format {state['format']!r}; this bvae reads formats "
            f"{', '.join(map(str, READABLE_FORMATS))}. Retrain it (`dvc repro train`) or use the "
            "bvae that wrote it."
        )
    config = state.get("config")
    sections = ("model", "objective")
    if not isinstance(config, dict) or not all(isinstance(config.get(key), dict) for key in sections):
        raise ModelFileError(f"{path} is not a bvae model file: its config lacks the model and objective")
    if state["format"] == 1:
        state["config"] = {**config, "model": {**config["model"], "init": FORMAT_1_INIT}}
    return state


def model_from_state(state: dict, source: str | os.PathLike = "the model file") -> BetaVAE:
    """The model held by a read model file (its config and weights)."""
    try:
        model = BetaVAE(ModelConfig(**state["config"]["model"]))
        model.load_state_dict(state["state_dict"])
    except (TypeError, ValueError, RuntimeError) as error:
        reason = str(error).splitlines()[0]
        raise ModelFileError(
            f"{source}: its config and weights do not make a bvae model ({reason})"
        ) from None
    return model.eval()


def load_model(path: str | os.PathLike) -> BetaVAE:
    """The trained model of a model file."""
    return model_from_state(read_model_file(path), path)


def weights_digest(model: BetaVAE) -> str:
    """SHA-256 over the config and every tensor in name order: equal weights, equal digest.

    (The bytes of a ``torch.save`` file are not a stable identity across torch versions.)
    ``model.init`` is left out: it says how training started, not what the weights compute, so
    a model registered before it existed keeps its digest.
    """
    architecture = {key: value for key, value in model.config.to_dict().items() if key != "init"}
    digest = hashlib.sha256(json.dumps(architecture, sort_keys=True).encode())
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()
