"""β-VAE objectives: reconstruction + a weighted KL, as pure functions of tensors.

- ``beta`` (Higgins et al. 2017): recon + β·KL(q(z|x) ‖ N(0, I)); β = 1 is the plain VAE
  (Kingma & Welling 2014), β = 0 a deterministic-decoder autoencoder loss.
- ``capacity`` (Burgess et al. 2018, eq. 8): recon + γ·|KL − C|, with the capacity C raised
  linearly from 0 to ``capacity_max_nats`` over ``capacity_steps`` (paper: γ = 1000,
  C_max = 25 nats over 100k steps).

Scale: the reconstruction is the negative log-likelihood *summed over the 4,096 pixels* and
*averaged over the batch*, and the KL is summed over latents and averaged over the batch. This
is the papers' reduction: β = 4 means 4 on this scale (a per-pixel mean would make β 4096×
stronger).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from bvae.config import ObjectiveConfig

# The columns of :func:`objective_terms`, in order; KL per latent follows. One step's row of
# these is what a log window averages and ``curves.csv`` holds.
TERM_COLUMNS = ("loss", "reconstruction", "kl", "largest_mean_sd")


# Images are (..., n, 1, 64, 64) and latents (..., n, latent_dim): a batch, or one batch per
# ensemble member (leading dim K). Every figure reduces the last dims only.


def bernoulli_nll(logits: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """−log p(x|z) for Bernoulli pixels, summed over pixels, averaged over the batch."""
    per_pixel = F.binary_cross_entropy_with_logits(logits, images, reduction="none")
    return per_pixel.flatten(-3).sum(dim=-1).mean(dim=-1)


def gaussian_nll(logits: torch.Tensor, images: torch.Tensor, std: float | torch.Tensor) -> torch.Tensor:
    """−log N(x; sigmoid(logits), std²), summed over pixels, averaged over the batch.
    ``std``: a number, or one per leading index (an ensemble member's own)."""
    squared = (torch.sigmoid(logits) - images).pow(2).flatten(-3).sum(dim=-1)
    pixels = images.shape[-3:].numel()
    if isinstance(std, torch.Tensor):
        return (squared / (2 * std.unsqueeze(-1) ** 2)).mean(dim=-1) + pixels * torch.log(
            std * math.sqrt(2 * math.pi)
        )
    return (squared / (2 * std**2)).mean(dim=-1) + pixels * math.log(std * math.sqrt(2 * math.pi))


def reconstruction_nll(
    likelihood: str, logits: torch.Tensor, images: torch.Tensor, gaussian_std: float | torch.Tensor
) -> torch.Tensor:
    """The model's own −log p(x|z): Bernoulli, or Gaussian with the fixed ``gaussian_std``."""
    if likelihood == "bernoulli":
        return bernoulli_nll(logits, images)
    return gaussian_nll(logits, images, gaussian_std)


def kl_per_latent(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(μ, σ²) ‖ N(0, 1)) per latent dimension, averaged over the batch (closed form)."""
    return 0.5 * (mean.pow(2) + logvar.exp() - logvar - 1.0).mean(dim=-2)


def largest_mean_sd(mean: torch.Tensor) -> torch.Tensor:
    """The largest, over latents, standard deviation across the batch of a latent's posterior
    mean: 0 when the encoder gives every image the same code (posterior collapse)."""
    return mean.std(dim=-2).amax(dim=-1)


def capacity_at(step: int, capacity_max_nats: float, capacity_steps: int) -> float:
    """Burgess et al.'s linearly increasing capacity C (nats) at a training step."""
    return capacity_max_nats * min(step, capacity_steps) / capacity_steps


def capacity_for(config: ObjectiveConfig, step: int) -> float:
    """The objective's C at a step: the capacity schedule's, 0 for the β objective."""
    if config.kind != "capacity":
        return 0.0
    return capacity_at(step, config.capacity_max_nats, config.capacity_steps)


@dataclass(frozen=True)
class MemberObjectives:
    """K members' objectives as tensors on the training device: one formula for all of them
    keeps a step a few kernels however many members there are."""

    is_capacity: torch.Tensor  # (K,) 1.0 for Burgess et al.'s objective, 0.0 for β
    beta: torch.Tensor  # (K,)
    gamma: torch.Tensor  # (K,)
    # One number when the members share it (any K = 1 run): then the arithmetic is the
    # plain float's, to the bit. Per member (K,) only when the grid varies it.
    gaussian_std: float | torch.Tensor

    @classmethod
    def of(cls, objectives: list[ObjectiveConfig], device: torch.device | str = "cpu") -> MemberObjectives:
        def column(values: list[float]) -> torch.Tensor:
            return torch.tensor(values, dtype=torch.float32, device=device)

        stds = [o.gaussian_std for o in objectives]
        return cls(
            is_capacity=column([float(o.kind == "capacity") for o in objectives]),
            beta=column([o.beta for o in objectives]),
            gamma=column([o.gamma for o in objectives]),
            gaussian_std=stds[0] if len(set(stds)) == 1 else column(stds),
        )


def objective_terms(
    likelihood: str,
    logits: torch.Tensor,
    images: torch.Tensor,
    mean: torch.Tensor,
    logvar: torch.Tensor,
    objectives: MemberObjectives,
    capacities: torch.Tensor,
) -> torch.Tensor:
    """The objective of K members at once (leading dim K; a single run is K = 1), as one
    tensor ``(K, 4 + latent_dim)``: :data:`TERM_COLUMNS`, then KL per latent.

    ``images`` are float ``(K, n, 1, 64, 64)`` in [0, 1]; ``capacities`` ``(K,)`` each
    member's C (see :func:`capacity_at`), ignored for the β objective.
    """
    reconstruction = reconstruction_nll(likelihood, logits, images, objectives.gaussian_std)
    per_latent = kl_per_latent(mean, logvar)  # (K, latent_dim)
    kl = per_latent.sum(dim=1)
    penalty = torch.where(
        objectives.is_capacity > 0, objectives.gamma * (kl - capacities).abs(), objectives.beta * kl
    )
    loss = reconstruction + penalty
    spread = largest_mean_sd(mean.detach())
    return torch.cat([torch.stack([loss, reconstruction, kl, spread], dim=1), per_latent], dim=1)
