"""Multi-level RoIAlign over FPN levels with a choice of pixel model (``aligned``).

torchvision's ``MultiScaleRoIAlign`` always samples with ``aligned=False``: a box edge at image
coordinate x is read at feature coordinate ``x / stride``, i.e. feature pixel i is taken to be
centred on image coordinate ``i * stride`` instead of ``(i + 0.5) * stride``. The GT masks are
projected onto the RoIs with ``aligned=True`` (:func:`instseg.models.segmenter.project_masks`),
so pooled features and mask targets disagreed by half a feature pixel (2-16 image pixels on
P2-P5), worst for thin contour targets. :class:`FPNRoIAlign` pools with
``torchvision.ops.roi_align(..., aligned=True)`` (the ``-0.5`` pixel offset of detectron2's
ROIAlignV2), with the same level rule (FPN Eq. 1: ``k = floor(4 + log2(sqrt(wh) / 224))``,
clamped to the pooled levels), and with ``aligned=False`` reproduces ``MultiScaleRoIAlign``
exactly (models trained before this module).

The scales come from the FPN strides given at construction (torchvision infers them from the
feature and image sizes: the same powers of two for inputs padded to the largest stride). The
levels are merged with a scatter, so the module traces for ONNX with a dynamic number of boxes
(opset >= 16 for ``aligned=True``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn
from torchvision.ops import roi_align

__all__ = ["FPNRoIAlign", "fpn_levels"]


class FPNRoIAlign(nn.Module):
    """``forward(features, boxes, image_shapes) -> (R, C, S, S)``, R = total boxes.

    Args:
        featmap_names: the FPN levels to pool from, finest first (e.g. ``["p2", ..., "p5"]``).
        strides: their strides in image pixels (powers of two, increasing).
        output_size: S (or (Sh, Sw)).
        sampling_ratio: bilinear samples per bin side (0: adaptive, as ``roi_align``).
        aligned: half-pixel-correct sampling (True) or torchvision's legacy pixel model (False).
        canonical_scale / canonical_level: 224 and 4 of FPN Eq. 1.
    """

    def __init__(
        self,
        featmap_names: Sequence[str],
        strides: Sequence[int],
        output_size: int | tuple[int, int],
        *,
        sampling_ratio: int = 2,
        aligned: bool = True,
        canonical_scale: int = 224,
        canonical_level: int = 4,
    ) -> None:
        super().__init__()
        if len(featmap_names) != len(strides) or not featmap_names:
            raise ValueError(f"need one stride per level: {list(featmap_names)} vs {list(strides)}")
        levels = [math.log2(s) for s in strides]
        if any(k != int(k) for k in levels) or levels != sorted(set(levels)):
            raise ValueError(f"strides must be increasing powers of two, got {list(strides)}")
        self.featmap_names = list(featmap_names)
        self.strides = [int(s) for s in strides]
        self.output_size = (
            (int(output_size), int(output_size))
            if isinstance(output_size, int)
            else (int(output_size[0]), int(output_size[1]))
        )
        self.sampling_ratio = int(sampling_ratio)
        self.aligned = bool(aligned)
        self.canonical_scale = canonical_scale
        self.canonical_level = canonical_level
        self.k_min, self.k_max = int(levels[0]), int(levels[-1])
        consecutive = [int(k) for k in levels] == list(range(self.k_min, self.k_max + 1))
        if not consecutive:
            raise ValueError(f"strides must be consecutive powers of two, got {list(strides)}")

    def forward(
        self,
        x: Mapping[str, Tensor],
        boxes: Sequence[Tensor],
        image_shapes: Sequence[tuple[int, int]] | None = None,
    ) -> Tensor:
        """x: {name: (B, C, H/s, W/s)}; boxes: B tensors (R_b, 4) xyxy in image pixels;
        image_shapes: unused (the scales are the strides), kept for torchvision's signature.
        -> (sum R_b, C, S, S) in the first level's dtype."""
        feats = [x[n] for n in self.featmap_names]
        rois = _roi_format(boxes)
        if len(feats) == 1:
            return self._pool(feats[0], rois, self.strides[0])
        levels = fpn_levels(
            rois[:, 1:],
            k_min=self.k_min,
            k_max=self.k_max,
            canonical_scale=self.canonical_scale,
            canonical_level=self.canonical_level,
        )
        first = feats[0]
        sh, sw = self.output_size
        result = first.new_zeros((rois.shape[0], first.shape[1], sh, sw))
        for i, (feat, stride) in enumerate(zip(feats, self.strides, strict=True)):
            idx = torch.where(levels == i)[0]
            pooled = self._pool(feat, rois[idx], stride).to(result.dtype)
            index = idx.view(-1, 1, 1, 1).expand(-1, pooled.shape[1], sh, sw)
            result = result.scatter(0, index, pooled)
        return result

    def _pool(self, feat: Tensor, rois: Tensor, stride: int) -> Tensor:
        return roi_align(  # float32 rois also with bf16 features (roi_align's autocast casts)
            feat,
            rois,
            output_size=self.output_size,
            spatial_scale=1.0 / stride,
            sampling_ratio=self.sampling_ratio,
            aligned=self.aligned,
        )

    def extra_repr(self) -> str:
        return (
            f"featmap_names={self.featmap_names}, strides={self.strides}, "
            f"output_size={self.output_size}, sampling_ratio={self.sampling_ratio}, "
            f"aligned={self.aligned}"
        )


def fpn_levels(
    boxes: Tensor,
    *,
    k_min: int,
    k_max: int,
    canonical_scale: int = 224,
    canonical_level: int = 4,
    eps: float = 1e-6,
) -> Tensor:
    """FPN Eq. 1 for boxes (R, 4) xyxy -> int64 (R,) level index 0..k_max-k_min:
    ``clamp(floor(k0 + log2(sqrt(area) / s0) + eps), k_min, k_max) - k_min`` (torchvision's
    ``LevelMapper``)."""
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    s = torch.sqrt(area)
    k = torch.floor(canonical_level + torch.log2(s / canonical_scale) + eps)
    k = torch.clamp(k, min=k_min, max=k_max)
    return (k.to(torch.int64) - k_min).to(torch.int64)


def _roi_format(boxes: Sequence[Tensor]) -> Tensor:
    """B tensors (R_b, 4) -> (R, 5) rows ``[batch index, x0, y0, x1, y1]``."""
    cat = torch.cat(list(boxes), dim=0)
    ids = torch.cat(
        [torch.full_like(b[:, :1], i, dtype=cat.dtype) for i, b in enumerate(boxes)], dim=0
    )
    return torch.cat([ids, cat], dim=1)
