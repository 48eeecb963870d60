"""Contour targets for the bilayer head (survey Eq. 3.7: "readily computed from mask annotations").

A contour is the morphological gradient of a binary mask: ``dilate(m) XOR erode(m)``, a band
of ``2 * width`` pixels straddling the boundary (``width`` outside + ``width`` inside), computed
with max-pooling so it runs batched on any device. Pixels outside the RoI grid do not erode the
mask: an object cut by the RoI border gets no contour along that border (the cut is an artifact
of the crop, not an object boundary). The original BCNet release does the same with
scikit-image's 4-connected binary dilation/erosion, i.e. ``footprint="cross"`` and ``width=1``.
"""

from __future__ import annotations

from typing import Literal

import torch.nn.functional as F
from torch import Tensor

__all__ = ["mask_contours"]


def mask_contours(
    masks: Tensor, *, width: int = 1, footprint: Literal["square", "cross"] = "square"
) -> Tensor:
    """Thin boundary band of each mask.

    Args:
        masks: (R, M, M) (or (R, H, W)) bool or float; floats are thresholded at 0.5 (soft
            targets projected by RoIAlign).
        width: structuring-element radius (kernel ``2 * width + 1``); 0 gives an empty contour.
        footprint: ``"square"`` (8-connected: one k x k max-pool, k = 2 * width + 1) or
            ``"cross"`` (4-connected: ``width`` passes of the 3x3 cross, i.e. a diamond).

    Returns:
        (R, M, M) float32 in {0, 1}: 1 where the dilation and the erosion differ.
    """
    if masks.ndim != 3:
        raise ValueError(f"mask_contours expects (R, H, W) masks, got {tuple(masks.shape)}")
    if width < 0:
        raise ValueError(f"width must be >= 0, got {width}")
    m = (masks > 0.5 if masks.is_floating_point() else masks.bool()).float().unsqueeze(1)
    if width == 0 or m.numel() == 0:
        return m.new_zeros(masks.shape)
    dilated = _max_filter(m, width, footprint)
    eroded = -_max_filter(-m, width, footprint)  # max_pool pads with -inf: the border is ignored
    return (dilated - eroded).squeeze(1)


def _max_filter(x: Tensor, r: int, footprint: str) -> Tensor:
    if footprint == "square":
        return F.max_pool2d(x, kernel_size=2 * r + 1, stride=1, padding=r)
    if footprint == "cross":  # r passes of the 3x3 cross: a diamond (L1 ball) of radius r
        for _ in range(r):
            rows = F.max_pool2d(x, kernel_size=(3, 1), stride=1, padding=(1, 0))
            cols = F.max_pool2d(x, kernel_size=(1, 3), stride=1, padding=(0, 1))
            x = rows.maximum(cols)
        return x
    raise ValueError(f"footprint must be 'square' or 'cross', got {footprint!r}")
