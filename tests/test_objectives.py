"""The loss maths against closed forms, Monte Carlo and the papers' conventions."""

import math

import pytest
import torch

from bvae.objectives import (
    ObjectiveConfig,
    bernoulli_nll,
    capacity_at,
    compute_loss,
    gaussian_nll,
    kl_per_latent,
)


def batch(seed=0, n=16, latent_dim=6):
    generator = torch.Generator().manual_seed(seed)
    images = (torch.rand(n, 1, 64, 64, generator=generator) < 0.1).float()
    logits = torch.randn(n, 1, 64, 64, generator=generator)
    mean = torch.randn(n, latent_dim, generator=generator)
    logvar = torch.randn(n, latent_dim, generator=generator) * 0.5
    return images, logits, mean, logvar


def test_closed_form_kl_matches_monte_carlo():
    torch.manual_seed(0)
    mean = torch.tensor([[0.5, -1.0, 0.0]])
    logvar = torch.tensor([[0.2, -1.5, 0.0]])
    posterior = torch.distributions.Normal(mean, (0.5 * logvar).exp())
    samples = posterior.sample((400_000,))
    prior = torch.distributions.Normal(0.0, 1.0)
    monte_carlo = (posterior.log_prob(samples) - prior.log_prob(samples)).mean(dim=0)[0]
    assert torch.allclose(kl_per_latent(mean, logvar), monte_carlo, atol=0.01)
    assert kl_per_latent(mean, logvar)[2] == pytest.approx(0.0)  # q = prior


def test_reconstruction_is_summed_over_pixels_and_averaged_over_the_batch():
    images, logits, _, _ = batch()
    expected = torch.stack(
        [
            -torch.distributions.Bernoulli(logits=logits[i]).log_prob(images[i]).sum()
            for i in range(len(images))
        ]
    ).mean()
    assert bernoulli_nll(logits, images) == pytest.approx(expected.item(), rel=1e-5)
    std = 0.1
    gaussian = torch.stack(
        [
            -torch.distributions.Normal(torch.sigmoid(logits[i]), std).log_prob(images[i]).sum()
            for i in range(len(images))
        ]
    ).mean()
    assert gaussian_nll(logits, images, std) == pytest.approx(gaussian.item(), rel=1e-5)


def test_beta_zero_is_the_autoencoder_loss_and_beta_scales_the_kl():
    images, logits, mean, logvar = batch()
    autoencoder = compute_loss(ObjectiveConfig(beta=0.0), "bernoulli", logits, images, mean, logvar)
    assert autoencoder.loss == pytest.approx(autoencoder.reconstruction.item())
    beta4 = compute_loss(ObjectiveConfig(beta=4.0), "bernoulli", logits, images, mean, logvar)
    expected = beta4.reconstruction + 4.0 * kl_per_latent(mean, logvar).sum()
    assert beta4.loss == pytest.approx(expected.item())
    assert beta4.kl_per_latent.shape == (6,)


def test_capacity_schedule_and_objective():
    assert capacity_at(0, 25.0, 100_000) == 0.0
    assert capacity_at(50_000, 25.0, 100_000) == pytest.approx(12.5)
    assert capacity_at(100_000, 25.0, 100_000) == 25.0
    assert capacity_at(300_000, 25.0, 100_000) == 25.0  # held at C_max after the ramp
    images, logits, mean, logvar = batch()
    config = ObjectiveConfig(kind="capacity", gamma=1000.0)
    terms = compute_loss(config, "bernoulli", logits, images, mean, logvar, capacity=3.0)
    assert terms.loss == pytest.approx((terms.reconstruction + 1000.0 * (terms.kl - 3.0).abs()).item())


def test_impossible_objectives_are_rejected():
    with pytest.raises(ValueError, match=r"beta\n  Input should be greater than or equal to 0"):
        ObjectiveConfig(beta=-1.0)
    with pytest.raises(ValueError, match="capacity_steps"):
        ObjectiveConfig(capacity_steps=0)
    for name, value in [("beta", math.nan), ("gamma", math.inf), ("capacity_max_nats", -math.inf)]:
        with pytest.raises(ValueError, match=f"{name}\n  Input should be a finite number"):
            ObjectiveConfig(**{name: value})
