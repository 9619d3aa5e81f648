"""The loss maths against closed forms, Monte Carlo and the papers' conventions."""

import math

import pytest
import torch

from bvae.objectives import (
    TERM_COLUMNS,
    MemberObjectives,
    ObjectiveConfig,
    bernoulli_nll,
    capacity_at,
    gaussian_nll,
    kl_per_latent,
    objective_terms,
)


def terms_of(configs, likelihood, logits, images, mean, logvar, capacities=None):
    """``objective_terms`` of K members on one batch each (here the same batch), by name."""
    k = len(configs)
    stack = [t.unsqueeze(0).expand(k, *t.shape) for t in (logits, images, mean, logvar)]
    capacities = torch.tensor(capacities or [0.0] * k)
    table = objective_terms(likelihood, *stack, MemberObjectives.of(configs), capacities)
    named = [dict(zip(TERM_COLUMNS, row[: len(TERM_COLUMNS)], strict=True)) for row in table]
    for row, values in zip(named, table, strict=True):
        row["kl_per_latent"] = values[len(TERM_COLUMNS) :]
    return named


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
    (autoencoder,) = terms_of([ObjectiveConfig(beta=0.0)], "bernoulli", logits, images, mean, logvar)
    assert autoencoder["loss"] == pytest.approx(autoencoder["reconstruction"].item())
    assert autoencoder["reconstruction"] == pytest.approx(bernoulli_nll(logits, images).item())
    (beta4,) = terms_of([ObjectiveConfig(beta=4.0)], "bernoulli", logits, images, mean, logvar)
    expected = beta4["reconstruction"] + 4.0 * kl_per_latent(mean, logvar).sum()
    assert beta4["loss"] == pytest.approx(expected.item())
    assert beta4["kl_per_latent"].shape == (6,)


def test_capacity_schedule_and_objective():
    assert capacity_at(0, 25.0, 100_000) == 0.0
    assert capacity_at(50_000, 25.0, 100_000) == pytest.approx(12.5)
    assert capacity_at(100_000, 25.0, 100_000) == 25.0
    assert capacity_at(300_000, 25.0, 100_000) == 25.0  # held at C_max after the ramp
    images, logits, mean, logvar = batch()
    config = ObjectiveConfig(kind="capacity", gamma=1000.0)
    (terms,) = terms_of([config], "bernoulli", logits, images, mean, logvar, capacities=[3.0])
    assert terms["loss"] == pytest.approx(
        (terms["reconstruction"] + 1000.0 * (terms["kl"] - 3.0).abs()).item()
    )


def test_each_members_row_is_its_own_objective_alone():
    """K members in one call: every row is that member computed as K = 1, whichever objective
    and C it has: to the bit for Bernoulli pixels, to float rounding for a Gaussian whose std
    differs between members (then a per-member tensor, not the shared float)."""
    images, logits, mean, logvar = batch()
    configs = [
        ObjectiveConfig(beta=4.0, gaussian_std=0.1),
        ObjectiveConfig(kind="capacity", gamma=100.0, gaussian_std=0.1),
        ObjectiveConfig(beta=1.0, gaussian_std=0.3),
    ]
    for likelihood in ("bernoulli", "gaussian"):
        together = terms_of(configs, likelihood, logits, images, mean, logvar, [0.0, 2.5, 0.0])
        for config, capacity, row in zip(configs, [0.0, 2.5, 0.0], together, strict=True):
            (alone,) = terms_of([config], likelihood, logits, images, mean, logvar, [capacity])
            if likelihood == "bernoulli":
                assert torch.equal(row["loss"], alone["loss"]), config
            assert row["loss"] == pytest.approx(alone["loss"].item(), rel=1e-6)


def test_impossible_objectives_are_rejected():
    with pytest.raises(ValueError, match=r"beta\n  Input should be greater than or equal to 0"):
        ObjectiveConfig(beta=-1.0)
    with pytest.raises(ValueError, match="capacity_steps"):
        ObjectiveConfig(capacity_steps=0)
    for name, value in [("beta", math.nan), ("gamma", math.inf), ("capacity_max_nats", -math.inf)]:
        with pytest.raises(ValueError, match=f"{name}\n  Input should be a finite number"):
            ObjectiveConfig(**{name: value})
