"""Geometric ops on :class:`Instances`."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from instseg.structures.instances import Instances

__all__ = ["resize_instances"]


def resize_instances(inst: Instances, size: tuple[int, int]) -> Instances:
    """Map instances of an image of ``inst.image_size`` to an image of ``size`` = (H, W).

    Boxes are scaled per axis; every mask field is resized with bilinear interpolation of
    the binary mask thresholded at 0.5 (nearest for upscaling artefacts is avoided).
    """
    h0, w0 = inst.image_size
    h1, w1 = int(size[0]), int(size[1])
    if (h0, w0) == (h1, w1):
        return inst
    sx, sy = w1 / w0, h1 / h0
    boxes = inst.boxes * torch.tensor([sx, sy, sx, sy], dtype=inst.boxes.dtype, device=inst.boxes.device)
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, w1)
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, h1)

    def rm(m: torch.Tensor | None) -> torch.Tensor | None:
        if m is None:
            return None
        if m.shape[0] == 0:
            return m.new_zeros((0, h1, w1))
        out = F.interpolate(m[:, None].float(), size=(h1, w1), mode="bilinear", align_corners=False)
        return out[:, 0] >= 0.5

    return Instances(
        image_size=(h1, w1),
        boxes=boxes,
        labels=inst.labels,
        scores=inst.scores,
        masks=rm(inst.masks),
        occluder_masks=rm(inst.occluder_masks),
        amodal_masks=rm(inst.amodal_masks),
        track_ids=inst.track_ids,
        depth=inst.depth,
        extra=dict(inst.extra),
    )
