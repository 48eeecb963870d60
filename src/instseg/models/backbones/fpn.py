"""Feature Pyramid Network on top of a bottom-up backbone (survey ch. 3.2.1, "backbone + FPN").

Built from torchvision's :class:`~torchvision.ops.FeaturePyramidNetwork`. The extra top levels
come from a torchvision block: ``LastLevelP6P7`` (FCOS: P3-P7, P6 from P5 by a stride-2 conv) or
``LastLevelMaxPool`` (Faster R-CNN: P2-P6, P6 by subsampling P5), or none.
"""

from __future__ import annotations

from collections import OrderedDict

from torch import Tensor, nn
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.feature_pyramid_network import (
    ExtraFPNBlock,
    LastLevelMaxPool,
    LastLevelP6P7,
)

__all__ = ["FPN", "LastLevelMaxPool", "LastLevelP6P7"]


class FPN(nn.Module):
    """Bottom-up backbone + top-down FPN; the ``backbone`` an :class:`InstanceSegmenter` takes.

    forward: (B, 3, H, W) normalised image -> OrderedDict ``{"p{k}": (B, out_channels,
    ceil(H / 2^k), ceil(W / 2^k))}`` for each level k, finest first (e.g. p3..p7).

    Attributes read by detectors and the segmenter: ``out_channels`` (int), ``names``,
    ``strides`` (one per level), ``pixel_mean`` / ``pixel_std`` (of the bottom-up backbone, for
    0..255 RGB input).

    Args:
        bottom_up: module returning an OrderedDict of C-levels with attributes ``out_channels``
            (list), ``strides`` (list, powers of two) and ``pixel_mean`` / ``pixel_std``.
        out_channels: FPN width (256 classic; 64-128 for fast models).
        extra_blocks: ``LastLevelP6P7(out_channels, out_channels)``, ``LastLevelMaxPool()`` or
            None.
    """

    def __init__(
        self, *, bottom_up: nn.Module, out_channels: int, extra_blocks: ExtraFPNBlock | None
    ) -> None:
        super().__init__()
        self.bottom_up = bottom_up
        self.fpn = FeaturePyramidNetwork(
            in_channels_list=list(bottom_up.out_channels),
            out_channels=out_channels,
            extra_blocks=extra_blocks,
        )
        strides = list(bottom_up.strides)
        if isinstance(extra_blocks, LastLevelP6P7):
            strides += [strides[-1] * 2, strides[-1] * 4]
        elif isinstance(extra_blocks, LastLevelMaxPool):
            strides += [strides[-1] * 2]
        elif extra_blocks is not None:
            raise TypeError(
                f"extra_blocks must be LastLevelP6P7, LastLevelMaxPool or None, got "
                f"{type(extra_blocks).__name__}"
            )
        self.out_channels = int(out_channels)
        self.strides = strides
        self.names = [f"p{s.bit_length() - 1}" for s in strides]
        self.pixel_mean = tuple(bottom_up.pixel_mean)
        self.pixel_std = tuple(bottom_up.pixel_std)

    def forward(self, x: Tensor) -> OrderedDict[str, Tensor]:
        feats = self.fpn(self.bottom_up(x))
        return OrderedDict(zip(self.names, feats.values(), strict=True))
