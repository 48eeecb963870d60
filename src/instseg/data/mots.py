"""MOTS formats: KITTI-MOTS / MOTSChallenge txt, BDD100K MOTS bitmask PNGs and BDD RLE JSON.

**KITTI-MOTS / MOTSChallenge txt** — one object per line::

    time_frame id class_id img_height img_width rle

``id = class_id * 1000 + instance``; class 1 = car, 2 = pedestrian, 10 = ignore region
(id 10000). ``rle`` is COCO compressed RLE counts. KITTI-MOTS frames start at 0,
MOTSChallenge frames at 1 (the reader keeps the numbers as written).

**BDD100K bitmask** (BDD100K documentation, "Label Format"): an RGBA PNG per frame;
R = category id (1-based, 0 = background), G = attribute bits
``(truncated << 3) | (occluded << 2) | (crowd << 1) | ignore``, and the instance id is
``(B << 8) | A``.

**BDD RLE JSON** (Scalabel-style): a list of frames
``{name, videoName, frameIndex, labels: [{id, category, attributes?, score?,
rle: {counts, size: [h, w]}}]}``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from instseg.structures.masks import mask_to_rle, rle_to_mask
from instseg.structures.ops import paint_instances
from instseg.utils.io import atomic_write, atomic_write_json, atomic_write_text, read_json

__all__ = [
    "MOTS_IGNORE_CLASS",
    "MOTSObject",
    "read_mots_txt",
    "write_mots_txt",
    "group_by_frame",
    "instances_to_mots",
    "video_to_mots",
    "BDDBitmask",
    "BDD_ATTRIBUTES",
    "decode_bdd_bitmask",
    "encode_bdd_bitmask",
    "read_bdd_bitmask",
    "write_bdd_bitmask",
    "BDDLabel",
    "BDDFrame",
    "read_bdd_rle_json",
    "write_bdd_rle_json",
    "mask_label",
]

MOTS_IGNORE_CLASS = 10
#: attribute name -> bit in the G channel of a BDD100K bitmask
BDD_ATTRIBUTES = {"truncated": 3, "occluded": 2, "crowd": 1, "ignore": 0}


# ----------------------------------------------------------------------------- KITTI/MOTSChallenge
@dataclass
class MOTSObject:
    """One mask of one object in one frame. ``obj_id`` is the file's id (class * 1000 + k)."""

    frame: int
    obj_id: int
    class_id: int
    rle: dict[str, Any]  # {"size": [h, w], "counts": str}

    @property
    def instance(self) -> int:
        return self.obj_id % 1000

    @property
    def is_ignore(self) -> bool:
        return self.class_id == MOTS_IGNORE_CLASS

    def mask(self) -> np.ndarray:
        return rle_to_mask(self.rle)


def read_mots_txt(path: str | Path) -> list[MOTSObject]:
    """Parse a KITTI-MOTS / MOTSChallenge txt; a bad line raises ``ValueError`` naming the file
    and line number."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: MOTS file not found")
    out = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split(" ")
        if len(parts) != 6:
            raise ValueError(f"{path}:{n}: expected 6 space-separated fields, got {len(parts)}")
        try:
            t, oid, cls, h, w = (int(x) for x in parts[:5])
        except ValueError as e:
            raise ValueError(f"{path}:{n}: non-integer field ({e})") from e
        out.append(MOTSObject(t, oid, cls, {"size": [h, w], "counts": parts[5]}))
    return out


def write_mots_txt(path: str | Path, objects: Iterable[MOTSObject]) -> Path:
    """Write objects (sorted by frame, then id) atomically."""
    objs = sorted(objects, key=lambda o: (o.frame, o.obj_id))
    lines = []
    for o in objs:
        h, w = o.rle["size"]
        counts = o.rle["counts"]
        counts = counts.decode("ascii") if isinstance(counts, bytes) else counts
        if not isinstance(counts, str) or " " in counts:
            raise ValueError(
                f"{path}: object {o.obj_id} frame {o.frame}: counts must be a compressed RLE string"
            )
        lines.append(f"{o.frame} {o.obj_id} {o.class_id} {int(h)} {int(w)} {counts}")
    return atomic_write_text(path, "".join(line + "\n" for line in lines))


def group_by_frame(objects: Iterable[MOTSObject]) -> dict[int, list[MOTSObject]]:
    out: dict[int, list[MOTSObject]] = defaultdict(list)
    for o in objects:
        out[o.frame].append(o)
    return dict(sorted(out.items()))


def instances_to_mots(
    t: int, inst: Any, *, class_ids: Sequence[int] | None = None, score_thresh: float = 0.0
) -> list[MOTSObject]:
    """Frame ``t``'s tracked :class:`~instseg.structures.Instances` (with ``track_ids``) above
    ``score_thresh`` as MOTS objects, made non-overlapping as MOTS requires (a pixel belongs to
    the highest-scoring instance covering it, :func:`~instseg.structures.ops.paint_instances`;
    an instance left without pixels is dropped). ``class_ids[label]`` is the MOTS class (default
    1 for every instance: class-agnostic, "car" in KITTI's numbering); the object id is
    ``class * 1000 + (track_id + 1) % 1000``."""
    if inst.track_ids is None:
        raise ValueError("instances_to_mots: the instances have no track_ids")
    inst = inst[inst.scores > score_thresh]
    owner = paint_instances(inst)  # (H, W): 1 + index of the instance owning the pixel
    out = []
    for i, tid in enumerate(inst.track_ids.tolist()):
        m = owner == i + 1
        if m.any():
            cls = 1 if class_ids is None else int(class_ids[int(inst.labels[i])])
            out.append(MOTSObject(t, cls * 1000 + (int(tid) + 1) % 1000, cls, mask_to_rle(m)))
    return out


def video_to_mots(video: Any, *, class_id: int = 1) -> list[MOTSObject]:
    """A :class:`~instseg.data.ytvis.Video`'s ground-truth tracks as MOTS objects of one class
    (track k of the video gets id ``class_id * 1000 + k + 1``), every frame where present."""
    return [
        MOTSObject(t, class_id * 1000 + k + 1, class_id, rle)
        for k, a in enumerate(video.annotations)
        for t, rle in enumerate(a.segmentations)
        if rle is not None
    ]


# ----------------------------------------------------------------------------- BDD bitmask
@dataclass
class BDDBitmask:
    """Decoded BDD100K bitmask: three (H, W) arrays."""

    category: np.ndarray  # uint8, 0 = background
    attributes: np.ndarray  # uint8 bit field, see BDD_ATTRIBUTES
    instance: np.ndarray  # int32, 0 = none

    def instances(self) -> list[tuple[int, int, dict[str, bool], np.ndarray]]:
        """``(instance_id, category_id, attributes, (H, W) bool mask)`` per non-zero id."""
        out = []
        for iid in np.unique(self.instance):
            if iid == 0:
                continue
            m = self.instance == iid
            cat = int(np.bincount(self.category[m]).argmax())
            bits = int(np.bincount(self.attributes[m]).argmax())
            attrs = {k: bool((bits >> b) & 1) for k, b in BDD_ATTRIBUTES.items()}
            out.append((int(iid), cat, attrs, m))
        return out


def decode_bdd_bitmask(rgba: np.ndarray) -> BDDBitmask:
    """(H, W, 4) uint8 RGBA -> :class:`BDDBitmask`."""
    if rgba.ndim != 3 or rgba.shape[2] != 4:
        raise ValueError(f"BDD bitmask must be (H, W, 4) RGBA, got shape {rgba.shape}")
    inst = (rgba[..., 2].astype(np.int32) << 8) | rgba[..., 3].astype(np.int32)
    return BDDBitmask(rgba[..., 0].copy(), rgba[..., 1].copy(), inst)


def encode_bdd_bitmask(
    masks: Sequence[np.ndarray],
    instance_ids: Sequence[int],
    category_ids: Sequence[int],
    attributes: Sequence[dict[str, bool]] | None = None,
) -> np.ndarray:
    """Paint non-overlapping (H, W) bool masks into an (H, W, 4) uint8 RGBA bitmask.

    Later masks overwrite earlier ones where they overlap. Ids must be in 1..65535 and
    category ids in 1..255.
    """
    if not len(masks):
        raise ValueError("encode_bdd_bitmask needs at least one mask (for the image size)")
    h, w = masks[0].shape
    out = np.zeros((h, w, 4), dtype=np.uint8)
    attributes = attributes or [{} for _ in masks]
    if not len(masks) == len(instance_ids) == len(category_ids) == len(attributes):
        raise ValueError("masks, instance_ids, category_ids and attributes differ in length")
    for m, iid, cat, attrs in zip(masks, instance_ids, category_ids, attributes, strict=True):
        if not 1 <= int(iid) <= 65535 or not 1 <= int(cat) <= 255:
            raise ValueError(f"instance id {iid} / category id {cat} out of range")
        bits = sum(int(bool(attrs.get(k, False))) << b for k, b in BDD_ATTRIBUTES.items())
        out[m] = (int(cat), bits, int(iid) >> 8, int(iid) & 255)
    return out


def read_bdd_bitmask(path: str | Path) -> BDDBitmask:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: bitmask file not found")
    try:
        with Image.open(path) as im:
            if im.mode != "RGBA":
                raise ValueError(f"mode {im.mode}, expected RGBA")
            arr = np.array(im)
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise ValueError(f"{path}: not a BDD100K RGBA bitmask ({e})") from e
    return decode_bdd_bitmask(arr)


def write_bdd_bitmask(path: str | Path, rgba: np.ndarray) -> Path:
    if rgba.ndim != 3 or rgba.shape[2] != 4 or rgba.dtype != np.uint8:
        raise ValueError(f"{path}: bitmask must be (H, W, 4) uint8, got {rgba.shape} {rgba.dtype}")
    im = Image.fromarray(rgba, mode="RGBA")
    return atomic_write(path, lambda p: im.save(p, format="PNG"))


# ----------------------------------------------------------------------------- BDD RLE JSON
@dataclass
class BDDLabel:
    id: str
    category: str
    rle: dict[str, Any] | None
    score: float | None = None
    attributes: dict[str, Any] = field(default_factory=dict)

    def mask(self) -> np.ndarray | None:
        return None if self.rle is None else rle_to_mask(self.rle)


@dataclass
class BDDFrame:
    name: str
    video_name: str
    frame_index: int
    labels: list[BDDLabel] = field(default_factory=list)


def read_bdd_rle_json(path: str | Path) -> list[BDDFrame]:
    """Frames of a Scalabel/BDD JSON whose labels carry ``rle``. Accepts a list of frames or an
    object with a ``frames`` list."""
    data = read_json(path)
    frames = data.get("frames") if isinstance(data, dict) else data
    if not isinstance(frames, list):
        raise ValueError(f"{path}: expected a list of frames or {{'frames': [...]}}")
    out = []
    for i, f in enumerate(frames):
        where = f"{path}: frames[{i}]"
        if not isinstance(f, dict) or "name" not in f:
            raise ValueError(f"{where}: frame must be an object with 'name'")
        labels = []
        for j, lab in enumerate(f.get("labels") or []):
            if "id" not in lab or "category" not in lab:
                raise ValueError(f"{where}.labels[{j}]: missing 'id' or 'category'")
            rle = lab.get("rle")
            if rle is not None and ("counts" not in rle or "size" not in rle):
                raise ValueError(f"{where}.labels[{j}].rle: needs 'counts' and 'size'")
            labels.append(BDDLabel(
                id=str(lab["id"]), category=str(lab["category"]),
                rle=None if rle is None else {"size": [int(x) for x in rle["size"]],
                                              "counts": rle["counts"]},
                score=None if lab.get("score") is None else float(lab["score"]),
                attributes=dict(lab.get("attributes") or {}),
            ))  # fmt: skip
        out.append(
            BDDFrame(
                str(f["name"]), str(f.get("videoName", "")), int(f.get("frameIndex", i)), labels
            )
        )
    return out


def write_bdd_rle_json(path: str | Path, frames: Iterable[BDDFrame]) -> Path:
    out = []
    for f in frames:
        labels = []
        for lab in f.labels:
            d: dict[str, Any] = {"id": lab.id, "category": lab.category}
            if lab.attributes:
                d["attributes"] = lab.attributes
            if lab.score is not None:
                d["score"] = float(lab.score)
            if lab.rle is not None:
                counts = lab.rle["counts"]
                d["rle"] = {
                    "counts": counts.decode("ascii") if isinstance(counts, bytes) else counts,
                    "size": [int(x) for x in lab.rle["size"]],
                }
            labels.append(d)
        out.append(
            {
                "name": f.name,
                "videoName": f.video_name,
                "frameIndex": f.frame_index,
                "labels": labels,
            }
        )
    return atomic_write_json(path, out)


def mask_label(id: str, category: str, mask: np.ndarray, **kw: Any) -> BDDLabel:
    """Convenience: a :class:`BDDLabel` from an (H, W) bool mask."""
    return BDDLabel(id=id, category=category, rle=mask_to_rle(mask), **kw)
