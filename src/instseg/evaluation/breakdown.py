"""COCO AP broken down per category and per occlusion level (for reports and error analysis).

Both use the official pycocotools protocol of :func:`~instseg.evaluation.coco.evaluate_coco`:

- :func:`per_category_metrics`: one COCOeval run per IoU type; each category's numbers are the
  accumulated precision / recall sliced to that category (``class_split={name: [id]}``), so they
  equal pycocotools run with ``params.catIds=[id]``.
- :func:`occlusion_level_metrics`: GT instances are binned by ``occlusion_ratio`` (1 - visible
  area / amodal area, written by :func:`~instseg.evaluation.amodal.to_coco_gt`); for each level
  the instances of the other levels become crowd regions (``iscrowd=1``), exactly as
  :func:`~instseg.evaluation.amodal.occluded_gt` does for "occluded" vs "not occluded":
  detections on them are ignored, only the level's instances are positives.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from instseg.evaluation.coco import evaluate_coco

__all__ = ["OCCLUSION_LEVELS", "per_category_metrics", "occlusion_level_metrics"]

# (name, low, high]: an instance is in a level when low < ratio <= high ("none" includes 0).
OCCLUSION_LEVELS: tuple[tuple[str, float, float], ...] = (
    ("none (<= 0.1)", -1.0, 0.1),
    ("partial (0.1-0.5]", 0.1, 0.5),
    ("heavy (> 0.5)", 0.5, 1.0),
)


def per_category_metrics(
    gt: dict[str, Any],
    results: str | Path | list[dict[str, Any]],
    *,
    iou_type: str = "segm",
    img_ids: Sequence[int] | None = None,
) -> dict[str, dict[str, float]]:
    """``{"all": metrics, <category name>: metrics, ...}`` (percent, NaN where no GT) of
    ``results`` against the plain COCO ``gt`` dict; categories in the GT's order, a repeated
    name gets its id appended."""
    cats = gt.get("categories") or []
    split: dict[str, list[int]] = {}
    for c in cats:
        name = str(c.get("name", c["id"]))
        split[name if name not in split and name != "all" else f"{name} ({c['id']})"] = [
            int(c["id"])
        ]
    m = evaluate_coco(gt, results, iou_type=iou_type, class_split=split, img_ids=img_ids)
    out = {"all": {k: v for k, v in m.items() if not isinstance(v, dict)}}
    out.update({name: m[name] for name in split})
    return out


def occlusion_level_metrics(
    gt: dict[str, Any],
    results: str | Path | list[dict[str, Any]],
    *,
    iou_type: str = "segm",
    levels: Sequence[tuple[str, float, float]] = OCCLUSION_LEVELS,
    img_ids: Sequence[int] | None = None,
) -> dict[str, dict[str, Any]]:
    """``{level name: {"instances": n, **metrics}}`` for the GT instances whose
    ``occlusion_ratio`` lies in each level (``gt`` as written by ``to_coco_gt``). Returns ``{}``
    when no annotation has a ratio (plain COCO without amodal masks); a level without instances
    gets only ``{"instances": 0}``."""
    anns = gt.get("annotations") or []
    if not any(a.get("occlusion_ratio") is not None for a in anns):
        return {}
    out: dict[str, dict[str, Any]] = {}
    for name, lo, hi in levels:

        def inside(a: dict[str, Any], lo: float = lo, hi: float = hi) -> bool:
            r = a.get("occlusion_ratio")
            return r is not None and not a.get("iscrowd", 0) and lo < float(r) <= hi

        level_anns = [{**a, "iscrowd": 0 if inside(a) else 1} for a in anns]
        n = sum(1 for a in anns if inside(a))
        if n == 0:
            out[name] = {"instances": 0}
            continue
        level_gt = {**gt, "annotations": level_anns}
        m = evaluate_coco(level_gt, results, iou_type=iou_type, img_ids=img_ids)
        out[name] = {"instances": n, **{k: v for k, v in m.items() if not isinstance(v, dict)}}
    return out
