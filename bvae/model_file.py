"""``models/model.pt``: the final weights with their config, loaded without unpickling code."""

from __future__ import annotations

import os
from pathlib import Path

from bvae.models import BetaVAE, ModelConfig
from bvae.training import load_trusted


def load_model(path: str | os.PathLike) -> BetaVAE:
    """The trained model (``torch.load(weights_only=True)``: tensors and plain data only)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: run the train stage first (`dvc repro train`).")
    state = load_trusted(path)
    model = BetaVAE(ModelConfig(**state["config"]["model"]))
    model.load_state_dict(state["state_dict"])
    return model.eval()
