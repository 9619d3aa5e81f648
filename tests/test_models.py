import pytest
import torch
from torch import nn

from bvae.models import BetaVAE, ModelConfig, select_device


@pytest.mark.parametrize("architecture", ["conv", "mlp"])
@pytest.mark.parametrize("latent_dim", [3, 10])
def test_shapes(architecture, latent_dim):
    model = BetaVAE(ModelConfig(architecture=architecture, latent_dim=latent_dim))
    images = torch.zeros(5, 1, 64, 64)
    mean, logvar, logits = model(images)
    assert mean.shape == logvar.shape == (5, latent_dim)
    assert logits.shape == (5, 1, 64, 64)
    assert model.decode(torch.zeros(2, latent_dim)).shape == (2, 1, 64, 64)


def test_conv_is_burgess_et_al():
    model = BetaVAE(ModelConfig(architecture="conv"))
    convs = [m for m in model.encoder if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size, c.stride) for c in convs] == [
        (1, 32, (4, 4), (2, 2)),
        (32, 32, (4, 4), (2, 2)),
        (32, 32, (4, 4), (2, 2)),
        (32, 32, (4, 4), (2, 2)),
    ]
    linears = [(m.in_features, m.out_features) for m in model.encoder if isinstance(m, nn.Linear)]
    assert linears == [(512, 256), (256, 256), (256, 20)]
    transposed = [m for m in model.decoder if isinstance(m, nn.ConvTranspose2d)]
    assert len(transposed) == 4 and transposed[-1].out_channels == 1
    assert all(
        isinstance(m, nn.ReLU) for m in model.encoder if not isinstance(m, nn.Linear | nn.Conv2d | nn.Flatten)
    )


def test_mlp_is_higgins_et_al():
    model = BetaVAE(ModelConfig(architecture="mlp"))
    encoder = [(m.in_features, m.out_features) for m in model.encoder if isinstance(m, nn.Linear)]
    decoder = [(m.in_features, m.out_features) for m in model.decoder if isinstance(m, nn.Linear)]
    assert encoder == [(4096, 1200), (1200, 1200), (1200, 20)]
    assert decoder == [(10, 1200), (1200, 1200), (1200, 1200), (1200, 4096)]


def test_forward_is_deterministic_and_reparameterization_is_seeded():
    model = BetaVAE(ModelConfig()).eval()
    images = (torch.rand(4, 1, 64, 64) < 0.1).float()
    first, second = model(images), model(images)
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))
    mean, logvar = torch.zeros(3, 10), torch.zeros(3, 10)
    draw = lambda: BetaVAE.reparameterize(mean, logvar, torch.Generator().manual_seed(7))  # noqa: E731
    assert torch.equal(draw(), draw())


def test_config_validation_and_device():
    with pytest.raises(ValueError, match="latent_dim"):
        ModelConfig(latent_dim=0)
    assert select_device("cpu").type == "cpu"
    expected = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    assert select_device("auto").type == expected
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA GPU"):
            select_device("cuda")
        for key in ("evaluate.device", "traverse.device"):  # each stage's own key, not train's
            with pytest.raises(ValueError, match=f"^{key} is cuda but no CUDA GPU"):
                select_device("cuda", key)
    with pytest.raises(ValueError, match="evaluate.device = 'gpu0' is not a device"):
        select_device("gpu0", "evaluate.device")
