"""Geometric ops on :class:`Instances`."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from instseg.structures.instances import Instances

__all__ = ["paint_instances", "resize_instances", "resize_masks"]


def resize_instances(inst: Instances, out_size: tuple[int, int]) -> Instances:
    """Map instances from ``inst.image_size`` (h, w) to ``out_size`` (H, W): boxes are scaled
    by (W/w, H/h); masks (and amodal/occluder masks, cropped to (h, w) first, which drops any
    batch padding) are resized with bilinear interpolation of their 0/1 values and
    thresholded at 0.5."""
    h, w = inst.image_size
    oh, ow = int(out_size[0]), int(out_size[1])
    if (h, w) == (oh, ow):
        return inst
    boxes = inst.boxes.float().clone()
    boxes[:, 0::2] *= ow / w
    boxes[:, 1::2] *= oh / h
    changes: dict[str, Any] = {"image_size": (oh, ow), "boxes": boxes}
    for name in ("masks", "amodal_masks", "occluder_masks"):
        m = getattr(inst, name)
        if m is not None:
            changes[name] = resize_masks(m[:, :h, :w], (oh, ow))
    return inst.replace(**changes)


def resize_masks(masks: torch.Tensor, size: tuple[int, int], chunk: int = 32) -> torch.Tensor:
    """(N, h, w) bool/float masks -> (N, H, W) bool (bilinear on 0/1 values, > 0.5), in chunks
    to bound memory."""
    if masks.shape[0] == 0:
        return torch.zeros((0, *size), dtype=torch.bool, device=masks.device)
    out = []
    for part in masks.split(chunk):
        x = part.float()[:, None]
        out.append(F.interpolate(x, size=size, mode="bilinear", align_corners=False)[:, 0] > 0.5)
    return torch.cat(out)


def paint_instances(inst: Instances) -> np.ndarray:
    """(H, W) int32: 1 + index of the instance owning each pixel (higher score on top), 0 =
    background."""
    h, w = inst.image_size
    index = np.zeros((h, w), np.int32)
    if inst.masks is None or len(inst) == 0:
        return index
    scores = inst.scores if inst.scores is not None else torch.ones(len(inst))
    for i in scores.argsort().tolist():
        index[inst.masks[i].numpy()] = i + 1
    return index
