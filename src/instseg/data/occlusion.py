"""Occlusion data: occluder targets from plain masks and the COCO-OCC split (survey Sect. 3.3).

BCNet's first graph layer is supervised with the *occluder* of each instance: the union of the
other instances that cover part of it inside its box (Eq. 3.8's GT_S; its contour, Eq. 3.7's
GT_B, is derived later on the RoI grid). :func:`compute_occluder_masks` builds those masks on
the fly from the instance masks of one image, with a depth order when the data has one
(synthetic scenes, amodal datasets) and with the original release's box-overlap rule otherwise
(plain COCO).

:func:`extract_coco_occ` writes the COCO-OCC split: the images of a COCO annotation file in
which at least one pair of (non-crowd) objects overlaps by a box IoU of at least 0.2.
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor

from instseg.utils.io import atomic_write_json, read_json

__all__ = [
    "compute_occluder_masks",
    "box_overlap",
    "box_regions",
    "extract_coco_occ",
    "occluded_instance_ids",
]

logger = logging.getLogger(__name__)

OverlapMeasure = Literal["iou", "ios"]


def compute_occluder_masks(
    masks: Tensor,
    boxes: Tensor,
    *,
    depth: Tensor | None = None,
    rule: Literal["auto", "depth", "overlap"] = "auto",
    iou_thresh: float = 0.05,
    min_pixels: int = 20,
    amodal_masks: Tensor | None = None,
    crop: bool = True,
) -> Tensor:
    """Occluder mask of every instance of one image: (N, H, W) bool.

    Both rules return, for instance i, the union of the selected other instances' visible
    masks, cropped to i's box (every pixel the xyxy box touches, see :func:`box_regions`):

    - ``"depth"`` (needs ``depth`` (N,), smaller = nearer the camera): instance j is selected
      when ``depth[j] < depth[i]`` and j's visible mask touches i's region: i's amodal mask when
      ``amodal_masks`` is given (then j truly hides part of i), else i's box. Ties never occlude.
      ``iou_thresh`` and ``min_pixels`` are not used.
    - ``"overlap"`` (plain COCO, no depth order; the original BCNet release's rule): every other
      instance j whose box IoU with i's box exceeds ``iou_thresh`` (0.05) is selected, without
      any front/back order, and the cropped union is kept only when it has more than
      ``min_pixels`` (20) pixels (else the occluder is empty). The release measures IoU with
      the "+1" pixel convention; here boxes are continuous pixel-edge xyxy, like
      :func:`instseg.structures.masks.masks_to_boxes`.
    - ``"auto"``: ``"depth"`` when ``depth`` is given, else ``"overlap"``.

    Args:
        masks: (N, H, W) bool visible (modal) masks.
        boxes: (N, 4) float xyxy boxes in pixels (usually the boxes of the targets).
        depth: (N,) depth order or None.
        amodal_masks: (N, H, W) bool or None, used by the depth rule only.
        crop: False keeps the selected instances' whole masks instead of cutting them to i's
            box (the convention of :mod:`instseg.data.synthetic`'s stored occluder masks, to
            which the depth rule with amodal masks is then equal); selection and the
            ``min_pixels`` test (on the part inside the box) are unchanged. RoI projection
            crops either way, so the two differ only where a proposal exceeds the GT box.

    Returns:
        (N, H, W) bool occluder masks (all False for an instance nothing overlaps).
    """
    n, h, w = _check_masks(masks, "masks")
    if boxes.shape != (n, 4):
        raise ValueError(f"boxes must be ({n}, 4), got {tuple(boxes.shape)}")
    if rule == "auto":
        rule = "depth" if depth is not None else "overlap"
    if rule not in ("depth", "overlap"):
        raise ValueError(f"rule must be 'auto', 'depth' or 'overlap', got {rule!r}")
    order = _check_depth(depth, amodal_masks, masks.shape) if rule == "depth" else None
    out = torch.zeros_like(masks)
    if n == 0:
        return out
    pairs = box_overlap(boxes, boxes, measure="iou").to(masks.device) > iou_thresh
    pairs.fill_diagonal_(False)
    for i, (x0, y0, x1, y1) in enumerate(_pixel_bounds(boxes, (h, w))):
        if x1 <= x0 or y1 <= y0:
            continue
        inside = masks[:, y0:y1, x0:x1]  # every instance inside i's box, (N, h', w') view
        if order is not None:
            selected = _nearer_and_touching(i, inside, masks, order, amodal_masks)
        else:
            selected = pairs[i]
        if not selected.any():
            continue
        union = inside[selected].any(dim=0)
        if rule == "overlap" and int(union.sum()) <= min_pixels:
            continue
        if crop:
            out[i, y0:y1, x0:x1] = union
        else:
            out[i] = masks[selected].any(dim=0)
    return out


def box_regions(boxes: Tensor, image_size: tuple[int, int]) -> Tensor:
    """(N, 4) xyxy -> (N, H, W) bool: pixel (y, x) is in box i when the unit square
    [x, x+1) x [y, y+1) overlaps the box with positive area (partly covered pixels count)."""
    h, w = image_size
    b = boxes.float().cpu()
    xs = torch.arange(w, dtype=torch.float32)
    ys = torch.arange(h, dtype=torch.float32)
    in_x = (xs[None] + 1 > b[:, 0:1]) & (xs[None] < b[:, 2:3])  # (N, W)
    in_y = (ys[None] + 1 > b[:, 1:2]) & (ys[None] < b[:, 3:4])  # (N, H)
    return in_y[:, :, None] & in_x[:, None, :]


def box_overlap(a: Tensor, b: Tensor, *, measure: OverlapMeasure = "iou") -> Tensor:
    """Pairwise overlap of xyxy boxes (N, 4) and (M, 4) -> (N, M) float.

    ``"iou"``: intersection / union; ``"ios"``: intersection / area of the smaller box.
    Degenerate (zero-area) boxes give 0. Computed in float64; returned as float64 when an
    input is float64, else float32.
    """
    dtype = torch.float64 if torch.float64 in (a.dtype, b.dtype) else torch.float32
    a = a.double()
    b = b.double()
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(dim=2)
    area_a = (a[:, 2:] - a[:, :2]).clamp(min=0).prod(dim=1)
    area_b = (b[:, 2:] - b[:, :2]).clamp(min=0).prod(dim=1)
    if measure == "iou":
        denom = area_a[:, None] + area_b[None, :] - inter
    elif measure == "ios":
        denom = torch.minimum(area_a[:, None], area_b[None, :])
    else:
        raise ValueError(f"measure must be 'iou' or 'ios', got {measure!r}")
    out = torch.where(denom > 0, inter / denom.clamp(min=1e-12), torch.zeros_like(inter))
    return out.to(dtype)


def extract_coco_occ(
    gt_json: str | Path,
    out_json: str | Path,
    *,
    min_overlap: float = 0.2,
    measure: OverlapMeasure = "iou",
) -> dict[str, int]:
    """Write the COCO-OCC split of a COCO annotation file (survey Sect. 3.3).

    The survey keeps the images "where the overlapping ratio between the bounding boxes of
    objects is at least 0.2". We read the overlapping ratio as the box IoU (the usual meaning
    of "overlap ratio" in detection, and the measure the release uses for occluder pairs) of
    two non-crowd annotations of the same image: an image is kept when some pair has IoU >=
    ``min_overlap``. ``measure="ios"`` (intersection over the smaller box) is the looser
    alternative. The original release picked its 1,005 val2017 images from a folder of
    visualisations (a list, not a rule), so that count is not reproduced exactly.

    The output keeps every top-level key of the input (info, licenses, categories, ...) with
    ``images`` reduced to the kept images and ``annotations`` to all of their annotations
    (crowd ones included, so crowd regions stay ignored in evaluation). Annotations without a
    usable ``bbox`` are skipped for the overlap test and counted in one warning.

    Returns:
        ``{"num_images_in", "num_images_out", "num_annotations_out", "num_bad_annotations"}``.
    """
    gt_json = Path(gt_json)
    data = read_json(gt_json)
    if not isinstance(data, dict):
        raise ValueError(f"{gt_json}: expected a COCO JSON object, got {type(data).__name__}")
    for key in ("images", "annotations"):
        if not isinstance(data.get(key), list):
            raise ValueError(f"{gt_json}: COCO JSON needs a list under '{key}'")
    boxes_per_image: dict[Any, list[list[float]]] = defaultdict(list)
    bad = 0
    for ann in data["annotations"]:
        box = _xyxy(ann)
        if box is None:
            bad += 1
        elif not ann.get("iscrowd", 0):
            boxes_per_image[ann.get("image_id")].append(box)
    if bad:
        logger.warning("%s: %d annotations without a valid bbox were skipped", gt_json, bad)
    keep = {
        img_id
        for img_id, boxes in boxes_per_image.items()
        if _max_pair_overlap(boxes, measure) >= min_overlap
    }
    images = [im for im in data["images"] if im.get("id") in keep]
    anns = [a for a in data["annotations"] if a.get("image_id") in keep]
    atomic_write_json(out_json, {**data, "images": images, "annotations": anns})
    return {
        "num_images_in": len(data["images"]),
        "num_images_out": len(images),
        "num_annotations_out": len(anns),
        "num_bad_annotations": bad,
    }


def occluded_instance_ids(
    annotations: Iterable[Mapping[str, Any]],
    *,
    min_overlap: float = 0.2,
    measure: OverlapMeasure = "iou",
) -> set[Any]:
    """Ids of the non-crowd COCO annotations whose box overlaps another non-crowd box of the
    same image by at least ``min_overlap`` (for "AP on occluded instances").

    Without a depth order both members of a pair are marked: each may hide the other.
    Annotations without a usable ``bbox`` or ``id`` are ignored.
    """
    per_image: dict[Any, list[tuple[Any, list[float]]]] = defaultdict(list)
    for ann in annotations:
        box = _xyxy(ann)
        if box is not None and "id" in ann and not ann.get("iscrowd", 0):
            per_image[ann.get("image_id")].append((ann["id"], box))
    out: set[Any] = set()
    for items in per_image.values():
        if len(items) < 2:
            continue
        t = torch.tensor([b for _, b in items], dtype=torch.float64)
        ov = box_overlap(t, t, measure=measure)
        ov.fill_diagonal_(0)
        hit = (ov >= min_overlap).any(dim=1)
        out.update(items[i][0] for i in torch.nonzero(hit).flatten().tolist())
    return out


def _nearer_and_touching(
    i: int, inside: Tensor, masks: Tensor, depth: Tensor, amodal: Tensor | None
) -> Tensor:
    """(N,) bool: instance j is nearer than i and its mask touches i's amodal mask (when
    given) or i's box (``inside``: all masks cut to i's box)."""
    if amodal is None:
        touch = inside.flatten(1).any(dim=1)
    else:
        ys = torch.nonzero(amodal[i].any(dim=1)).flatten()
        xs = torch.nonzero(amodal[i].any(dim=0)).flatten()
        if ys.numel() == 0:
            return torch.zeros(masks.shape[0], dtype=torch.bool, device=masks.device)
        y0, y1, x0, x1 = int(ys[0]), int(ys[-1]) + 1, int(xs[0]), int(xs[-1]) + 1
        ref = amodal[i, y0:y1, x0:x1]
        touch = (masks[:, y0:y1, x0:x1] & ref).flatten(1).any(dim=1)
    d = depth.to(masks.device)
    return touch & (d < d[i])


def _check_depth(depth: Tensor | None, amodal: Tensor | None, shape: torch.Size) -> Tensor:
    if depth is None:
        raise ValueError("rule='depth' needs depth (N,)")
    if depth.shape != (shape[0],):
        raise ValueError(f"depth must be ({shape[0]},), got {tuple(depth.shape)}")
    if amodal is not None:
        _check_masks(amodal, "amodal_masks")
        if amodal.shape != shape:
            raise ValueError(f"amodal_masks {tuple(amodal.shape)} != masks {tuple(shape)}")
    return depth


def _pixel_bounds(boxes: Tensor, image_size: tuple[int, int]) -> list[tuple[int, int, int, int]]:
    """(N, 4) xyxy -> integer pixel ranges [x0, x1) x [y0, y1) of :func:`box_regions`."""
    h, w = image_size
    b = boxes.detach().double().cpu()
    lo = b[:, :2].floor()
    hi = b[:, 2:].ceil()
    x0 = lo[:, 0].clamp(0, w).long().tolist()
    y0 = lo[:, 1].clamp(0, h).long().tolist()
    x1 = hi[:, 0].clamp(0, w).long().tolist()
    y1 = hi[:, 1].clamp(0, h).long().tolist()
    return list(zip(x0, y0, x1, y1, strict=True))


def _check_masks(masks: Tensor, name: str) -> tuple[int, int, int]:
    if masks.ndim != 3:
        raise ValueError(f"{name} must be (N, H, W), got {tuple(masks.shape)}")
    if masks.dtype != torch.bool:
        raise ValueError(f"{name} must be bool, got {masks.dtype}")
    n, h, w = masks.shape
    return n, h, w


def _xyxy(ann: Mapping[str, Any]) -> list[float] | None:
    """COCO ``bbox`` [x, y, w, h] -> [x1, y1, x2, y2], or None when missing/malformed."""
    box = ann.get("bbox")
    if not isinstance(box, (list, tuple)) or len(box) != 4:
        return None
    try:
        x, y, bw, bh = (float(v) for v in box)
    except (TypeError, ValueError):
        return None
    if not all(map(math.isfinite, (x, y, bw, bh))) or bw < 0 or bh < 0:
        return None
    return [x, y, x + bw, y + bh]


def _max_pair_overlap(boxes: list[list[float]], measure: OverlapMeasure) -> float:
    if len(boxes) < 2:
        return 0.0
    t = torch.tensor(boxes, dtype=torch.float64)
    ov = box_overlap(t, t, measure=measure)
    ov.fill_diagonal_(0)
    return float(ov.max())
