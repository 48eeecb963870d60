"""Mask-head metrics with ground-truth boxes (issue 14's head benchmark), and paired bootstrap
intervals for comparing two heads on the same instances.

With the ground-truth box given, a mask head's errors are its own (the detector's are taken out):

- **GT-box mask IoU**: IoU of the head's mask (pasted into the GT box, thresholded at 0.5) with
  the instance's visible mask, per instance;
- **share on the occluder**: the fraction of the predicted mask that lies on the instance's
  occluders (the union of the instances in front of it): the error BCNet exists to fix;
- **layer-1 occluder IoU** (bilayer heads): IoU of the first graph layer's occluder mask with
  the occluders' mask inside the box (does layer 1 learn occluders at all?).

All masks are COCO RLEs of the full image (pycocotools), so the numbers are those of the
official mask arithmetic. :func:`paired_bootstrap` gives a percentile interval of the mean
difference of two heads' per-instance values, resampling *images* (instances of one image are
not independent) with the same resamples for every comparison.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from pycocotools import mask as mask_utils

__all__ = [
    "InstanceScores",
    "PairedInterval",
    "box_rle",
    "instance_scores",
    "paired_bootstrap",
    "occlusion_bins",
]


@dataclass(frozen=True)
class InstanceScores:
    """Per-instance values (NaN where undefined).

    - ``iou``: (N,) GT-box mask IoU with the visible mask
    - ``on_occluder``: (N,) share of the predicted mask's area on the occluders (NaN when the
      instance has no occluder or the prediction is empty)
    - ``occluder_iou``: (N,) layer-1 occluder IoU with the occluders inside the box (NaN when the
      head has no occluder output or the box holds no occluder pixel)
    - ``hidden_recall``: (N,) amodal completion: the share of the instance's hidden part
      (amodal mask on its occluders) that the prediction covers (NaN unless ``hidden`` was
      given and the instance has a hidden part)
    """

    iou: np.ndarray
    on_occluder: np.ndarray
    occluder_iou: np.ndarray
    hidden_recall: np.ndarray


def box_rle(box: Sequence[float], height: int, width: int) -> dict:
    """The RLE of the pixels whose centres lie in ``box`` (x0, y0, x1, y1), as pycocotools
    rasterises an xywh rectangle."""
    x0, y0, x1, y1 = (float(v) for v in box)
    bb = np.array([[x0, y0, x1 - x0, y1 - y0]], dtype=np.float64)
    return mask_utils.frPyObjects(bb, height, width)[0]


def _area(rle: dict) -> float:
    return float(mask_utils.area(rle))


def _iou(a: dict, b: dict) -> float:
    return float(mask_utils.iou([a], [b], [0])[0, 0])


def _intersect(a: dict, b: dict) -> dict:
    return mask_utils.merge([a, b], intersect=True)


def instance_scores(
    pred: Sequence[dict],
    visible: Sequence[dict],
    occluder: Sequence[dict],
    boxes: np.ndarray,
    *,
    pred_occluder: Sequence[dict] | None = None,
    hidden: Sequence[dict] | None = None,
) -> InstanceScores:
    """Per-instance metrics of one image or many (all sequences aligned, one item per instance).

    Args:
        pred: predicted visible masks (RLE of the full image, already thresholded).
        visible: ground-truth visible masks (RLE).
        occluder: ground-truth occluder masks (RLE; empty when nothing occludes the instance).
        boxes: (N, 4) xyxy ground-truth boxes (the boxes the head was run on).
        pred_occluder: the head's layer-1 occluder masks (RLE), or None.
        hidden: the amodal masks (RLE), or None; their part on the occluders is the hidden
            part whose coverage ``hidden_recall`` measures (amodal evaluation).
    """
    n = len(pred)
    if not (len(visible) == len(occluder) == len(boxes) == n):
        raise ValueError(
            f"instance_scores: {n} predictions, {len(visible)} visible, {len(occluder)} "
            f"occluder masks, {len(boxes)} boxes"
        )
    if pred_occluder is not None and len(pred_occluder) != n:
        raise ValueError(f"instance_scores: {len(pred_occluder)} occluder predictions for {n}")
    iou = np.full(n, np.nan)
    on_occ = np.full(n, np.nan)
    occ_iou = np.full(n, np.nan)
    hid = np.full(n, np.nan)
    if hidden is not None and len(hidden) != n:
        raise ValueError(f"instance_scores: {len(hidden)} amodal masks for {n}")
    for i in range(n):
        iou[i] = _iou(pred[i], visible[i])
        p_area = _area(pred[i])
        if _area(occluder[i]) > 0 and p_area > 0:
            on_occ[i] = _area(_intersect(pred[i], occluder[i])) / p_area
        if pred_occluder is not None:
            h, w = (int(v) for v in occluder[i]["size"])
            occ_in_box = _intersect(occluder[i], box_rle(boxes[i], h, w))
            if _area(occ_in_box) > 0:
                occ_iou[i] = _iou(pred_occluder[i], occ_in_box)
        if hidden is not None:
            part = _intersect(hidden[i], occluder[i])
            if _area(part) > 0:
                hid[i] = _area(_intersect(pred[i], part)) / _area(part)
    return InstanceScores(iou=iou, on_occluder=on_occ, occluder_iou=occ_iou, hidden_recall=hid)


def occlusion_bins(ratio: np.ndarray) -> dict[str, np.ndarray]:
    """Boolean selections by occlusion ratio (1 - visible / amodal area): ``unoccluded``
    (< 0.01), ``partial`` (0.01-0.3) and ``occluded`` (> 0.3, the benchmark's primary group)."""
    ratio = np.asarray(ratio, dtype=float)
    return {
        "unoccluded": ratio < 0.01,
        "partial": (ratio >= 0.01) & (ratio <= 0.3),
        "occluded": ratio > 0.3,
    }


@dataclass(frozen=True)
class PairedInterval:
    """Mean of a - b over instances (NaN pairs dropped) and its bootstrap percentile interval."""

    mean: float
    low: float
    high: float
    n: int

    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0


def paired_bootstrap(
    a: np.ndarray,
    b: np.ndarray,
    groups: np.ndarray,
    *,
    resamples: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> PairedInterval:
    """Interval of mean(a - b) over the instances where both are defined, resampling the
    ``groups`` (e.g. image ids) with replacement: each resample draws as many groups as there
    are and takes the mean difference over all instances of the drawn groups.

    a, b, groups: (N,) aligned per-instance values (e.g. one head's IoU averaged over seeds) and
    group ids. Deterministic for a given ``seed``.
    """
    a, b, groups = np.asarray(a, float), np.asarray(b, float), np.asarray(groups)
    if not (a.shape == b.shape == groups.shape) or a.ndim != 1:
        raise ValueError(f"paired_bootstrap: shapes {a.shape}, {b.shape}, {groups.shape}")
    ok = ~(np.isnan(a) | np.isnan(b))
    d, g = (a - b)[ok], groups[ok]
    if d.size == 0:
        return PairedInterval(float("nan"), float("nan"), float("nan"), 0)
    uniq, inv = np.unique(g, return_inverse=True)
    sums = np.bincount(inv, weights=d, minlength=len(uniq))
    counts = np.bincount(inv, minlength=len(uniq)).astype(float)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(uniq), size=(resamples, len(uniq)))
    means = sums[draws].sum(axis=1) / counts[draws].sum(axis=1)
    tail = (1.0 - level) / 2.0 * 100.0
    low, high = np.percentile(means, [tail, 100.0 - tail])
    return PairedInterval(float(d.mean()), float(low), float(high), int(d.size))
