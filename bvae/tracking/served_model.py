"""The served model: an MLflow pyfunc (models from code) around the exported β-VAE.

MLflow copies this file into every logged model and runs it when the model is loaded, by
``mlflow models serve``, ``mlflow models predict`` or ``mlflow.pyfunc.load_model`` in a
consumer's process, which may have only mlflow, numpy and torch. So it imports nothing from
bvae. The network comes from the model's ``exported_program`` artifact, a ``torch.export``
archive: a graph and tensors, nothing unpickled.

Input: float32 images ``(n, 1, 64, 64)``, pixels 0 or 1 as in dSprites. The signature leaves
the input out on purpose: MLflow's tensor enforcement answers an empty batch with a message about
list types, so ``predict`` checks the input itself and names what it found.
Served over HTTP (``mlflow models serve``, or ``mlflow models predict``), a request holds at most
``MAX_SERVED_IMAGES`` images (``BVAE_SERVE_MAX_IMAGES`` changes it): a bigger one would outlast
the server's 60 s request timeout on a small CPU and end in a bare 504, so it gets a 400 that
says how to split it. In-process ``predict`` takes any number, in bounded memory.
Output: ``latents_mean`` and ``latents_logvar`` ``(n, latent_dim)``, and with the parameter
``reconstruction: true`` also ``reconstruction`` ``(n, 1, 64, 64)``, pixel probabilities of
the decoded posterior mean.
"""

from __future__ import annotations

import os

import mlflow
import numpy as np
import torch
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

IMAGE_SIZE = 64
BATCH = 1024  # images per forward pass: bounded memory for any request size
# Measured on a 2-core CPU (docs/pipeline.md): 2,000 images with reconstructions answer in about
# 17 s, parse and JSON included, well inside the server's default 60 s timeout.
MAX_SERVED_IMAGES = 2000


def _bad_input(message: str) -> MlflowException:
    # INVALID_PARAMETER_VALUE: the scoring server answers 400 with this message.
    return MlflowException(message, error_code=INVALID_PARAMETER_VALUE)


def as_images(model_input) -> np.ndarray:
    """``model_input`` checked and shaped ``(n, 1, 64, 64)`` float32, or a one-line error."""
    try:
        images = np.asarray(model_input, dtype=np.float32)
    except (TypeError, ValueError) as error:  # ragged lists, strings, objects
        raise _bad_input(
            f"expected a batch of 64x64 one-channel images, shape (n, 1, 64, 64), of numbers; {error}"
        ) from None
    if images.ndim >= 1 and len(images) == 0:
        raise _bad_input("the batch is empty: send at least one image, shape (n, 1, 64, 64)")
    if images.ndim != 4 or images.shape[1:] != (1, IMAGE_SIZE, IMAGE_SIZE) or len(images) == 0:
        raise _bad_input(
            f"expected a batch of 64x64 one-channel images, shape (n, 1, 64, 64); got {images.shape}"
        )
    if not np.isfinite(images).all():
        raise _bad_input("the images hold NaN or infinite pixels; pixels must be 0 or 1")
    outside = images[(images != 0) & (images != 1)]
    if outside.size:
        raise _bad_input(
            f"pixels must be 0 or 1 (dSprites' binary images); found {outside.size} others, "
            f"e.g. {float(outside[0])!r}. Binarise first (e.g. pixels >= 0.5)."
        )
    return images


def configured_limit() -> int:
    raw = os.environ.get("BVAE_SERVE_MAX_IMAGES", str(MAX_SERVED_IMAGES)).strip()
    if not raw.isdigit() or int(raw) < 1:
        raise MlflowException(f"BVAE_SERVE_MAX_IMAGES must be a positive whole number; got {raw!r}")
    return int(raw)


def served_limit(limit: int) -> int | None:
    """The most images one request may hold: ``None`` in-process, where no timeout applies.
    MLflow's scoring server marks its process as serving after the model has loaded, so this
    is asked at each request."""
    serving = os.environ.get("_MLFLOW_IS_IN_SERVING_ENVIRONMENT", "").lower() == "true"
    return limit if serving else None


def check_batch_size(count: int, limit: int | None) -> None:
    if limit is not None and count > limit:
        raise _bad_input(
            f"{count} images in one request; this server takes at most {limit} per request "
            f"(a bigger one would outlast its request timeout). Send them in requests of "
            f"{limit} or fewer, or set BVAE_SERVE_MAX_IMAGES where the server starts."
        )


class ServedBetaVAE(mlflow.pyfunc.PythonModel):
    """The β-VAE's encoder (and decoder, when asked) behind MLflow's pyfunc interface."""

    # ``predict`` checks its input itself (``as_images``), so it has no type hints, and this
    # tells MLflow not to wrap it for type-hint validation; without it MLflow prints a coloured
    # "Add type hints to the `predict` method" UserWarning each time this file is loaded: in
    # every training run's log, and in each consumer that loads the model.
    _skip_type_hint_validation = True

    def load_context(self, context) -> None:
        self.module = torch.export.load(context.artifacts["exported_program"]).module()
        self.limit = configured_limit()  # a bad value stops the server at start, not per request

    def predict(self, context, model_input, params=None):  # no type hints: MLflow would enforce them
        images = as_images(model_input)
        check_batch_size(len(images), served_limit(self.limit))
        reconstruction = bool((params or {}).get("reconstruction", False))
        parts: dict[str, list[np.ndarray]] = {}
        with torch.no_grad():
            for start in range(0, len(images), BATCH):
                outputs = self.module(torch.from_numpy(images[start : start + BATCH]))
                for key, value in outputs.items():
                    if key != "reconstruction" or reconstruction:
                        parts.setdefault(key, []).append(value.numpy())
        return {key: np.concatenate(values) for key, values in parts.items()}


mlflow.models.set_model(ServedBetaVAE())
