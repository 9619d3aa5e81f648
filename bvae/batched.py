"""K members' forward pass as batched matrix products: the ``bmm`` mechanism.

``vmap`` turns each member's convolution into one grouped convolution, which cuDNN runs on a
slow path for narrow groups (issue #29). Here every weighted layer of the K members is one
``torch.bmm`` over stacked weights, the shape GPUs are built for:

- a convolution is im2col (``F.unfold``) of every member's batch at once, then one batched
  product of each member's ``(O, C·k²)`` kernels with its images' ``(C·k², L)`` patches
  (``matmul`` broadcasting the kernels over the batch: no activation is transposed or
  copied between layers, the layout stays ``(K, N, C, H, W)``);
- a transposed convolution is that operator's adjoint: the transposed ``(O·k², C)`` kernels
  times the ``(C, L)`` pixels, then col2im (``F.fold``) back onto the image;
- a linear layer is one ``baddbmm``;
- everything elementwise (ReLU, tanh, reshapes) runs once on all members' activations, folded
  into the batch dimension.

Activations travel as ``(K, N, ...)``. The products sum in another order than a single run's
kernels, so a member equals its single run to rounding (``tests/test_ensemble.py`` states the
tolerance). Autograd derives the backward pass; no weight is shared between members.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from bvae.errors import InvalidSetting


def linear(inputs: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """``(K, N, in)`` with ``(K, out, in)`` weights and ``(K, out)`` biases → ``(K, N, out)``."""
    return torch.baddbmm(bias.unsqueeze(1), inputs, weight.transpose(1, 2))


def conv2d(
    inputs: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, stride: int, padding: int
) -> torch.Tensor:
    """``(K, N, C, H, W)`` with ``(K, O, C, k, k)`` kernels → ``(K, N, O, H', W')``."""
    members, batch, channels, height, width = inputs.shape
    out_channels, kernel = weight.shape[1], weight.shape[-1]
    patches = F.unfold(inputs.reshape(-1, channels, height, width), kernel, padding=padding, stride=stride)
    patches = patches.reshape(members, batch, *patches.shape[1:])  # (K, N, C·k², L): a view
    kernels = weight.reshape(members, 1, out_channels, -1)  # (K, 1, O, C·k²), broadcast over N
    out = torch.matmul(kernels, patches) + bias[:, None, :, None]  # (K, N, O, L)
    out_height = (height + 2 * padding - kernel) // stride + 1
    out_width = (width + 2 * padding - kernel) // stride + 1
    return out.reshape(members, batch, out_channels, out_height, out_width)


def conv_transpose2d(
    inputs: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, stride: int, padding: int
) -> torch.Tensor:
    """``(K, N, C, H, W)`` with ``(K, C, O, k, k)`` kernels → ``(K, N, O, H', W')``: the
    adjoint of :func:`conv2d` (a product with the transposed kernels, then col2im)."""
    members, batch, channels, height, width = inputs.shape
    out_channels, kernel = weight.shape[2], weight.shape[-1]
    kernels = weight.reshape(members, 1, channels, -1).transpose(2, 3)  # (K, 1, O·k², C)
    columns = torch.matmul(kernels, inputs.reshape(members, batch, channels, height * width))
    out_height = (height - 1) * stride - 2 * padding + kernel
    out_width = (width - 1) * stride - 2 * padding + kernel
    images = F.fold(
        columns.reshape(members * batch, *columns.shape[2:]),  # (K·N, O·k², L)
        (out_height, out_width),
        kernel,
        padding=padding,
        stride=stride,
    )
    images = images.reshape(members, batch, out_channels, out_height, out_width)
    return images + bias[:, None, :, None, None]


def _single(value) -> int:
    """A layer's stride or padding, the same along both axes (bvae's layers are square)."""
    first, *rest = value if isinstance(value, tuple) else (value,)
    if any(other != first for other in rest):
        raise InvalidSetting(f"the bmm mechanism needs square strides and padding, not {value}")
    return first


def sequential(layers: nn.Sequential, prefix: str, params: dict[str, torch.Tensor], inputs: torch.Tensor):
    """Run ``layers`` (their weights in ``params`` as ``{prefix.i.weight: (K, ...)}``) on
    ``(K, N, ...)`` inputs."""
    out = inputs
    for index, layer in enumerate(layers):
        name = f"{prefix}.{index}"
        if isinstance(layer, nn.Linear):
            out = linear(out, params[f"{name}.weight"], params[f"{name}.bias"])
        elif isinstance(layer, (nn.Conv2d, nn.ConvTranspose2d)):
            if _single(layer.dilation) != 1 or layer.groups != 1:
                raise InvalidSetting(f"the bmm mechanism has no dilated or grouped {type(layer).__name__}")
            operator = conv2d if isinstance(layer, nn.Conv2d) else conv_transpose2d
            weights = (params[f"{name}.weight"], params[f"{name}.bias"])
            out = operator(out, *weights, _single(layer.stride), _single(layer.padding))
        elif isinstance(layer, (nn.ReLU, nn.Tanh)):
            out = layer(out)  # elementwise: all members at once
        elif isinstance(layer, nn.Flatten):
            out = out.flatten(2)  # a single run's Flatten(1), past the member axis
        elif isinstance(layer, nn.Unflatten):
            out = out.reshape(*out.shape[:2], *layer.unflattened_size)
        else:
            raise InvalidSetting(f"the bmm mechanism has no batched form of {type(layer).__name__}")
    return out


def forward(
    model: nn.Module, params: dict[str, torch.Tensor], images: torch.Tensor, noise: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Every member's ``BetaVAE.forward(images[k], noise[k])`` with its own weights
    ``params[name][k]``: ``(K, N, d)`` means and log-variances, ``(K, N, 1, 64, 64)`` logits.
    ``model`` gives only the architecture (its own weights may be on the meta device)."""
    mean, logvar = sequential(model.encoder, "encoder", params, images).chunk(2, dim=-1)
    latents = mean + torch.exp(0.5 * logvar) * noise
    return mean, logvar, sequential(model.decoder, "decoder", params, latents)
