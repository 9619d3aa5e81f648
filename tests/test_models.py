import math

import pytest
import torch
from torch import nn

from bvae.model_file import weights_digest
from bvae.models import BetaVAE, ModelConfig
from bvae.runtime import select_device

# weights_digest of BetaVAE(ModelConfig(architecture=...)) after torch.manual_seed(0), computed
# with bvae before model.init existed (commit d8fe1fc): `pytorch` must stay exactly that.
WEIGHTS_BEFORE_INIT_EXISTED = {
    "conv": "28449b9ba07eb8578f876e28b2b01d27e96043a5d8f30dcf705cf9ea8532fb34",
    "mlp": "8dbe8124345c9b832041c8bc9911480082065ecd3400537ce2c8cfbacf6346df",
}


@pytest.mark.parametrize("architecture", ["conv", "mlp"])
def test_pytorch_init_is_every_earlier_models_start(architecture):
    torch.manual_seed(0)
    model = BetaVAE(ModelConfig(architecture=architecture, init="pytorch"))
    assert weights_digest(model) == WEIGHTS_BEFORE_INIT_EXISTED[architecture]


def fans(layer: nn.Module) -> tuple[int, int]:
    """(fan_in, fan_out) as torch.nn.init counts them (dim 1 is fan_in, also for ConvTranspose2d)."""
    receptive = layer.weight[0][0].numel()
    return layer.weight.shape[1] * receptive, layer.weight.shape[0] * receptive


@pytest.mark.parametrize("init", ["kaiming", "glorot"])
@pytest.mark.parametrize("architecture", ["conv", "mlp"])
def test_init_statistics_per_layer(architecture, init):
    """Zero biases; weight sd within 10 % of the formula (√(2/fan_in) Kaiming-normal for ReLU;
    √(2/(fan_in + fan_out)) for Glorot-uniform, bound √3 times that) on every weighted layer."""
    torch.manual_seed(0)
    model = BetaVAE(ModelConfig(architecture=architecture, init=init))
    layers = [m for m in model.modules() if isinstance(m, nn.Conv2d | nn.ConvTranspose2d | nn.Linear)]
    assert {type(m) for m in layers} >= ({nn.Conv2d, nn.ConvTranspose2d} if architecture == "conv" else set())
    for layer in layers:
        fan_in, fan_out = fans(layer)
        expected = math.sqrt(2 / fan_in) if init == "kaiming" else math.sqrt(2 / (fan_in + fan_out))
        assert torch.count_nonzero(layer.bias) == 0, layer
        # every layer has at least 512 weights: their sd is within a few % of the formula's
        assert abs(layer.weight.std().item() / expected - 1) < 0.1, (layer, layer.weight.std(), expected)
        if init == "glorot":
            assert layer.weight.abs().max() <= math.sqrt(3) * expected + 1e-6


def test_the_same_seed_gives_the_same_initial_weights():
    digests = []
    for _ in range(2):
        torch.manual_seed(5)
        digests.append(weights_digest(BetaVAE(ModelConfig())))
    assert digests[0] == digests[1]


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
