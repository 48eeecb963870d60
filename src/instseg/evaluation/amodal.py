"""Occlusion-aware COCO metrics: amodal AP, AP on occluded instances, COCO-OCC subset AP
(survey ch. 3.3: Tables 3.1-3.7).

Every number is pycocotools COCO AP (:func:`instseg.evaluation.coco.evaluate_coco`) against a
*converted* standard COCO ground truth, written next to the results so it can be inspected:

- :func:`to_coco_gt` reads any layout of :mod:`instseg.data.coco` (plain COCO, the project's
  synthetic layout, KINS, updated KINS, COCOA, COCOA-cls) and writes a plain COCO GT whose
  ``segmentation`` is the **visible** or the **amodal** mask (amodal = amodal | visible, so an
  amodal mask always contains the visible one; an instance without an amodal mask keeps its
  visible mask). ``bbox`` is the visible box of the file (visible target) or the tight box of
  the amodal mask (amodal target; KINS amodal boxes may leave the image, masks do not); ``area``
  is the target mask's pixel count. Each annotation also gets ``occlusion_ratio`` = 1 - visible
  area / amodal area (None when the file has no amodal mask). COCOA regions (no ids, no
  classes) get category 1 "thing" / 2 "stuff" from ``isStuff`` unless they carry a
  ``category_id``, as :class:`~instseg.data.coco.CocoInstanceDataset` reads them. Annotation
  ids are renumbered 1..N in file order (the source id is kept in ``source_id``).
- **Amodal AP**: predictions scored against the amodal GT.
- **AP on occluded instances** (:func:`occluded_gt`): the same GT with every annotation that
  is *not* occluded turned into a crowd region (``iscrowd=1``). pycocotools then ignores the
  detections that fall on those instances (crowd matching: intersection over the detection's
  area >= the IoU threshold) and counts only occluded instances as positives; detections on
  empty background are still false positives. An instance is occluded when its
  ``occlusion_ratio`` > ``min_occlusion`` (default 0.1); annotations without a ratio (plain
  COCO) use the box rule of :func:`~instseg.data.occlusion.occluded_instance_ids` (box IoU
  with another object >= ``min_overlap``, 0.2). Crowd annotations of the source stay crowd.
  (pycocotools overwrites any ``ignore`` key from ``iscrowd``, so ``iscrowd`` is the one
  supported way to mark ignore regions.)
- **COCO-OCC subset AP**: the images chosen by
  :func:`~instseg.data.occlusion.extract_coco_occ` (a pair of non-crowd boxes with IoU >=
  ``min_overlap``), all of their instances, predictions of other images left out.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pycocotools.mask as mask_util

from instseg.data.coco import detect_layout, layout_fields
from instseg.evaluation.coco import ClassSplit, evaluate_coco
from instseg.structures.masks import is_valid_polygon
from instseg.utils.io import atomic_write_json, read_json, require_lists

__all__ = [
    "MaskTarget",
    "to_coco_gt",
    "write_eval_gt",
    "occluded_gt",
    "coco_occ_gt",
    "evaluate_occlusion",
]

log = logging.getLogger(__name__)

MaskTarget = Literal["visible", "amodal"]
TARGETS = ("visible", "amodal")


def to_coco_gt(gt: str | Path | dict[str, Any], *, target: MaskTarget = "visible") -> dict:
    """A plain COCO GT dict (see the module docstring) from a GT file or dict in any layout.

    Raises ValueError naming the file for non-COCO input or images without height/width.
    Annotations left without any valid mask are skipped (one warning with the count).
    """
    if target not in TARGETS:
        raise ValueError(f"target must be 'visible' or 'amodal', got {target!r}")
    name = str(gt) if isinstance(gt, str | Path) else "<GT dict>"
    data = read_json(gt) if isinstance(gt, str | Path) else gt
    require_lists(data, name, ("images", "annotations"))
    layout = detect_layout(data["annotations"], source=name)
    sizes = {}
    for i, im in enumerate(data["images"]):
        if not isinstance(im, dict) or not {"id", "height", "width"} <= im.keys():
            raise ValueError(f"{name}: images[{i}] needs id, height and width")
        sizes[im["id"]] = (int(im["height"]), int(im["width"]))
    cats = data.get("categories")
    if cats is None and layout == "cocoa":
        cats = [{"id": 1, "name": "thing"}, {"id": 2, "name": "stuff"}]
    if not isinstance(cats, list):
        raise ValueError(f"{name}: missing or invalid key 'categories'")
    anns, skipped = [], 0
    for i, a in enumerate(data["annotations"]):
        if not isinstance(a, dict) or a.get("image_id") not in sizes:
            skipped += 1
            continue
        try:
            records = _records(a, layout)
        except KeyError as e:
            raise ValueError(f"{name}: annotations[{i}] has no key {e} ({layout} layout)") from None
        for rec in records:
            ann = _convert(rec, sizes[a["image_id"]], target)
            if ann is None:
                skipped += 1
                continue
            anns.append({"id": len(anns) + 1, "image_id": a["image_id"], **ann})
    if skipped:
        log.warning("%s: %d annotations without a usable mask or image were skipped", name, skipped)
    out = {k: v for k, v in data.items() if k not in ("annotations", "categories")}
    return {**out, "categories": cats, "annotations": anns, "mask_target": target}


def write_eval_gt(gt_json: str | Path, out_dir: str | Path, *, target: MaskTarget) -> Path:
    """The GT file to score ``target`` masks against: ``gt_json`` itself when it is already a
    plain COCO file for that target (plain COCO or synthetic layout, visible target), else
    ``out_dir/gt_<target>.json`` written by :func:`to_coco_gt`."""
    gt_json = Path(gt_json)
    data = read_json(gt_json)
    anns = data.get("annotations", []) if isinstance(data, dict) else []
    layout = detect_layout(anns, source=str(gt_json))
    if target == "visible" and layout in ("coco", "synthetic"):
        return gt_json
    if target == "amodal" and layout == "coco":
        raise ValueError(f"{gt_json}: plain COCO layout has no amodal masks (mask_target=amodal)")
    path = Path(out_dir) / f"gt_{target}.json"
    atomic_write_json(path, to_coco_gt(data, target=target))
    return path


def occluded_gt(
    coco_gt: dict[str, Any], *, min_occlusion: float = 0.1, min_overlap: float = 0.2
) -> dict:
    """``coco_gt`` (from :func:`to_coco_gt`, or plain COCO) with every non-occluded annotation
    marked ``iscrowd=1`` (see the module docstring for the rule). Adds ``"occluded": bool`` to
    each annotation; the input is not modified."""
    from instseg.data.occlusion import occluded_instance_ids

    anns = coco_gt["annotations"]
    no_ratio = [a for a in anns if a.get("occlusion_ratio") is None]
    by_box = occluded_instance_ids(no_ratio, min_overlap=min_overlap) if no_ratio else set()
    out = []
    for a in anns:
        ratio = a.get("occlusion_ratio")
        occ = a.get("id") in by_box if ratio is None else float(ratio) > min_occlusion
        occ = bool(occ) and not a.get("iscrowd", 0)
        out.append({**a, "occluded": occ, "iscrowd": 0 if occ else 1})
    return {**coco_gt, "annotations": out}


def coco_occ_gt(coco_gt: dict[str, Any], work_dir: str | Path, *, min_overlap: float = 0.2) -> dict:
    """The COCO-OCC subset of ``coco_gt`` (via :func:`extract_coco_occ`, files in work_dir)."""
    from instseg.data.occlusion import extract_coco_occ

    work_dir = Path(work_dir)
    src = work_dir / "_coco_occ_source.json"
    dst = work_dir / f"gt_{coco_gt.get('mask_target', 'visible')}_coco_occ.json"
    atomic_write_json(src, coco_gt)
    extract_coco_occ(src, dst, min_overlap=min_overlap)
    src.unlink()
    return read_json(dst)


def evaluate_occlusion(
    gt_json: str | Path,
    results: str | Path | list[dict[str, Any]],
    *,
    work_dir: str | Path,
    target: MaskTarget = "visible",
    amodal: bool = True,
    occluded: bool = True,
    coco_occ: bool = True,
    min_occlusion: float = 0.1,
    min_overlap: float = 0.2,
    iou_types: Sequence[str] = ("segm", "bbox"),
    img_ids: Sequence[int] | None = None,
    class_split: ClassSplit = None,
) -> dict[str, Any]:
    """Occlusion metrics of COCO ``results`` (predicted ``target`` masks) on ``gt_json``.

    Args:
        gt_json: the test GT in any supported layout.
        results: COCO results (file or list), e.g. ``results.json`` of :class:`COCOEvaluator`.
        work_dir: where the converted GT files are written.
        target: what the model predicts (``model.mask_target``); the occluded-instance and
            COCO-OCC metrics score against the GT of this target.
        amodal / occluded / coco_occ: which groups to compute.
        img_ids: the images that were predicted (default: every GT image).

    Returns (only the groups asked for and available)::

        {"amodal": {iou_type: metrics}, "amodal_occluded": {...}  # when amodal and occluded
         "occluded": {iou_type: metrics},                         # occluded instances
         "coco_occ": {iou_type: metrics, "num_images": int}}

    with ``metrics`` as :func:`evaluate_coco` (percent; class splits nested). The amodal groups
    are left out (one warning) when the GT has no amodal masks.
    """
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    res = read_json(results) if isinstance(results, str | Path) else list(results)
    data = read_json(gt_json)
    anns = data.get("annotations", []) if isinstance(data, dict) else []
    has_amodal = isinstance(data, dict) and detect_layout(anns, source=str(gt_json)) != "coco"
    if target == "amodal" and not has_amodal:
        raise ValueError(f"{gt_json}: no amodal masks in the GT, cannot score amodal predictions")
    gts = {t: to_coco_gt(data, target=t) for t in TARGETS if t == "visible" or has_amodal}
    for t, g in gts.items():
        atomic_write_json(work_dir / f"gt_{t}.json", g)

    def score(gt: dict, ids: Sequence[int] | None, rs: list[dict]) -> dict[str, Any]:
        return {
            t: evaluate_coco(gt, rs, iou_type=t, img_ids=ids, class_split=class_split)
            for t in iou_types
        }

    ids = sorted(int(i) for i in img_ids) if img_ids is not None else None
    out: dict[str, Any] = {}
    if amodal and not has_amodal:
        log.warning("%s: the GT has no amodal masks; amodal AP is skipped", gt_json)
    occ_args = {"min_occlusion": min_occlusion, "min_overlap": min_overlap}
    if amodal and has_amodal:
        out["amodal"] = score(gts["amodal"], ids, res)
        if occluded:
            g = occluded_gt(gts["amodal"], **occ_args)
            atomic_write_json(work_dir / "gt_amodal_occluded.json", g)
            out["amodal_occluded"] = score(g, ids, res)
    if occluded:
        g = occluded_gt(gts[target], **occ_args)
        atomic_write_json(work_dir / f"gt_{target}_occluded.json", g)
        out["occluded"] = score(g, ids, res)
    if coco_occ:
        g = coco_occ_gt(gts[target], work_dir, min_overlap=min_overlap)
        keep = {int(im["id"]) for im in g["images"]}
        if ids is not None:
            keep &= set(ids)
        sub = [r for r in res if int(r["image_id"]) in keep]
        out["coco_occ"] = (
            {**score(g, sorted(keep), sub), "num_images": len(keep)} if keep else {"num_images": 0}
        )
    return out


# -------------------------------------------------------------------- helpers


def _records(a: Mapping[str, Any], layout: str) -> list[dict[str, Any]]:
    """-> [{visible, amodal (segm or None), bbox (visible xywh or None), category_id, iscrowd,
    source_id}] of one JSON annotation (COCOA: one per region)."""
    if layout == "cocoa":
        out = []
        for k, r in enumerate(a["regions"]):
            amodal = r["segmentation"]
            out.append(
                {
                    "visible": r.get("visible_mask") or amodal,
                    "amodal": amodal,
                    "bbox": None,  # COCOA boxes are amodal; the visible box comes from the mask
                    "category_id": int(r.get("category_id", 2 if r.get("isStuff") else 1)),
                    "iscrowd": 0,
                    "source_id": r.get("id", k),
                }
            )
        return out
    visible, amodal, bbox = layout_fields(dict(a), layout)
    if layout == "cocoa_cls" and visible is None:  # occluded, visible mask not given: unusable
        amodal = None  # skipped (counted), as CocoInstanceDataset drops it
    return [
        {
            "visible": visible,
            "amodal": amodal,
            "bbox": bbox,
            "category_id": int(a["category_id"]),
            "iscrowd": int(bool(a.get("iscrowd", 0))),
            "source_id": a.get("id"),
        }
    ]


def _convert(rec: dict[str, Any], size: tuple[int, int], target: str) -> dict[str, Any] | None:
    h, w = size
    vis = _rle(rec["visible"], h, w)
    amo = _rle(rec["amodal"], h, w)
    if vis is None and amo is None:
        return None
    if amo is not None and vis is not None:
        amo = mask_util.merge([amo, vis], intersect=False)
    vis_area = float(mask_util.area(vis)) if vis is not None else 0.0
    amo_area = float(mask_util.area(amo)) if amo is not None else None
    ratio = None if not amo_area else round(1.0 - vis_area / amo_area, 6)
    if target == "amodal":
        seg = amo if amo is not None else vis
        bbox = [float(v) for v in mask_util.toBbox(seg)]
    else:
        seg = vis if vis is not None else amo
        bbox = _valid_box(rec["bbox"]) or [float(v) for v in mask_util.toBbox(seg)]
    return {
        "category_id": rec["category_id"],
        "iscrowd": rec["iscrowd"],
        "segmentation": {"size": [h, w], "counts": seg["counts"].decode("ascii")},
        "area": float(mask_util.area(seg)),
        "bbox": bbox,
        "occlusion_ratio": ratio,
        "source_id": rec["source_id"],
    }


def _rle(segm: Any, h: int, w: int) -> dict | None:
    """Polygons (list of lists, or one flat list), uncompressed or compressed RLE -> compressed
    RLE with bytes counts; None for a missing / empty / invalid segmentation."""
    if segm is None:
        return None
    if isinstance(segm, list):
        if segm and all(isinstance(v, int | float) for v in segm):
            segm = [segm]
        parts = [[float(v) for v in p] for p in segm if is_valid_polygon(p)]
        if not parts:
            return None
        rle = mask_util.merge(mask_util.frPyObjects(parts, h, w))
    elif isinstance(segm, dict) and "counts" in segm and "size" in segm:
        if [int(s) for s in segm["size"]] != [h, w]:
            return None
        if isinstance(segm["counts"], list):
            rle = mask_util.frPyObjects({"size": [h, w], "counts": segm["counts"]}, h, w)
        else:
            counts = segm["counts"]
            rle = {"size": [h, w], "counts": counts.encode() if isinstance(counts, str) else counts}
    else:
        return None
    return rle if float(mask_util.area(rle)) > 0 else None


def _valid_box(box: Any) -> list[float] | None:
    if not isinstance(box, list | tuple) or len(box) != 4:
        return None
    try:
        vals = [float(v) for v in box]
    except (TypeError, ValueError):
        return None
    return vals if all(np.isfinite(vals)) and vals[2] >= 0 and vals[3] >= 0 else None
