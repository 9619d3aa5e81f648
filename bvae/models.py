"""β-VAE encoders and decoders for 64×64 binary images.

- ``conv``: Burgess et al. 2018, "Understanding disentangling in β-VAE" (arXiv:1804.03599),
  Appendix A.1: 4 conv layers of 32 channels, 4×4 kernels, stride 2; FC 256, FC 256; a linear
  layer to the mean and log-variance of ``latent_dim`` Gaussians. The decoder is the transpose.
  ReLU throughout.
- ``mlp``: Higgins et al. 2017, "β-VAE: Learning Basic Visual Concepts with a Constrained
  Variational Framework" (ICLR), Appendix A (dSprites): encoder FC 1200-1200 (ReLU), decoder
  FC 1200-1200-1200 (tanh).
- :class:`Discriminator`: FactorVAE's (Kim & Mnih 2018, "Disentangling by Factorising",
  Appendix A): an MLP on a code, 6 layers of 1,000 units with leaky ReLU, 2 logits (a code of
  q(z), or of the product of its marginals).

Initial weights (``model.init``, :func:`initialise`) are part of the method: with PyTorch's
default layer init the capacity recipe's encoder dies in its first steps (RESULTS.md).

Both decoders output logits; the likelihood (Bernoulli, or Gaussian as an option) lives in
``bvae.objectives``. ``forward`` is deterministic (decodes the posterior mean), which is what
an exported model for encoding and inspection needs; training samples through
:meth:`BetaVAE.reparameterize`.
"""

from __future__ import annotations

import torch
from torch import nn

from bvae.config import ModelConfig
from bvae.errors import InvalidSetting

IMAGE_SIZE = 64


def _conv_encoder(latent_dim: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(1, 32, 4, stride=2, padding=1),  # 32×32
        nn.ReLU(),
        nn.Conv2d(32, 32, 4, stride=2, padding=1),  # 16×16
        nn.ReLU(),
        nn.Conv2d(32, 32, 4, stride=2, padding=1),  # 8×8
        nn.ReLU(),
        nn.Conv2d(32, 32, 4, stride=2, padding=1),  # 4×4
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(32 * 4 * 4, 256),
        nn.ReLU(),
        nn.Linear(256, 256),
        nn.ReLU(),
        nn.Linear(256, 2 * latent_dim),
    )


def _conv_decoder(latent_dim: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(latent_dim, 256),
        nn.ReLU(),
        nn.Linear(256, 256),
        nn.ReLU(),
        nn.Linear(256, 32 * 4 * 4),
        nn.ReLU(),
        nn.Unflatten(1, (32, 4, 4)),
        nn.ConvTranspose2d(32, 32, 4, stride=2, padding=1),  # 8×8
        nn.ReLU(),
        nn.ConvTranspose2d(32, 32, 4, stride=2, padding=1),  # 16×16
        nn.ReLU(),
        nn.ConvTranspose2d(32, 32, 4, stride=2, padding=1),  # 32×32
        nn.ReLU(),
        nn.ConvTranspose2d(32, 1, 4, stride=2, padding=1),  # 64×64 logits
    )


def _mlp_encoder(latent_dim: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(IMAGE_SIZE * IMAGE_SIZE, 1200),
        nn.ReLU(),
        nn.Linear(1200, 1200),
        nn.ReLU(),
        nn.Linear(1200, 2 * latent_dim),
    )


def _mlp_decoder(latent_dim: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(latent_dim, 1200),
        nn.Tanh(),
        nn.Linear(1200, 1200),
        nn.Tanh(),
        nn.Linear(1200, 1200),
        nn.Tanh(),
        nn.Linear(1200, IMAGE_SIZE * IMAGE_SIZE),
        nn.Unflatten(1, (1, IMAGE_SIZE, IMAGE_SIZE)),
    )


# The layers an init touches: every one with weights (ReLU, Tanh, Flatten have none).
_WEIGHTED_LAYERS = (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)


@torch.no_grad()
def initialise(model: nn.Module, init: str) -> None:
    """Re-initialise every weighted layer in place, in module order (so a seed fixes it):

    - ``kaiming``: Kaiming-normal weights for ReLU, std √(2 / fan_in), zero biases (He et al.
      2015; 1Konny/Beta-VAE's ``kaiming_init``). fan_in is as torch counts it: for a
      ConvTranspose2d, out_channels · k², the fan of its backward convolution.
    - ``glorot``: Glorot-uniform weights, bound √(6 / (fan_in + fan_out)), zero biases (Glorot
      & Bengio 2010; TF's layer default, so disentanglement_lib's).
    - ``pytorch``: left as built, PyTorch's defaults (Kaiming-uniform with a = √5, i.e. weight
      variance 1/(3·fan_in), and biases of that size): every model bvae trained before
      ``model.init`` existed. It shrinks the image-dependent part of the conv encoder's output
      about 14× while the biases stay, which is what lets γ = 1000 kill the encoder.
    """
    if init == "pytorch":
        return
    for module in model.modules():
        if isinstance(module, _WEIGHTED_LAYERS):
            if init == "kaiming":
                nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
            elif init == "glorot":
                nn.init.xavier_uniform_(module.weight)
            else:
                raise InvalidSetting(f"model.init {init!r} is not one of kaiming, glorot, pytorch")
            nn.init.zeros_(module.bias)


class BetaVAE(nn.Module):
    """A VAE with a diagonal-Gaussian posterior; images are ``(n, 1, 64, 64)`` floats in [0, 1]."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        if config.architecture == "conv":
            self.encoder, self.decoder = (
                _conv_encoder(config.latent_dim),
                _conv_decoder(config.latent_dim),
            )
        else:
            self.encoder, self.decoder = (
                _mlp_encoder(config.latent_dim),
                _mlp_decoder(config.latent_dim),
            )
        initialise(self, config.init)

    def encode(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior mean and log-variance, each ``(n, latent_dim)``."""
        mean, logvar = self.encoder(images).chunk(2, dim=1)
        return mean, logvar

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Pixel logits ``(n, 1, 64, 64)``."""
        return self.decoder(latents)

    @staticmethod
    def reparameterize(
        mean: torch.Tensor, logvar: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """z = μ + σ·ε (Kingma & Welling 2014), ε drawn from ``generator`` for exact resumes."""
        noise = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        return mean + torch.exp(0.5 * logvar) * noise

    def forward(
        self, images: torch.Tensor, noise: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(posterior mean, log-variance, logits). Without ``noise``, the decoded mean (what the
        exported model does); with it, the decoded sample z = μ + σ·noise (training: one call
        through ``forward`` is what DistributedDataParallel synchronises)."""
        mean, logvar = self.encode(images)
        latents = mean if noise is None else mean + torch.exp(0.5 * logvar) * noise
        return mean, logvar, self.decode(latents)


class Discriminator(nn.Module):
    """FactorVAE's discriminator: ``(n, latent_dim)`` codes → ``(n, 2)`` logits, column 0 "drawn
    from q(z)", column 1 "drawn from the product of its marginals" (dimension-wise shuffled).

    Leaky ReLU with slope 0.2 and Glorot-uniform weights with zero biases: TF's defaults, so
    disentanglement_lib's ``fc_discriminator``, whatever ``model.init`` says (that setting is
    the VAE's)."""

    def __init__(self, latent_dim: int, units: int = 1000, layers: int = 6):
        super().__init__()
        widths = [latent_dim] + [units] * layers
        hidden = []
        for fan_in, fan_out in zip(widths, widths[1:], strict=False):
            hidden += [nn.Linear(fan_in, fan_out), nn.LeakyReLU(0.2)]
        self.network = nn.Sequential(*hidden, nn.Linear(widths[-1], 2))
        initialise(self, "glorot")

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        return self.network(codes)


def images_to_input(images: torch.Tensor) -> torch.Tensor:
    """dSprites pixels, uint8 ``(n, 64, 64)`` in {0, 1} → float ``(n, 1, 64, 64)``."""
    return images.float().unsqueeze(1)
