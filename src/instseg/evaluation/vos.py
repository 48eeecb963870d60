"""DAVIS video object segmentation: region similarity J and boundary F-measure, as the official
DAVIS evaluation code (``davis2017-evaluation``, ``metrics.py`` / ``evaluation.py``) defines them.

- **J** = |pred ∩ gt| / |pred ∪ gt| per object and frame; 1 when both are empty. GT void
  pixels (label 255) count as background in the semi-supervised protocol (the official code
  passes no void mask there; it uses one only for the unsupervised task); ``use_void=True``
  excludes them from J and F instead.
- **F**: thin boundary maps (``seg2bmap``: a pixel is boundary when it differs from its right,
  bottom or bottom-right neighbour; last row/column compare only along the border), a
  tolerance of ``ceil(0.008 * image diagonal)`` pixels, realised as a dilation with a disk of
  that radius (``skimage.morphology.disk``); precision = matched predicted boundary pixels /
  predicted boundary pixels, recall likewise for the GT boundary; ``F = 2PR / (P + R)``
  (0 when P + R = 0). Empty boundaries: both empty -> P = R = 1; only the prediction empty
  -> P = 1, R = 0; only the GT empty -> P = 0, R = 1.
- Per object, over its frames: **mean** (M), **recall** (O: fraction of frames > 0.5) and
  **decay** (D: mean of the first quarter minus the last quarter, the quarters as the
  official ``db_statistics`` cuts them; the official code casts the cut indices to uint8,
  which wraps for objects with more than 256 evaluated frames; here they are int64).
- Semi-supervised protocol (the default, ``exclude_first_last=True``): the official code
  drops the first frame (it is given as input) and the last frame of every sequence before
  computing the statistics. With ``exclude_first_last=False`` all frames count.
- Global: ``J&F-Mean = (mean_objects J-M + mean_objects F-M) / 2``, means over all objects of
  all sequences (not over sequences).

Objects are ids 1..max of the first GT frame, as the official code counts them (the ids in
any GT frame when the first is empty); a predicted label map marks object k with k.
Unsupervised DAVIS (matching predicted to GT objects) is not implemented.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from skimage.morphology import disk

from instseg.data.davis import VOID_LABEL, read_davis_label

__all__ = [
    "region_similarity",
    "boundary_f_measure",
    "seg2bmap",
    "db_statistics",
    "evaluate_sequence",
    "evaluate_davis",
]

BOUND_TH = 0.008


def region_similarity(pred: np.ndarray, gt: np.ndarray, void: np.ndarray | None = None) -> float:
    """J of two (H, W) bool masks (void pixels excluded); 1 when both are empty."""
    pred, gt = pred.astype(bool), gt.astype(bool)
    if void is not None:
        keep = ~void.astype(bool)
        pred, gt = pred & keep, gt & keep
    union = int(np.count_nonzero(pred | gt))
    if union == 0:
        return 1.0
    return int(np.count_nonzero(pred & gt)) / union


def seg2bmap(seg: np.ndarray) -> np.ndarray:
    """(H, W) mask -> (H, W) bool thin boundary map (DAVIS ``seg2bmap`` at the same size)."""
    seg = seg.astype(bool)
    e = np.zeros_like(seg)
    s = np.zeros_like(seg)
    se = np.zeros_like(seg)
    e[:, :-1] = seg[:, 1:]
    s[:-1, :] = seg[1:, :]
    se[:-1, :-1] = seg[1:, 1:]
    b = (seg ^ e) | (seg ^ s) | (seg ^ se)
    b[-1, :] = seg[-1, :] ^ e[-1, :]
    b[:, -1] = seg[:, -1] ^ s[:, -1]
    b[-1, -1] = False
    return b


def boundary_f_measure(
    pred: np.ndarray,
    gt: np.ndarray,
    void: np.ndarray | None = None,
    *,
    bound_th: float = BOUND_TH,
) -> float:
    """F of two (H, W) masks. ``bound_th`` < 1 is a fraction of the image diagonal, >= 1 a
    radius in pixels."""
    pred, gt = pred.astype(bool), gt.astype(bool)
    if void is not None:
        keep = ~void.astype(bool)
        pred, gt = pred & keep, gt & keep
    radius = bound_th if bound_th >= 1 else math.ceil(bound_th * float(np.hypot(*gt.shape)))
    pb, gb = seg2bmap(pred), seg2bmap(gt)
    kernel = disk(radius).astype(np.uint8)
    pd = cv2.dilate(pb.astype(np.uint8), kernel).astype(bool)
    gd = cv2.dilate(gb.astype(np.uint8), kernel).astype(bool)
    n_p, n_g = int(pb.sum()), int(gb.sum())
    if n_p == 0 and n_g == 0:
        precision = recall = 1.0
    elif n_p == 0:
        precision, recall = 1.0, 0.0
    elif n_g == 0:
        precision, recall = 0.0, 1.0
    else:
        precision = int(np.count_nonzero(pb & gd)) / n_p
        recall = int(np.count_nonzero(gb & pd)) / n_g
    if precision + recall == 0:
        return 0.0
    return 2 * precision * recall / (precision + recall)


def db_statistics(values: Sequence[float]) -> tuple[float, float, float]:
    """(mean, recall = fraction > 0.5, decay) of one object's per-frame values."""
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        return math.nan, math.nan, math.nan
    mean = float(np.nanmean(x))
    recall = float(np.nanmean(x > 0.5))
    ids = (np.round(np.linspace(1, len(x), 5) + 1e-10) - 1).astype(np.int64)
    bins = [x[ids[i] : ids[i + 1] + 1] for i in range(4)]
    decay = float(np.nanmean(bins[0]) - np.nanmean(bins[3]))
    return mean, recall, decay


def evaluate_sequence(
    preds: Sequence[np.ndarray],
    gts: Sequence[np.ndarray],
    *,
    object_ids: Sequence[int] | None = None,
    exclude_first_last: bool = True,
    use_void: bool = False,
    bound_th: float = BOUND_TH,
) -> dict[int, dict[str, Any]]:
    """Per object: ``{"J": per-frame list, "F": per-frame list}`` for (H, W) label maps
    ``preds[t]`` / ``gts[t]`` (255 in the GT = void, see the module docstring)."""
    if len(preds) != len(gts):
        raise ValueError(f"{len(preds)} predicted frames for {len(gts)} GT frames")
    ids = list(object_ids) if object_ids is not None else _object_ids(gts)
    frames = range(1, len(gts) - 1) if exclude_first_last and len(gts) > 2 else range(len(gts))
    out: dict[int, dict[str, Any]] = {k: {"J": [], "F": []} for k in ids}
    for t in frames:
        gt, pred = gts[t], preds[t]
        if pred.shape != gt.shape:
            raise ValueError(f"frame {t}: prediction {pred.shape} vs GT {gt.shape}")
        void = gt == VOID_LABEL if use_void else None
        for k in ids:
            out[k]["J"].append(region_similarity(pred == k, gt == k, void))
            out[k]["F"].append(boundary_f_measure(pred == k, gt == k, void, bound_th=bound_th))
    return out


def evaluate_davis(
    pred_dir: str | Path,
    gt_dir: str | Path,
    sequences: Sequence[str] | None = None,
    *,
    exclude_first_last: bool = True,
) -> dict[str, Any]:
    """J&F of predicted label PNGs ``pred_dir/<seq>/<frame>.png`` against
    ``gt_dir/<seq>/<frame>.png`` (``gt_dir`` is e.g. ``DAVIS/Annotations/480p``).

    Returns ``{"J&F-Mean", "J-Mean", "J-Recall", "J-Decay", "F-Mean", "F-Recall",
    "F-Decay"}`` in percent (means over all objects of all sequences) and ``per_sequence``:
    ``{seq: {"J-Mean", "F-Mean", "J&F-Mean"}}`` (means over that sequence's objects).
    A missing predicted frame raises ``FileNotFoundError`` naming it.
    """
    pred_dir, gt_dir = Path(pred_dir), Path(gt_dir)
    if not gt_dir.is_dir():
        raise FileNotFoundError(f"{gt_dir}: GT annotation folder not found")
    seqs = (
        list(sequences)
        if sequences is not None
        else sorted(p.name for p in gt_dir.iterdir() if p.is_dir())
    )
    stats: dict[str, list[tuple[float, float, float]]] = {"J": [], "F": []}
    per_seq = {}
    for seq in seqs:
        gt_files = sorted((gt_dir / seq).glob("*.png"))
        if not gt_files:
            raise FileNotFoundError(f"{gt_dir / seq}: no GT .png frames")
        gts = [read_davis_label(p) for p in gt_files]
        preds = []
        for p in gt_files:
            q = pred_dir / seq / p.name
            if not q.is_file():
                raise FileNotFoundError(f"{q}: predicted frame missing")
            preds.append(read_davis_label(q))
        res = evaluate_sequence(preds, gts, exclude_first_last=exclude_first_last)
        seq_j, seq_f = [], []
        for obj in res.values():
            for key, bucket in (("J", seq_j), ("F", seq_f)):
                s = db_statistics(obj[key])
                stats[key].append(s)
                bucket.append(s[0])
        jm, fm = _nanmean(seq_j), _nanmean(seq_f)
        per_seq[seq] = {"J-Mean": jm * 100, "F-Mean": fm * 100, "J&F-Mean": (jm + fm) * 50}
    out: dict[str, Any] = {}
    for key in ("J", "F"):
        arr = np.array(stats[key], dtype=np.float64).reshape(-1, 3)
        for i, name in enumerate(("Mean", "Recall", "Decay")):
            out[f"{key}-{name}"] = _nanmean(arr[:, i]) * 100
    out["J&F-Mean"] = (out["J-Mean"] + out["F-Mean"]) / 2
    out["per_sequence"] = per_seq
    return out


def _object_ids(gts: Sequence[np.ndarray]) -> list[int]:
    first = gts[0][gts[0] != VOID_LABEL] if len(gts) else np.zeros(0)
    if first.size and first.max() > 0:
        return list(range(1, int(first.max()) + 1))
    return sorted({int(v) for g in gts for v in np.unique(g)} - {0, VOID_LABEL})


def _nanmean(x: Any) -> float:
    a = np.asarray(x, dtype=np.float64)
    return float(np.nanmean(a)) if a.size and not np.isnan(a).all() else math.nan
