"""``models/model.pt``: the final weights with their config, loaded without unpickling code."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from bvae.models import BetaVAE, ModelConfig
from bvae.training import load_trusted


def load_model(path: str | os.PathLike) -> BetaVAE:
    """The trained model (``torch.load(weights_only=True)``: tensors and plain data only)."""
    return model_from_state(read_model_file(path))


def read_model_file(path: str | os.PathLike) -> dict:
    """The model file's contents: config (model, objective, train), weights, step, lineage."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: run the train stage first (`dvc repro train`).")
    return load_trusted(path)


def model_from_state(state: dict) -> BetaVAE:
    """The model held by a loaded model file (its config and weights)."""
    model = BetaVAE(ModelConfig(**state["config"]["model"]))
    model.load_state_dict(state["state_dict"])
    return model.eval()


def weights_digest(model: BetaVAE) -> str:
    """SHA-256 over the config and every tensor in name order: equal weights, equal digest.

    (The bytes of a ``torch.save`` file are not a stable identity across torch versions.)
    """
    digest = hashlib.sha256(json.dumps(model.config.to_dict(), sort_keys=True).encode())
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()
