"""The predictions section: a grid of images with each predicted mask as an SVG path over the
picture, so the page can show / hide classes and single instances.

Predictions are COCO results (``results.json`` of ``instseg predict``, ``instseg eval`` or a
training run's evaluation). The pictures come from the ground truth's images when the folder's GT
is known (run and eval folders), else from ``vis/<name>.jpg`` of ``instseg predict --save-vis``
(overlays, the masks already drawn in) whose image id is the GT's id of that file stem, the
numeric stem, or the index in sorted order (as ``instseg predict`` numbers them).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pycocotools.mask as mask_util

from instseg.inference.visualize import color_for
from instseg.reporting.embed import image_file_data_uri
from instseg.reporting.ground_truth import GroundTruth
from instseg.utils.image import IMAGE_EXTENSIONS
from instseg.utils.io import read_json

__all__ = ["Instance", "GridImage", "PredictionGrid", "read_predictions", "mask_to_svg_path"]


@dataclass
class Instance:
    """One predicted mask: ``path`` is SVG path data in image pixels (even-odd fill)."""

    index: int
    category_id: int
    category: str
    score: float
    color: str
    path: str


@dataclass
class GridImage:
    name: str
    image_id: int
    width: int
    height: int
    src: str  # data URI
    instances: list[Instance] = field(default_factory=list)
    hidden: int = 0  # detections below the threshold / over the cap


@dataclass
class PredictionGrid:
    source: str
    picture_kind: str  # "images" or "overlays"
    score_thresh: float
    categories: dict[int, str]
    images: list[GridImage]
    total_images: int


def read_predictions(
    folder: Path,
    gt: GroundTruth | None,
    *,
    score_thresh: float = 0.4,
    max_images: int = 12,
    max_instances: int = 30,
) -> PredictionGrid | None:
    """The grid of ``folder/results.json`` (COCO image results), None when there is no such
    file or no picture to draw on."""
    path = folder / "results.json"
    if not path.is_file():
        return None
    results = read_json(path)
    if not isinstance(results, list) or not all(
        isinstance(r, dict) and "image_id" in r and "segmentations" not in r for r in results
    ):
        return None  # empty, or video (YouTube-VIS) results
    by_image: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for r in results:
        by_image[int(r["image_id"])].append(r)
    pictures, kind = _pictures(folder, gt)
    if not pictures:
        return None
    cats = {
        int(c["id"]): str(c.get("name", c["id"])) for c in (gt.coco["categories"] if gt else [])
    }
    used = sorted({int(r["category_id"]) for r in results})
    cats = {c: cats.get(c, f"class {c}") for c in sorted(set(cats) | set(used))}
    grid = PredictionGrid(str(path), kind, score_thresh, cats, [], len(pictures))
    for image_id, (name, pic) in list(pictures.items())[:max_images]:
        dets = sorted(by_image.get(image_id, []), key=lambda r: -float(r.get("score", 0.0)))
        keep = [r for r in dets if float(r.get("score", 0.0)) >= score_thresh][:max_instances]
        src = image_file_data_uri(pic, max_side=512)
        h, w = _size(pic, keep)
        item = GridImage(name, image_id, w, h, src, hidden=len(dets) - len(keep))
        for j, r in enumerate(keep):
            segm = r.get("segmentation")
            if not isinstance(segm, dict):
                continue
            rgb = color_for(j)
            item.instances.append(
                Instance(
                    index=j,
                    category_id=int(r["category_id"]),
                    category=cats[int(r["category_id"])],
                    score=float(r["score"]),
                    color="#{:02x}{:02x}{:02x}".format(*rgb),
                    path=mask_to_svg_path(mask_util.decode(_rle(segm))),
                )
            )
        grid.images.append(item)
    return grid


def mask_to_svg_path(mask: np.ndarray, *, tolerance: float = 0.7) -> str:
    """SVG path data (``M x y L ... Z`` per contour, holes included, for ``fill-rule:
    evenodd``) of a (H, W) mask; contours simplified by ``tolerance`` pixels
    (Douglas-Peucker), vertices at pixel corners' centre (+0.5)."""
    m = np.ascontiguousarray(np.asarray(mask) > 0, dtype=np.uint8)
    contours, _ = cv2.findContours(m, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    parts = []
    for c in contours:
        c = cv2.approxPolyDP(c, tolerance, True) if len(c) > 4 else c
        pts = c.reshape(-1, 2) + 0.5
        parts.append("M" + " L".join(f"{x:g} {y:g}" for x, y in pts) + " Z")
    return " ".join(parts)


def _pictures(folder: Path, gt: GroundTruth | None) -> tuple[dict[int, tuple[str, Path]], str]:
    """image id -> (name, picture file), and whether those are raw images or overlays."""
    if gt is not None and gt.image_root is not None:
        out = {}
        for image_id, im in sorted(gt.images.items()):
            p = gt.image_path(image_id)
            if p is not None:
                out[image_id] = (Path(str(im["file_name"])).stem, p)
        if out:
            return out, "images"
    vis = folder / "vis"
    files = (
        sorted(f for f in vis.iterdir() if f.suffix.lower() in IMAGE_EXTENSIONS)
        if vis.is_dir()
        else []
    )
    by_stem = {Path(str(im["file_name"])).stem: i for i, im in gt.images.items()} if gt else {}
    out = {}
    for index, f in enumerate(files):
        if by_stem:
            if f.stem not in by_stem:
                continue
            image_id = by_stem[f.stem]
        else:
            image_id = int(f.stem) if f.stem.isdigit() else index
        out[image_id] = (f.stem, f)
    return out, "overlays"


def _rle(segm: dict[str, Any]) -> dict[str, Any]:
    counts = segm["counts"]
    if isinstance(counts, list):
        return mask_util.frPyObjects(segm, *segm["size"])
    return {"size": segm["size"], "counts": counts.encode() if isinstance(counts, str) else counts}


def _size(picture: Path, dets: list[dict[str, Any]]) -> tuple[int, int]:
    """(H, W) of the predictions (the RLE size), else of the picture file."""
    for r in dets:
        segm = r.get("segmentation")
        if isinstance(segm, dict) and "size" in segm:
            return int(segm["size"][0]), int(segm["size"][1])
    from PIL import Image

    with Image.open(picture) as im:
        return im.height, im.width
