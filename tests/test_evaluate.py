"""The evaluate stage's held-out figures: the ELBO terms under the model's own likelihood."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bvae.data import factors, render
from bvae.models import BetaVAE, ModelConfig
from bvae.objectives import bernoulli_nll, gaussian_nll, kl_per_latent
from bvae.stages.evaluate import heldout_figures


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
def test_heldout_reconstruction_uses_the_models_likelihood(likelihood):
    """A Gaussian model's reconstruction was once scored with the Bernoulli NLL."""
    torch.manual_seed(0)
    model = BetaVAE(ModelConfig(likelihood=likelihood)).eval()
    images = render.render_images(factors.classes_from_index(np.arange(0, 737280, 9216)))  # 80
    figures = heldout_figures(model, images, torch.device("cpu"), seed=3, batch_size=32, gaussian_std=0.2)

    batch = torch.from_numpy(images).float()[:, None]
    with torch.no_grad():
        mean, logvar = model.encode(batch)
        generator = torch.Generator().manual_seed(3)  # the same draws, batch by batch
        codes = torch.cat(
            [
                BetaVAE.reparameterize(m, v, generator)
                for m, v in zip(mean.split(32), logvar.split(32), strict=True)
            ]
        )
        logits = model.decode(codes)
    expected = {"bernoulli": bernoulli_nll(logits, batch), "gaussian": gaussian_nll(logits, batch, 0.2)}
    assert figures["reconstruction_nats"] == pytest.approx(expected[likelihood].item(), rel=1e-5)
    other = expected["gaussian" if likelihood == "bernoulli" else "bernoulli"].item()
    assert abs(figures["reconstruction_nats"] - other) > 1.0
    assert figures["kl_nats"] == pytest.approx(kl_per_latent(mean, logvar).sum().item(), rel=1e-5)
    assert figures["num_images"] == 80
