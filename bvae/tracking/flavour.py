"""The logged model: a pickle-free pyfunc that ``mlflow models serve`` can serve.

MLflow's PyTorch flavour serves only a model with one output tensor; a β-VAE has three. So the
model is logged as a pyfunc from code (``served_model.py``, copied into the model) around a
``torch.export`` archive of the network that returns a dict of named tensors. Loading it runs
that file and reads the archive: nothing is unpickled, and bvae need not be installed.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from bvae.tracking.runs import RunHandle
from bvae.tracking.store import server_calls

SERVED_MODEL_CODE = Path(__file__).with_name("served_model.py")


def _served_module(model):
    """``model`` wrapped so that its forward returns named outputs (what the server sends)."""
    import torch

    class Served(torch.nn.Module):
        def __init__(self, vae):
            super().__init__()
            self.vae = vae

        def forward(self, images):
            mean, logvar, logits = self.vae(images)
            return {"latents_mean": mean, "latents_logvar": logvar, "reconstruction": torch.sigmoid(logits)}

    return Served(model).eval()


def export_model(model, example, path: Path) -> Path:
    """``torch.export`` the model for any batch size (``example``: a batch of ≥ 2 images)."""
    import torch

    batch = torch.export.Dim("batch", min=1, max=1 << 20)
    program = torch.export.export(
        _served_module(model), (torch.as_tensor(example),), dynamic_shapes={"images": {0: batch}}
    )
    torch.export.save(program, path)
    return path


def model_signature(latent_dim: int):
    import numpy as np
    from mlflow.models.signature import ModelSignature
    from mlflow.types.schema import ParamSchema, ParamSpec, Schema, TensorSpec

    return ModelSignature(
        # No input schema: the served model checks its input and names what is wrong, where
        # MLflow's enforcement answers an empty batch with a message about list types.
        inputs=None,
        outputs=Schema(
            [
                TensorSpec(np.dtype(np.float32), (-1, latent_dim), "latents_mean"),
                TensorSpec(np.dtype(np.float32), (-1, latent_dim), "latents_logvar"),
                TensorSpec(np.dtype(np.float32), (-1, 1, 64, 64), "reconstruction"),
            ]
        ),
        params=ParamSchema([ParamSpec("reconstruction", "boolean", False)]),
    )


def log_torch_model(
    run: RunHandle,
    model,
    input_example,
    *,
    name: str = "model",
    pip_requirements: list[str] | None = None,
) -> tuple[str, str]:
    """Log ``model`` (on the CPU, in eval mode) to the run as the served pyfunc; returns its
    ``models:/`` URI and its logged-model id. ``input_example``: float32 ``(n ≥ 2, 1, 64, 64)``
    binary images."""
    import mlflow

    mlflow.set_tracking_uri(run.tracking_uri)
    with tempfile.TemporaryDirectory(prefix="bvae-export-") as folder:
        archive = export_model(model, input_example, Path(folder) / "bvae.pt2")
        with (
            server_calls(run.tracking_uri, "logging the model"),
            mlflow.start_run(run_id=run.run_id, nested=False),  # log_model needs the active run
        ):
            info = mlflow.pyfunc.log_model(
                name=name,
                python_model=str(SERVED_MODEL_CODE),
                artifacts={"exported_program": str(archive)},
                signature=model_signature(model.config.latent_dim),
                input_example=input_example,
                pip_requirements=pip_requirements,
            )
    return info.model_uri, info.model_id
