"""The β-VAE family's objectives: reconstruction + a regulariser, as pure functions of tensors.

- ``beta`` (Higgins et al. 2017): recon + β·KL(q(z|x) ‖ N(0, I)); β = 1 is the plain VAE
  (Kingma & Welling 2014), β = 0 a deterministic-decoder autoencoder loss.
- ``capacity`` (Burgess et al. 2018, eq. 8): recon + γ·|KL − C|, with the capacity C raised
  linearly from 0 to ``capacity_max_nats`` over ``capacity_steps`` (paper: γ = 1000,
  C_max = 25 nats over 100k steps).
- ``beta_tc`` (Chen et al. 2018, "Isolating Sources of Disentanglement in VAEs", eq. 2 and 4):
  recon + MI + β·TC + dimension-wise KL, the KL of the aggregate posterior split into the
  index-code mutual information, the total correlation and the dimension-wise KL, each
  estimated on the minibatch from the sampled codes. ``tc_estimator``: minibatch-weighted
  sampling (``mws``, the paper's eq. 4) or minibatch stratified sampling (``mss``, its
  appendix). Both need the dataset size N. disentanglement_lib differs: it uses the
  closed-form KL + (β − 1)·TC, with MWS without N (a constant offset of the TC).
- ``dip_i`` / ``dip_ii`` (Kumar et al. 2018, "Variational Inference of Disentangled Latent
  Concepts from Unlabeled Observations", eq. 6 and 7): recon + KL + λ_od·Σ_{i≠j} C_ij² +
  λ_d·Σ_i (C_ii − 1)², with C the batch covariance of the posterior means (I), or that plus
  the mean posterior variance (II, the covariance of the aggregate posterior). The covariance
  is the biased batch estimate, as in disentanglement_lib.
- ``factor`` (Kim & Mnih 2018, "Disentangling by Factorising", eq. 2 and Algorithm 2): recon +
  KL + γ·TC, the total correlation estimated by a discriminator D as the mean of its logit
  difference log D(z) / (1 − D(z)) on the sampled codes (the density-ratio trick). D learns
  to tell codes of q(z) from codes shuffled dimension by dimension across the batch (samples of
  the product of the marginals), by its own Adam. As in disentanglement_lib the shuffled codes
  are the same batch's (the paper draws a second batch), and D and the VAE are updated from the
  same step's gradients: D's loss does not reach the encoder, the VAE's does not reach D.

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

from bvae.config import KIND_TERMS, ObjectiveConfig

# The columns of :func:`objective_terms`, in order; then the objective terms of the kinds in
# the ensemble (:func:`term_columns`); KL per latent follows. One step's row of these is what a
# log window averages and ``curves.csv`` holds.
TERM_COLUMNS = ("loss", "reconstruction", "kl", "largest_mean_sd")
LOG_2PI = math.log(2 * math.pi)
# Terms a step minimises beside the loss column, each by parameters of its own (FactorVAE's
# discriminator): :func:`trained_loss`.
TRAINED_TERMS = ("discriminator_loss",)


def term_columns(kinds) -> tuple[str, ...]:
    """The columns of an ensemble whose members are of ``kinds``: :data:`TERM_COLUMNS`, then
    each present kind's terms once, in :data:`KIND_TERMS`' order."""
    present = set(kinds)
    extra = (term for kind, terms in KIND_TERMS.items() if kind in present for term in terms)
    return TERM_COLUMNS + tuple(dict.fromkeys(extra))


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


def gaussian_log_density(z: torch.Tensor, mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """log N(z; mean, exp(logvar)), elementwise."""
    return -0.5 * (LOG_2PI + logvar + (z - mean).pow(2) * torch.exp(-logvar))


def log_importance_weights(batch_size: int, dataset_size: int, estimator: str) -> torch.Tensor:
    """``(B, B)``: log of the weight of q(z_i | x_j) in the estimate of q(z_i) (Chen et al.).

    ``mws``: every pair 1/(N·B) (eq. 4: a biased estimate). ``mss``, minibatch stratified
    sampling: x_i's own 1/N, one other image standing for the N − B images outside the
    batch (N − M)/(N·M), the remaining M − 1 images 1/M each, with M = B − 1; every row sums
    to 1. The reference code's matrix puts one of the stratum weights in the wrong row
    (rtqichen/beta-tcvae pull request #1); this is the corrected form: row i's stratum is
    image i + 1 (the last row's is image 0)."""
    n, b = dataset_size, batch_size
    if estimator == "mws":
        return torch.full((b, b), -math.log(n * b), dtype=torch.float64).float()
    if b < 2:
        raise ValueError(
            "the stratified TC estimate (objective.tc_estimator: mss) needs 2 or more images a batch"
        )
    m = b - 1
    weights = torch.full((b, b), 1.0 / m, dtype=torch.float64)
    rows = torch.arange(b)
    weights[rows, rows] = 1.0 / n
    weights[rows, (rows + 1) % b] = (n - m) / (n * m)
    return weights.log().float()


def tc_decomposition(
    z: torch.Tensor, mean: torch.Tensor, logvar: torch.Tensor, log_weights: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Chen et al.'s split of the KL term, each averaged over the batch: (index-code mutual
    information, total correlation, dimension-wise KL). ``z``, ``mean``, ``logvar``:
    ``(..., B, D)``, ``z`` sampled from q(z | x); ``log_weights``: ``(..., B, B)``
    (:func:`log_importance_weights`). The three add up to the batch's mean of
    log q(z|x) − log p(z), the sampled KL, for any estimator."""
    # log q(z_i,d | x_j): every code against every image's posterior, per dimension.
    pairs = gaussian_log_density(z.unsqueeze(-2), mean.unsqueeze(-3), logvar.unsqueeze(-3))
    log_q_given_x = gaussian_log_density(z, mean, logvar).sum(dim=-1)
    log_qz = torch.logsumexp(pairs.sum(dim=-1) + log_weights, dim=-1)
    log_qz_product = torch.logsumexp(pairs + log_weights.unsqueeze(-1), dim=-2).sum(dim=-1)
    log_pz = gaussian_log_density(z, torch.zeros_like(z), torch.zeros_like(z)).sum(dim=-1)
    return (
        (log_q_given_x - log_qz).mean(dim=-1),
        (log_qz - log_qz_product).mean(dim=-1),
        (log_qz_product - log_pz).mean(dim=-1),
    )


def dip_covariance(
    mean: torch.Tensor, logvar: torch.Tensor, with_variance: torch.Tensor | bool
) -> torch.Tensor:
    """``(..., D, D)``: the batch covariance of the posterior means (DIP-VAE-I), plus the mean
    posterior variance on the diagonal where ``with_variance`` (DIP-VAE-II: the covariance of
    the aggregate posterior). Biased (divided by B), as disentanglement_lib."""
    centred = mean - mean.mean(dim=-2, keepdim=True)
    covariance = centred.transpose(-1, -2) @ centred / mean.shape[-2]
    variance = torch.diag_embed(logvar.exp().mean(dim=-2))
    if isinstance(with_variance, torch.Tensor):
        return covariance + with_variance.reshape(-1, 1, 1) * variance
    return covariance + variance if with_variance else covariance


def dip_penalties(covariance: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(Σ_{i≠j} C_ij², Σ_i (C_ii − 1)²) of a ``(..., D, D)`` covariance."""
    diagonal = torch.diagonal(covariance, dim1=-2, dim2=-1)
    off_diagonal = (covariance - torch.diag_embed(diagonal)).pow(2).sum(dim=(-2, -1))
    return off_diagonal, (diagonal - 1).pow(2).sum(dim=-1)


def shuffle_codes(codes: torch.Tensor, permutations: torch.Tensor) -> torch.Tensor:
    """Codes ``(..., B, D)`` with each dimension permuted across the batch on its own:
    ``permutations`` ``(..., B, D)``, each column a permutation of 0..B−1. The result is a
    sample of the product of the batch's marginals (FactorVAE's Algorithm 1)."""
    return torch.gather(codes, -2, permutations)


def factor_terms(
    tc_logits: torch.Tensor, real_logits: torch.Tensor, shuffled_logits: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """FactorVAE's figures from the discriminator's ``(..., B, 2)`` logits, each averaged over
    the batch: (the TC estimate E[logit₀ − logit₁] on ``tc_logits``, the discriminator's
    cross-entropy ½·(−E log D₀(real) − E log D₁(shuffled)), its accuracy on the two halves).
    ``tc_logits`` are of the codes through a D whose weights the VAE's loss does not train;
    ``real_logits`` and ``shuffled_logits`` of detached codes through the D it trains."""
    tc = (tc_logits[..., 0] - tc_logits[..., 1]).mean(dim=-1)
    real, shuffled = F.log_softmax(real_logits, dim=-1), F.log_softmax(shuffled_logits, dim=-1)
    loss = -0.5 * (real[..., 0].mean(dim=-1) + shuffled[..., 1].mean(dim=-1))
    right = (real_logits[..., 0] >= real_logits[..., 1]).float().mean(dim=-1)
    right_shuffled = (shuffled_logits[..., 1] > shuffled_logits[..., 0]).float().mean(dim=-1)
    return tc, loss, 0.5 * (right + right_shuffled)


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
    keeps a step a few kernels however many members there are. A kind's terms are computed
    only when a member is of that kind, so a β or capacity run's arithmetic is unchanged."""

    is_capacity: torch.Tensor  # (K,) 1.0 for Burgess et al.'s objective, 0.0 for β
    beta: torch.Tensor  # (K,) β (on the KL; for beta_tc on the TC)
    gamma: torch.Tensor  # (K,)
    # One number when the members share it (any K = 1 run): then the arithmetic is the
    # plain float's, to the bit. Per member (K,) only when the grid varies it.
    gaussian_std: float | torch.Tensor
    columns: tuple[str, ...] = TERM_COLUMNS  # what objective_terms returns, before KL per latent
    is_beta_tc: torch.Tensor | None = None  # (K,), only with a beta_tc member
    tc_log_weights: torch.Tensor | None = None  # (K, B, B): log_importance_weights per member
    is_dip: torch.Tensor | None = None  # (K,), only with a DIP member
    is_dip_ii: torch.Tensor | None = None  # (K,)
    lambda_od: torch.Tensor | None = None  # (K,)
    lambda_d: torch.Tensor | None = None  # (K,), resolved (ObjectiveConfig.dip_lambda_d)
    is_factor: torch.Tensor | None = None  # (K,), only with a FactorVAE member
    factor_rows: torch.Tensor | None = None  # (F,) the FactorVAE members' indices, in order

    @classmethod
    def of(
        cls,
        objectives: list[ObjectiveConfig],
        device: torch.device | str = "cpu",
        batch_size: int | None = None,
        dataset_size: int | None = None,
    ) -> MemberObjectives:
        """``batch_size`` and ``dataset_size``: the images a member's step sees and the data's
        size, which β-TCVAE's estimate needs (only then)."""

        def column(values: list[float]) -> torch.Tensor:
            return torch.tensor(values, dtype=torch.float32, device=device)

        kinds = [o.kind for o in objectives]
        stds = [o.gaussian_std for o in objectives]
        extra: dict[str, torch.Tensor] = {}
        if "beta_tc" in kinds:
            if batch_size is None or dataset_size is None:
                raise ValueError("a beta_tc objective needs the batch size and the dataset size")
            extra["is_beta_tc"] = column([float(kind == "beta_tc") for kind in kinds])
            weights = [log_importance_weights(batch_size, dataset_size, o.tc_estimator) for o in objectives]
            extra["tc_log_weights"] = torch.stack(weights).to(device)
        if {"dip_i", "dip_ii"} & set(kinds):
            extra["is_dip"] = column([float(kind in ("dip_i", "dip_ii")) for kind in kinds])
            extra["is_dip_ii"] = column([float(kind == "dip_ii") for kind in kinds])
            extra["lambda_od"] = column([o.lambda_od for o in objectives])
            extra["lambda_d"] = column([o.dip_lambda_d() for o in objectives])
        if "factor" in kinds:
            extra["is_factor"] = column([float(kind == "factor") for kind in kinds])
            rows = [k for k, kind in enumerate(kinds) if kind == "factor"]
            extra["factor_rows"] = torch.tensor(rows, dtype=torch.long, device=device)
        return cls(
            is_capacity=column([float(kind == "capacity") for kind in kinds]),
            beta=column([o.beta for o in objectives]),
            gamma=column([o.gamma for o in objectives]),
            gaussian_std=stds[0] if len(set(stds)) == 1 else column(stds),
            columns=term_columns(kinds),
            **extra,
        )


def objective_terms(
    likelihood: str,
    logits: torch.Tensor,
    images: torch.Tensor,
    mean: torch.Tensor,
    logvar: torch.Tensor,
    objectives: MemberObjectives,
    capacities: torch.Tensor,
    noises: torch.Tensor | None = None,
    discriminator_logits: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """The objective of K members at once (leading dim K; a single run is K = 1), as one
    tensor ``(K, len(objectives.columns) + latent_dim)``: ``objectives.columns``
    (:func:`term_columns`), then KL per latent. A member's columns of another kind are 0.

    ``images`` are float ``(K, n, 1, 64, 64)`` in [0, 1]; ``capacities`` ``(K,)`` each
    member's C (see :func:`capacity_at`), ignored for the other objectives; ``noises``
    ``(K, n, latent_dim)``, the ε of the sampled codes z = μ + σ·ε (β-TCVAE needs them);
    ``discriminator_logits``: the FactorVAE members' three ``(F, n, 2)`` logits
    (:func:`factor_terms`), in the order of ``objectives.factor_rows``. The
    ``discriminator_loss`` column keeps its gradient: :func:`trained_loss` adds it to what a
    step minimises.
    """
    reconstruction = reconstruction_nll(likelihood, logits, images, objectives.gaussian_std)
    per_latent = kl_per_latent(mean, logvar)  # (K, latent_dim)
    kl = per_latent.sum(dim=1)
    penalty = torch.where(
        objectives.is_capacity > 0, objectives.gamma * (kl - capacities).abs(), objectives.beta * kl
    )
    terms: dict[str, torch.Tensor] = {}
    if objectives.is_beta_tc is not None:
        if noises is None:
            raise ValueError("a beta_tc objective needs the noise of the sampled codes")
        z = mean + torch.exp(0.5 * logvar) * noises
        mi, tc, dimwise = tc_decomposition(z, mean, logvar, objectives.tc_log_weights)
        terms.update(mutual_information=mi, total_correlation=tc, dimwise_kl=dimwise)
        penalty = torch.where(objectives.is_beta_tc > 0, mi + objectives.beta * tc + dimwise, penalty)
    if objectives.is_dip is not None:
        off_diagonal, diagonal = dip_penalties(dip_covariance(mean, logvar, objectives.is_dip_ii))
        terms.update(dip_off_diagonal=off_diagonal, dip_diagonal=diagonal)
        dip = kl + objectives.lambda_od * off_diagonal + objectives.lambda_d * diagonal
        penalty = torch.where(objectives.is_dip > 0, dip, penalty)
    if objectives.is_factor is not None:
        if discriminator_logits is None:
            raise ValueError("a factor objective needs its discriminator's logits")
        rows = objectives.factor_rows
        # Each FactorVAE member's figures in its own row, 0 in the other members'.
        tc, discriminator_loss, accuracy = (
            kl.new_zeros(kl.shape).index_copy(0, rows, figure)
            for figure in factor_terms(*discriminator_logits)
        )
        terms.update(
            discriminator_tc=tc, discriminator_loss=discriminator_loss, discriminator_accuracy=accuracy
        )
        penalty = torch.where(objectives.is_factor > 0, kl + objectives.gamma * tc, penalty)
    loss = reconstruction + penalty
    spread = largest_mean_sd(mean.detach())
    extra = [
        terms[name] if name in TRAINED_TERMS else terms[name].detach()
        for name in objectives.columns[len(TERM_COLUMNS) :]
    ]
    return torch.cat([torch.stack([loss, reconstruction, kl, spread, *extra], dim=1), per_latent], dim=1)


def trained_loss(terms: torch.Tensor, columns: tuple[str, ...]) -> torch.Tensor:
    """What one step of every member minimises: the sum of their ``loss`` column, plus the
    :data:`TRAINED_TERMS` among ``columns`` (the discriminator's loss reaches only its own
    weights, so one backward gives each network its own gradient)."""
    total = terms[:, 0].sum()
    for name in TRAINED_TERMS:
        if name in columns:
            total = total + terms[:, columns.index(name)].sum()
    return total
