"""The logged model: a pickle-free ``pt2`` PyTorch model with a tensor signature."""

from __future__ import annotations

from bvae.tracking.runs import RunHandle
from bvae.tracking.store import server_calls


def log_torch_model(
    run: RunHandle,
    model,
    input_example,
    *,
    name: str = "model",
    pip_requirements: list[str] | None = None,
) -> str:
    """Log a torch model (pickle-free ``pt2``) to the run; returns its ``models:/`` URI."""
    import mlflow
    import numpy as np
    from mlflow.models.signature import ModelSignature
    from mlflow.types.schema import Schema, TensorSpec

    latent_dim = model.config.latent_dim
    signature = ModelSignature(
        # Unnamed: a named input makes MLflow wrap the serving example in a dict, which the
        # PyTorch flavour then refuses to validate.
        inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, 1, 64, 64))]),
        outputs=Schema(
            [
                TensorSpec(np.dtype(np.float32), (-1, latent_dim), "latents_mean"),
                TensorSpec(np.dtype(np.float32), (-1, latent_dim), "latents_logvar"),
                TensorSpec(np.dtype(np.float32), (-1, 1, 64, 64), "reconstruction_logits"),
            ]
        ),
    )
    mlflow.set_tracking_uri(run.tracking_uri)
    with (
        server_calls(run.tracking_uri, "logging the model"),
        mlflow.start_run(run_id=run.run_id, nested=False),  # log_model needs the active run
    ):
        info = mlflow.pytorch.log_model(
            model,
            name=name,
            input_example=input_example,
            signature=signature,
            pip_requirements=pip_requirements,
        )
    return info.model_uri
