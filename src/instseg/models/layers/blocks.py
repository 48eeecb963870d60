"""Small conv blocks the RoI mask heads share (Mask R-CNN-style initialisation).

- :func:`conv_relu_stack`: ``n`` x (3x3 conv + ReLU), He (fan-out) init, zero bias
- :func:`upsample_relu`: 2x transposed conv + ReLU, same init (the heads' 14 -> 28 step)
- :func:`mask_predictor`: 1x1 conv with N(0, 0.001) weights and zero bias (logits start near 0)

Each module is initialised right after it is created, so a head built from them consumes the
random stream in construction order.
"""

from __future__ import annotations

from torch import nn

__all__ = ["conv_relu_stack", "mask_predictor", "upsample_relu"]


def conv_relu_stack(in_channels: int, channels: int, n: int) -> nn.Sequential:
    """(R, in_channels, S, S) -> (R, channels, S, S); ``n = 0`` is the identity."""
    layers: list[nn.Module] = []
    for i in range(n):
        conv = nn.Conv2d(in_channels if i == 0 else channels, channels, 3, padding=1)
        nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
        nn.init.zeros_(conv.bias)
        layers += [conv, nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


def upsample_relu(in_channels: int, channels: int) -> nn.Sequential:
    """(R, in_channels, S, S) -> (R, channels, 2S, 2S)."""
    deconv = nn.ConvTranspose2d(in_channels, channels, kernel_size=2, stride=2)
    nn.init.kaiming_normal_(deconv.weight, mode="fan_out", nonlinearity="relu")
    nn.init.zeros_(deconv.bias)
    return nn.Sequential(deconv, nn.ReLU(inplace=True))


def mask_predictor(in_channels: int, out_channels: int) -> nn.Conv2d:
    """(R, in_channels, M, M) -> (R, out_channels, M, M) logits."""
    conv = nn.Conv2d(in_channels, out_channels, 1)
    nn.init.normal_(conv.weight, std=0.001)
    nn.init.zeros_(conv.bias)
    return conv
