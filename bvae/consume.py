"""Using registered models: pull one with its card, load it, encode images with it.

Nothing pulled from a registry is unpickled: ``model.pt`` loads with
``torch.load(weights_only=True)`` and the MLflow model is in the pickle-free ``pt2`` format.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

from bvae.fileio import atomic_path, file_digest
from bvae.model_file import load_model, weights_digest
from bvae.models import BetaVAE
from bvae.representations import torch_encoder
from bvae.tracking import registry

log = logging.getLogger(__name__)

MODEL_FILE_ARTIFACT = "model_file/model.pt"


class PullError(RuntimeError):
    """What was downloaded does not match what the registry recorded."""


def _card_markdown(card: dict) -> str:
    version = card["version"]
    lines = [
        f"# {version['name']} version {version['version']}",
        "",
        f"Aliases: {', '.join('@' + a for a in version['aliases']) or 'none'}.",
        f"MLflow run `{version['run_id']}`.",
        "",
        "## Lineage",
        *(f"- {key}: `{value}`" for key, value in sorted(version["tags"].items())),
        "",
        "## Metrics",
        *(
            f"- {key}: {value:.4g}"
            for key, value in sorted(card["metrics"].items())
            if not key.startswith("eval.seconds")
        ),
        "",
        "## Params",
        *(f"- {key}: `{value}`" for key, value in sorted(card["params"].items())),
        "",
    ]
    return "\n".join(lines)


def pull(reference: str, out_dir: str | os.PathLike) -> Path:
    """Download ``NAME@ALIAS`` / ``NAME/VERSION``: weights + config, MLflow model, model card."""
    version = registry.resolve(reference)
    out_dir = Path(out_dir)
    with atomic_path(out_dir, directory=True) as staging:
        registry.download_model(f"models:/{version.name}/{version.version}", staging / "mlflow_model")
        downloaded = registry.download_run_artifact(version.run_id, MODEL_FILE_ARTIFACT, staging / "weights")
        os.replace(downloaded, staging / "model.pt")
        shutil.rmtree(staging / "weights", ignore_errors=True)
        expected_file = version.tags.get("model_file_sha256")
        actual_file = file_digest(staging / "model.pt")
        if expected_file and actual_file != expected_file:
            raise PullError(
                f"downloaded model.pt has SHA-256 {actual_file}, the registry recorded {expected_file}"
            )
        model = load_model(staging / "model.pt")
        if weights_digest(model) != version.tags.get("weights_digest"):
            raise PullError("the downloaded weights do not match the registered weights digest")
        summary = registry.run_summary(version.run_id)
        card = {
            "version": {
                "name": version.name,
                "version": version.version,
                "aliases": list(version.aliases or []),
                "run_id": version.run_id,
                "source": version.source,
                "tags": dict(version.tags),
            },
            "metrics": summary["metrics"],
            "params": summary["params"],
        }
        (staging / "card.json").write_text(json.dumps(card, indent=2) + "\n")
        (staging / "MODEL_CARD.md").write_text(_card_markdown(card))
    log.info("pulled %s version %s into %s (verified)", version.name, version.version, out_dir)
    return out_dir


def load(reference: str | os.PathLike) -> BetaVAE:
    """A model from a pulled folder, a ``model.pt`` file, or ``models:/NAME@ALIAS`` (pulled to a temp dir)."""
    path = Path(str(reference))
    if path.is_dir():
        return load_model(path / "model.pt")
    if path.is_file():
        return load_model(path)
    with tempfile.TemporaryDirectory() as folder:
        return load_model(pull(str(reference), Path(folder) / "model") / "model.pt")


def read_images(path: str | os.PathLike) -> tuple[np.ndarray, list[str]]:
    """Images as float32 ``(n, 64, 64)`` in [0, 1] from an npz (``imgs``), an npy, or a PNG folder."""
    path = Path(path)
    if path.is_dir():
        from PIL import Image

        files = sorted(p for p in path.iterdir() if p.suffix.lower() == ".png")
        if not files:
            raise FileNotFoundError(f"{path} holds no .png files")
        images = np.stack([np.asarray(Image.open(p).convert("L"), dtype=np.float32) / 255.0 for p in files])
        names = [p.name for p in files]
    elif path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as archive:
            key = "imgs" if "imgs" in archive.files else archive.files[0]
            images = archive[key].astype(np.float32)
        names = [str(i) for i in range(len(images))]
    elif path.suffix == ".npy":
        images = np.load(path, allow_pickle=False).astype(np.float32)
        names = [str(i) for i in range(len(images))]
    else:
        raise ValueError(f"{path}: give an .npz (key imgs), an .npy, or a folder of PNGs")
    if images.ndim == 4 and images.shape[1] == 1:
        images = images[:, 0]
    if images.ndim != 3 or images.shape[1:] != (64, 64):
        raise ValueError(f"{path}: expected 64×64 images, got shape {images.shape}")
    if images.max() > 1.0:
        images = images / 255.0
    return images, names


def encode(model: BetaVAE, images: np.ndarray, batch_size: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Posterior means and log-variances of float ``(n, 64, 64)`` images in [0, 1], on the CPU."""
    return torch_encoder(model, torch.device("cpu"), batch_size)(images)
