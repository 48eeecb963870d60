"""Export the project's synthetic amodal COCO files into the public amodal layouts (KINS,
updated KINS, COCOA-cls), so amodal training and evaluation can run from files in those layouts
(issue 14) with exact ground truth.

:func:`convert_amodal_layout` reads a file in the ``"synthetic"`` layout of
:mod:`instseg.data.coco` (written by :mod:`instseg.data.synthetic`) and writes the same images,
categories and instances in one of:

- ``"kins"`` (KINS release): ``i_segm``/``i_bbox``/``i_area`` = visible mask (RLE), box and
  area; ``a_segm``/``a_bbox``/``a_area`` = amodal; ``bbox``/``area`` = the amodal box and area;
  ``oco_id`` = occlusion cluster (a connected component of the image's occlusion graph: j and i
  are linked when j's visible mask covers part of i's hidden part, the relation the dataset
  derives; an isolated instance is a cluster of its own; ids are unique over the file, 1..K);
  ``ico_id`` = order inside the cluster, 1 = nearest the camera (by the synthetic
  ``depth_order``).
- ``"kins_updated"`` (the re-released KINS files): ``segmentation``/``bbox``/``area`` = amodal,
  ``inmodal_seg``/``inmodal_bbox`` = visible.
- ``"cocoa_cls"`` (COCOA-cls / D2S amodal): ``segmentation``/``bbox``/``area`` = amodal,
  ``visible_mask``/``invisible_mask`` = visible and hidden part (RLE; both left out for an
  unoccluded instance, whose visible mask is then the amodal one, as in COCOA-cls),
  ``occlude_rate`` = hidden / amodal area, ``occl_depth`` = the synthetic ``depth_order``
  (0 = nearest; read back as ``extra["cocoa_occl_depth"]``). Categories are copied (the reader
  needs ``categories`` for this layout; only COCOA proper has default ones).

Every mask is written as compressed COCO RLE (``counts`` a str), which all three readers accept
and which keeps the masks exact (the releases' polygons would not). ``id``, ``image_id``,
``category_id`` and ``iscrowd`` are kept; ``images`` and ``categories`` are copied unchanged;
``info`` is copied with ``converted_from`` and ``amodal_layout`` added.

What the target layouts cannot hold (what reading the converted file gives instead):

- ``occluder_segm``: none of them stores occluder masks. The dataset derives them (union of the
  visible masks of the instances whose visible mask covers part of this one's hidden part),
  which equals the generator's occluder masks: both count annotated objects only.
- ``depth_order`` (a global front-to-back rank of the image's objects): KINS' ``ico_id`` orders
  one cluster only and updated KINS has no order at all, so the dataset's ``depth`` becomes the
  layer in the occlusion graph (0 = unoccluded), not the rank. COCOA-cls keeps the rank in
  ``occl_depth`` (``extra["cocoa_occl_depth"]``), but ``depth`` is still the derived layer.
- objects too small to be annotated (below ``min_visible_area``) still hide parts of others;
  no layout records them, in the synthetic file neither.
- ``occlusion_ratio``, ``amodal_area`` and ``lookalike`` are not written (COCOA-cls'
  ``occlude_rate`` is the same ratio, unrounded).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pycocotools.mask as mask_util

from instseg.data.coco import detect_layout, occlusion_relation
from instseg.structures.masks import mask_to_rle, segmentation_to_mask
from instseg.utils.io import atomic_write_json, read_json, require_lists

__all__ = ["AMODAL_LAYOUTS", "convert_amodal_layout"]

# The layouts :func:`convert_amodal_layout` writes.
AMODAL_LAYOUTS = ("kins", "kins_updated", "cocoa_cls")


def convert_amodal_layout(src_json: Path, dst_json: Path, *, layout: str) -> dict[str, int]:
    """Write the synthetic-layout file ``src_json`` as ``dst_json`` in ``layout`` (one of
    :data:`AMODAL_LAYOUTS`; the mapping is in the module docstring), atomically.

    Returns counts: ``images``, ``annotations``, ``occluded`` (annotations with a hidden part),
    ``amodal_missing`` (annotations without ``amodal_segm``: their visible mask is written as
    the amodal one) and, for KINS, ``clusters`` (``oco_id`` values).

    Raises ValueError naming the file for an unknown ``layout``, a source that is not COCO, has
    no amodal masks (plain COCO) or is not in the synthetic layout, or a polygon mask of an
    image without height/width.
    """
    src_json, dst_json = Path(src_json), Path(dst_json)
    if layout not in AMODAL_LAYOUTS:
        raise ValueError(
            f"{src_json}: cannot convert to the unknown amodal layout {layout!r}; choose one of "
            f"{list(AMODAL_LAYOUTS)}"
        )
    data = read_json(src_json)
    require_lists(data, str(src_json), ("images", "annotations", "categories"))
    source = detect_layout(data["annotations"], source=str(src_json))
    if source == "coco":
        raise ValueError(
            f"{src_json}: plain COCO file without amodal masks (no 'amodal_segm'); only files in "
            f"the synthetic amodal layout (instseg data synth) can be converted"
        )
    if source != "synthetic":
        raise ValueError(
            f"{src_json}: already in the {source!r} layout; only files in the synthetic amodal "
            f"layout (instseg data synth) can be converted"
        )
    sizes: dict[Any, tuple[int, int] | None] = {}
    for i, im in enumerate(data["images"]):
        if not isinstance(im, dict) or "id" not in im:
            raise ValueError(f"{src_json}: images[{i}] has no key 'id'")
        h, w = im.get("height"), im.get("width")
        ok = isinstance(h, int) and isinstance(w, int) and h > 0 and w > 0
        sizes[im["id"]] = (h, w) if ok else None

    by_image: dict[Any, list[int]] = {}
    for i, a in enumerate(data["annotations"]):
        if not isinstance(a, dict) or "image_id" not in a:
            raise ValueError(f"{src_json}: annotations[{i}] has no key 'image_id'")
        by_image.setdefault(a["image_id"], []).append(i)

    counts = {"images": len(data["images"]), "annotations": 0, "occluded": 0, "amodal_missing": 0}
    if layout == "kins":
        counts["clusters"] = 0
    out_anns: list[dict[str, Any] | None] = [None] * len(data["annotations"])
    for image_id, idx in by_image.items():
        anns = [data["annotations"][i] for i in idx]
        vis, amo = _image_masks(anns, sizes.get(image_id), idx, src_json, counts)
        written = _write_image_anns(anns, vis, amo, layout, counts)
        for i, w in zip(idx, written, strict=True):
            out_anns[i] = w
    counts["annotations"] = len(out_anns)

    info = data.get("info") if isinstance(data.get("info"), dict) else {}
    out = {
        "info": {**info, "converted_from": src_json.name, "amodal_layout": layout},
        "images": data["images"],
        "annotations": out_anns,
        "categories": data["categories"],
    }
    for key, value in data.items():  # e.g. "licenses"
        out.setdefault(key, value)
    atomic_write_json(dst_json, out)
    return counts


# -------------------------------------------------------------------- helpers


def _image_masks(
    anns: list[dict[str, Any]],
    size: tuple[int, int] | None,
    idx: list[int],
    src_json: Path,
    counts: dict[str, int],
) -> tuple[np.ndarray, np.ndarray]:
    """(N, H, W) bool visible and amodal masks of one image's annotations."""
    vis, amo = [], []
    for a, i in zip(anns, idx, strict=True):
        where = f"{src_json}: annotations[{i}]"
        v = _decode(a.get("segmentation"), size, where, "segmentation")
        if a.get("amodal_segm") is None:
            counts["amodal_missing"] += 1
            m = v
        else:
            m = _decode(a["amodal_segm"], size, where, "amodal_segm")
        if v is None or m is None or v.shape != m.shape:
            raise ValueError(f"{where}: visible and amodal masks missing or of different sizes")
        vis.append(v)
        amo.append(m)
    shapes = {v.shape for v in vis}
    if len(shapes) > 1:
        raise ValueError(
            f"{src_json}: annotations {idx} of one image have masks of sizes {sorted(shapes)}"
        )
    return np.stack(vis), np.stack(amo)


def _decode(segm: Any, size: tuple[int, int] | None, where: str, key: str) -> np.ndarray | None:
    if segm is None:
        return None
    if isinstance(segm, dict) and "size" in segm and "counts" in segm:
        h, w = int(segm["size"][0]), int(segm["size"][1])
    elif size is None:
        raise ValueError(f"{where}: '{key}' is not an RLE and the image has no height/width")
    else:
        h, w = size
    if isinstance(segm, list) and segm and all(isinstance(v, int | float) for v in segm):
        segm = [segm]  # one flat polygon
    try:
        return segmentation_to_mask(segm, h, w)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{where}: bad '{key}' ({e})") from e


def _box(a: dict[str, Any], key: str, rle: dict[str, Any]) -> list[float]:
    """The source box ``key`` (xywh) when present, else the tight box of ``rle``."""
    box = a.get(key)
    if isinstance(box, list | tuple) and len(box) == 4:
        return [float(v) for v in box]
    r = {"size": rle["size"], "counts": rle["counts"].encode("ascii")}
    return [float(v) for v in mask_util.toBbox(r)]


def _write_image_anns(
    anns: list[dict[str, Any]],
    vis: np.ndarray,
    amo: np.ndarray,
    layout: str,
    counts: dict[str, int],
) -> list[dict[str, Any]]:
    """The converted annotations of one image, in the order of ``anns``."""
    n = len(anns)
    hidden = amo & ~vis
    v_area = vis.reshape(n, -1).sum(axis=1)
    a_area = amo.reshape(n, -1).sum(axis=1)
    occluded = hidden.reshape(n, -1).any(axis=1)
    differs = (vis != amo).reshape(n, -1).any(axis=1)
    counts["occluded"] += int(occluded.sum())
    oco, ico = _kins_order(anns, vis, amo, counts) if layout == "kins" else ([], [])
    out = []
    for k, a in enumerate(anns):
        v_rle, a_rle = mask_to_rle(vis[k]), mask_to_rle(amo[k])
        v_box = _box(a, "bbox", v_rle)
        a_box = _box(a, "amodal_bbox", a_rle)
        o: dict[str, Any] = {
            "id": a.get("id"),
            "image_id": a["image_id"],
            "category_id": a.get("category_id"),
            "iscrowd": int(a.get("iscrowd", 0)),
        }
        if layout == "kins":
            o |= {
                "i_segm": v_rle,
                "i_bbox": v_box,
                "i_area": int(v_area[k]),
                "a_segm": a_rle,
                "a_bbox": a_box,
                "a_area": int(a_area[k]),
                "bbox": a_box,
                "area": int(a_area[k]),
                "oco_id": oco[k],
                "ico_id": ico[k],
            }
        elif layout == "kins_updated":
            o |= {
                "segmentation": a_rle,
                "bbox": a_box,
                "area": int(a_area[k]),
                "inmodal_seg": v_rle,
                "inmodal_bbox": v_box,
            }
        else:  # cocoa_cls
            o |= {
                "segmentation": a_rle,
                "bbox": a_box,
                "area": int(a_area[k]),
                "occlude_rate": float(1.0 - v_area[k] / a_area[k]) if a_area[k] else 0.0,
            }
            if differs[k]:  # else visible = amodal: COCOA-cls leaves both out
                o["visible_mask"] = v_rle
                o["invisible_mask"] = mask_to_rle(hidden[k])
            if a.get("depth_order") is not None:
                o["occl_depth"] = int(a["depth_order"])
        out.append(o)
    return out


def _kins_order(
    anns: list[dict[str, Any]], vis: np.ndarray, amo: np.ndarray, counts: dict[str, int]
) -> tuple[list[int], list[int]]:
    """KINS ``oco_id`` (clusters = connected components of the occlusion graph, numbered on from
    ``counts["clusters"]``) and ``ico_id`` (1 = nearest in its cluster, by ``depth_order``)."""
    n = len(anns)
    rel = occlusion_relation(vis, amo)
    linked = rel | rel.T
    comp = [-1] * n
    for start in range(n):
        if comp[start] >= 0:
            continue
        counts["clusters"] += 1
        comp[start] = counts["clusters"]
        stack = [start]
        while stack:
            i = stack.pop()
            for j in np.nonzero(linked[i])[0].tolist():
                if comp[j] < 0:
                    comp[j] = comp[start]
                    stack.append(j)
    depth = [a.get("depth_order") for a in anns]
    ico = [0] * n
    for c in set(comp):
        members = [i for i in range(n) if comp[i] == c]
        members.sort(key=lambda i: (depth[i] is None, depth[i] or 0, i))
        for rank, i in enumerate(members):
            ico[i] = rank + 1
    return comp, ico
