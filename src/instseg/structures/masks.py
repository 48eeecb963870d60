"""Mask conversions bitmap <-> COCO RLE <-> polygon (through pycocotools) and mask geometry.

Bitmaps are bool/uint8 arrays (H, W). RLE dicts are COCO compressed RLE
``{"size": [h, w], "counts": str}``; uncompressed RLE (counts as a list) is accepted on input.
Polygons are lists of flat ``[x0, y0, x1, y1, ...]`` float lists in pixel coordinates.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
import pycocotools.mask as mask_util
import torch
from torch import Tensor

__all__ = [
    "mask_to_rle",
    "rle_to_mask",
    "polygons_to_mask",
    "mask_to_polygons",
    "segmentation_to_mask",
    "masks_to_boxes",
    "mask_iou",
    "is_valid_polygon",
]


def mask_to_rle(mask: np.ndarray | Tensor) -> dict[str, Any]:
    """(H, W) bool/uint8 -> COCO compressed RLE with ``counts`` as str (JSON-ready)."""
    if isinstance(mask, Tensor):
        mask = mask.detach().cpu().numpy()
    arr = np.asfortranarray(np.asarray(mask, dtype=np.uint8))
    rle = mask_util.encode(arr)
    rle["counts"] = rle["counts"].decode("ascii")
    return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": rle["counts"]}


def rle_to_mask(rle: dict[str, Any]) -> np.ndarray:
    """COCO RLE (compressed or uncompressed counts) -> (H, W) bool."""
    if "size" not in rle or "counts" not in rle:
        raise ValueError(f"RLE must have 'size' and 'counts', got keys {sorted(rle)}")
    h, w = int(rle["size"][0]), int(rle["size"][1])
    counts = rle["counts"]
    if isinstance(counts, list):
        if sum(counts) != h * w:
            raise ValueError(f"uncompressed RLE counts sum to {sum(counts)}, expected {h * w}")
        r = mask_util.frPyObjects({"size": [h, w], "counts": counts}, h, w)
    else:
        r = {
            "size": [h, w],
            "counts": counts.encode("ascii") if isinstance(counts, str) else counts,
        }
    return mask_util.decode(r).astype(bool)


def is_valid_polygon(poly: Any) -> bool:
    """A polygon needs >= 3 points (6 finite numbers, an even count) and a non-zero area."""
    if not isinstance(poly, (list, tuple)) or len(poly) < 6 or len(poly) % 2:
        return False
    try:
        pts = np.asarray(poly, dtype=np.float64).reshape(-1, 2)
    except (TypeError, ValueError):
        return False
    if not np.isfinite(pts).all():
        return False
    x, y = pts[:, 0], pts[:, 1]
    area = 0.5 * abs(float(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))))
    return area > 0.0


def polygons_to_mask(polygons: list[list[float]], height: int, width: int) -> np.ndarray:
    """Rasterise polygons with pycocotools (COCO's own convention). Invalid parts are ignored;
    if none is valid the mask is empty."""
    valid = [list(map(float, p)) for p in polygons if is_valid_polygon(p)]
    if not valid:
        return np.zeros((height, width), dtype=bool)
    rles = mask_util.frPyObjects(valid, height, width)
    return mask_util.decode(mask_util.merge(rles)).astype(bool)


def mask_to_polygons(mask: np.ndarray | Tensor, *, min_area: float = 0.0) -> list[list[float]]:
    """Outer contours of a bitmap as COCO polygons (holes are not represented).

    The contour is traced on the mask upsampled 2x and mapped back, so it runs a quarter pixel
    inside the pixel edges: rasterising the result with :func:`polygons_to_mask` gives back the
    mask exactly (for masks without holes). Parts whose polygon area (pixels^2) is below
    ``min_area`` are dropped; a single pixel has area 0.25.
    """
    if isinstance(mask, Tensor):
        mask = mask.detach().cpu().numpy()
    m = np.asarray(mask, dtype=np.uint8)
    up = np.ascontiguousarray(np.repeat(np.repeat(m, 2, axis=0), 2, axis=1))
    contours, _ = cv2.findContours(up, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    out = []
    for c in contours:
        # sub-pixel centre k -> continuous coordinate (k + 0.5) / 2
        pts = (c.reshape(-1, 2).astype(np.float64) + 0.5) / 2.0
        if pts.shape[0] < 3 or cv2.contourArea(pts.astype(np.float32)) < min_area:
            continue
        out.append(pts.flatten().tolist())
    return out


def segmentation_to_mask(segm: Any, height: int, width: int) -> np.ndarray:
    """Any COCO ``segmentation`` field (polygon list, RLE dict) -> (H, W) bool."""
    if isinstance(segm, list):
        return polygons_to_mask(segm, height, width)
    if isinstance(segm, dict):
        m = rle_to_mask(segm)
        if m.shape != (height, width):
            raise ValueError(f"RLE size {m.shape} does not match image size {(height, width)}")
        return m
    raise ValueError(f"unsupported segmentation type {type(segm).__name__}")


def masks_to_boxes(masks: Tensor) -> Tensor:
    """(N, H, W) bool -> (N, 4) float xyxy in pixel-edge coordinates (x1 = last col + 1).
    Empty masks give zero boxes."""
    if masks.numel() == 0:
        return torch.zeros(masks.shape[0], 4)
    n = masks.shape[0]
    any_y = masks.any(dim=2)
    any_x = masks.any(dim=1)
    boxes = torch.zeros(n, 4)
    nonempty = any_y.any(dim=1)
    for i in torch.nonzero(nonempty).flatten().tolist():
        ys = torch.nonzero(any_y[i]).flatten()
        xs = torch.nonzero(any_x[i]).flatten()
        boxes[i] = torch.tensor([xs[0], ys[0], xs[-1] + 1, ys[-1] + 1], dtype=torch.float32)
    return boxes


def mask_iou(a: Tensor, b: Tensor) -> Tensor:
    """Pairwise IoU of (N, H, W) and (M, H, W) bool masks -> (N, M) float."""
    a2 = a.flatten(1).float()
    b2 = b.flatten(1).float()
    inter = a2 @ b2.T
    union = a2.sum(1)[:, None] + b2.sum(1)[None, :] - inter
    return torch.where(union > 0, inter / union.clamp(min=1), torch.zeros_like(inter))
