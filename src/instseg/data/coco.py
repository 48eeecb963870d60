"""COCO-JSON instance dataset, including amodal fields (the project's synthetic layout, KINS,
COCOA).

One :class:`CocoInstanceDataset` reads every supported layout; the layout is detected once per
file from the annotation keys (:func:`detect_layout`):

- ``"coco"``: plain COCO instances. ``segmentation`` (polygons, compressed or uncompressed RLE)
  -> ``Instances.masks``.
- ``"synthetic"`` (this project's generator): ``segmentation`` = visible (modal) mask,
  ``amodal_segm`` (RLE), ``amodal_bbox``, ``occluder_segm`` (RLE, union of the visible masks of
  the instances occluding this one), ``depth_order`` (int, 0 = nearest the camera).
- ``"kins"`` (KINS release): ``i_segm``/``i_bbox`` = visible (inmodal) polygons/box,
  ``a_segm``/``a_bbox`` = amodal, ``oco_id`` (occlusion cluster id) and ``ico_id`` (order inside
  that cluster), kept in ``extra["kins_oco_id"]``/``extra["kins_ico_id"]``.
- ``"kins_updated"`` (the re-released KINS files used by later amodal methods):
  ``segmentation``/``bbox`` = amodal, ``inmodal_seg``/``inmodal_bbox`` = visible.
- ``"cocoa"`` (COCOA, Zhu et al. 2017): one annotation per image with ``regions``; each region
  has ``segmentation`` (one flat amodal polygon), ``visible_mask``/``invisible_mask`` (RLE, only
  when occluded), ``order`` (1 = front), ``occlude_rate``, ``isStuff`` and ``name``. Without
  ``category_id`` a region is class 1 "thing" or 2 "stuff" (``isStuff``).
- ``"cocoa_cls"`` (COCOA-cls and D2S amodal, the flattened per-instance COCOA that amodal
  methods train on): ``segmentation`` = **amodal** polygon (or RLE), ``visible_mask`` = visible
  RLE (absent for an unoccluded instance: visible = amodal), ``invisible_mask``,
  ``occlude_rate``, ``occl_depth`` (kept in ``extra["cocoa_occl_depth"]``), ``bbox`` = amodal box
  (the visible box comes from the mask), ``category_id``. An annotation with ``occlude_rate`` > 0
  but no ``visible_mask`` cannot be read right and is dropped (counted). Read as plain COCO, such
  a file's amodal masks would become the "visible" masks.

Layout detection is strict (:func:`detect_layout`): each layout has keys only it uses
(:data:`LAYOUT_SIGNATURES`); a file whose annotations carry the keys of two layouts (in one
annotation or across the file), or COCOA-cls extras (``occlude_rate``, ``occl_depth``,
``invisible_mask``) on occluded instances without any ``visible_mask``, is refused with an error
naming the file, rather than read under a guess.

Derived fields: where a layout has visible and amodal masks but no occluder masks (KINS, COCOA),
instance j occludes instance i when j's visible mask overlaps i's invisible part
(amodal minus visible); ``occluder_masks[i]`` is the union of those visible masks. Without a given
global depth (KINS: ``ico_id`` only orders a cluster) ``depth`` is the layer of i in that occlusion
graph (0 = nothing occludes it, else 1 + the deepest occluder's layer). COCOA's ``order`` gives
``depth = order - 1``.

Conventions and bad input (each kind is counted in :attr:`CocoInstanceDataset.stats`; problems
found while parsing produce ONE warning naming the file with all counts, problems found while
loading samples warn once per kind and process):

- crowd annotations (``iscrowd=1``) are dropped unless ``keep_crowd=True``; then they are kept
  with ``extra["iscrowd"] = 1`` (evaluation reads the GT file itself, so training drops them).
- an annotation with an unknown image id or category id is skipped; polygon parts with fewer
  than 3 points, zero area or non-finite numbers are dropped; an RLE whose size differs from the
  image's JSON size is dropped; an annotation left without any mask is dropped.
- ``boxes`` are the JSON visible box (``bbox``, KINS ``i_bbox``, ``inmodal_bbox``) converted to
  xyxy and clipped to the image; without one, the tight box of the visible mask.
- JSON ``width``/``height`` disagreeing with the decoded (EXIF-upright) image: one warning; masks
  are rasterised at the JSON size (the frame the coordinates refer to) and then zero padded or
  cropped at the bottom/right to the real image size. Nothing is resampled.
- a missing/corrupt image raises :class:`ImageReadError` naming the file, or with
  ``skip_bad_images=True`` the next readable sample is returned (counted, one warning).
- JSON that is not COCO (missing ``images``/``annotations``, an image without ``id``...) raises
  ``ValueError`` naming the file and the key.
"""

from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from instseg.structures import Instances, masks_to_boxes
from instseg.structures.masks import is_valid_polygon, polygons_to_mask, rle_to_mask
from instseg.utils.errors import InvalidInputError
from instseg.utils.image import ImageReadError, read_image
from instseg.utils.io import read_json, require_lists

__all__ = [
    "CocoInstanceDataset",
    "LAYOUTS",
    "LAYOUT_KEYS",
    "LAYOUT_SIGNATURES",
    "LayoutError",
    "LayoutKeys",
    "MASK_KINDS",
    "detect_layout",
    "layout_fields",
    "occlusion_relation",
]

LAYOUTS = ("coco", "synthetic", "kins", "kins_updated", "cocoa", "cocoa_cls")


@dataclass(frozen=True)
class LayoutKeys:
    """JSON keys of one annotation in a per-instance layout (COCOA's per-image ``regions`` are
    read apart). ``*_fallback``: the key used when the first is absent. ``bbox`` None: the file's
    box is not the visible box (the visible box comes from the visible mask)."""

    visible: str
    amodal: str | None
    bbox: str | None
    amodal_fallback: str | None = None
    bbox_fallback: str | None = None
    visible_fallback: str | None = None


# The one table of the layouts' keys (the dataset and the amodal evaluator both read it).
LAYOUT_KEYS: dict[str, LayoutKeys] = {
    "coco": LayoutKeys(visible="segmentation", amodal=None, bbox="bbox"),
    "synthetic": LayoutKeys(visible="segmentation", amodal="amodal_segm", bbox="bbox"),
    "kins": LayoutKeys(
        visible="i_segm",
        amodal="a_segm",
        bbox="i_bbox",
        amodal_fallback="segmentation",
        bbox_fallback="bbox",
    ),
    "kins_updated": LayoutKeys(visible="inmodal_seg", amodal="segmentation", bbox="inmodal_bbox"),
    # visible_mask is absent for unoccluded instances: visible = amodal (see layout_fields)
    "cocoa_cls": LayoutKeys(
        visible="visible_mask", amodal="segmentation", bbox=None, visible_fallback="segmentation"
    ),
}

# Annotation keys that only one layout uses (the file's layout is the one whose keys it has).
LAYOUT_SIGNATURES: dict[str, tuple[str, ...]] = {
    "cocoa": ("regions",),
    "synthetic": ("amodal_segm", "occluder_segm", "depth_order"),
    "kins": ("a_segm", "i_segm"),
    "kins_updated": ("inmodal_seg",),
    "cocoa_cls": ("visible_mask",),
}
# COCOA-cls keys that can come without the visible mask (an unoccluded instance)
_COCOA_CLS_EXTRAS = ("occlude_rate", "occl_depth", "invisible_mask")


class LayoutError(InvalidInputError):
    """An annotation file whose keys fit no layout unambiguously (the message names the file)."""


def layout_fields(a: dict[str, Any], layout: str) -> tuple[Any, Any, Any]:
    """(visible segmentation, amodal segmentation or None, visible xywh box or None) of one
    JSON annotation in ``layout`` (any of :data:`LAYOUT_KEYS`), as stored in the file.

    COCOA-cls: without ``visible_mask`` the instance is unoccluded and its visible mask is the
    amodal one, unless its ``occlude_rate`` says it is occluded (then the visible mask is
    unknown: None)."""
    k = LAYOUT_KEYS[layout]

    def get(key: str | None, fallback: str | None) -> Any:
        v = a.get(key) if key else None
        return a.get(fallback) if v is None and fallback else v

    visible_fallback = k.visible_fallback
    if layout == "cocoa_cls" and _occluded(a):
        visible_fallback = None
    return (
        get(k.visible, visible_fallback),
        get(k.amodal, k.amodal_fallback),
        get(k.bbox, k.bbox_fallback),
    )


def _occluded(a: dict[str, Any]) -> bool:
    """COCOA-cls: the annotation says it is partly hidden (occlude_rate > 0)."""
    rate = a.get("occlude_rate")
    return isinstance(rate, int | float) and not isinstance(rate, bool) and rate > 0


MASK_KINDS = ("visible", "amodal", "occluder")
# stats keys that are normal filtering, not data problems: counted but not warned about
_QUIET = {"crowd dropped", "category filtered"}

Transform = Callable[..., tuple[Tensor, Instances]]


@dataclass
class _Ann:
    ann_id: int
    category_id: int
    bbox: list[float] | None  # visible box, xywh
    iscrowd: bool = False
    visible: Any = (
        None  # cleaned segmentation: polygon list ([] = empty) or RLE dict; None = absent
    )
    amodal: Any = None
    occluder: Any = None
    depth: int | None = None
    extra: dict[str, int] = field(default_factory=dict)


@dataclass
class _Image:
    image_id: int
    file_name: str
    height: int | None
    width: int | None
    anns: list[_Ann] = field(default_factory=list)


def detect_layout(annotations: list[dict[str, Any]], *, source: str = "annotations") -> str:
    """Name of the layout (one of :data:`LAYOUTS`) from the keys of the annotations.

    The layout is the one whose :data:`LAYOUT_SIGNATURES` keys appear (annotations without any
    are read under it with its fallbacks); none at all is plain ``"coco"``. Raises
    :class:`LayoutError` naming ``source`` (the file) when the keys fit no layout unambiguously:
    keys of two layouts (in one annotation or across the file), or COCOA-cls extras
    (``occlude_rate``/``occl_depth``/``invisible_mask``) with an occluded instance but no
    ``visible_mask`` anywhere (plain COCO or COCOA-cls? the visible masks are unknown either way).
    """
    found: dict[str, int] = {}  # layout -> first annotation index with its keys
    extras_at: int | None = None
    occluded_at: int | None = None
    for i, a in enumerate(annotations):
        if not isinstance(a, dict):
            continue
        mine = [name for name, keys in LAYOUT_SIGNATURES.items() if any(k in a for k in keys)]
        if len(mine) > 1:
            keys = sorted(k for name in mine for k in LAYOUT_SIGNATURES[name] if k in a)
            raise LayoutError(
                f"{source}: annotations[{i}] has keys of the {' and '.join(mine)} layouts "
                f"({', '.join(keys)}); cannot tell which masks are visible and which amodal"
            )
        for name in mine:
            found.setdefault(name, i)
        if any(k in a for k in _COCOA_CLS_EXTRAS):
            extras_at = i if extras_at is None else extras_at
            if occluded_at is None and _occluded(a):
                occluded_at = i
    if len(found) > 1:
        where = ", ".join(f"{n} (annotations[{i}])" for n, i in sorted(found.items()))
        raise LayoutError(f"{source}: annotations mix the layouts {where}; refusing to guess")
    if found:
        return next(iter(found))
    if extras_at is not None:
        if occluded_at is not None:
            raise LayoutError(
                f"{source}: annotations[{occluded_at}] has COCOA-cls keys and occlude_rate > 0 "
                f"but no annotation has 'visible_mask': the visible masks are unknown (plain COCO "
                f"'segmentation' or COCOA-cls amodal polygons?); refusing to guess"
            )
        return "cocoa_cls"  # every instance unoccluded: visible = amodal = segmentation
    return "coco"


class CocoInstanceDataset(Dataset):
    """Instances of a COCO-style JSON file; see the module docstring for layouts and conventions.

    ``dataset[i]`` returns (after ``transforms``)::

        {"image": uint8 (3, H, W) RGB,
         "instances": Instances(boxes float32 (N, 4) xyxy, labels int64 (N,),
                                masks bool (N, H, W) visible, amodal_masks / occluder_masks
                                bool (N, H, W) and depth int64 (N,) where the file has them,
                                extra={"iscrowd": int64 (N,), "ids": int64 (N,) annotation ids}),
         "image_id": int, "file_name": str (as in the JSON), "orig_size": (H, W) of the file}

    Labels are 0..K-1 in the order of ``category_ids`` (default: all category ids, sorted).
    ``transforms`` is called as ``transforms(image, instances)`` (plus ``generator=`` when
    :meth:`get` receives one, see :mod:`instseg.data.build`).
    """

    def __init__(
        self,
        json_file: str | Path,
        image_root: str | Path,
        *,
        transforms: Transform | None = None,
        with_masks: bool = True,
        filter_empty: bool = False,
        category_ids: list[int] | None = None,
        mask_kinds: tuple[str, ...] = MASK_KINDS,
        keep_crowd: bool = False,
        skip_bad_images: bool = False,
    ) -> None:
        bad = sorted(set(mask_kinds) - set(MASK_KINDS))
        if bad:
            raise ValueError(f"unknown mask_kinds {bad}; valid: {list(MASK_KINDS)}")
        self.json_file = Path(json_file)
        self.image_root = Path(image_root)
        self.transforms = transforms
        self.with_masks = with_masks
        self.mask_kinds = tuple(mask_kinds)
        self.keep_crowd = keep_crowd
        self.skip_bad_images = skip_bad_images
        self.stats: Counter[str] = Counter()
        self._warned: set[str] = set()
        self._cocoa_seen: set[int] = set()

        data = read_json(self.json_file)
        require_lists(data, str(self.json_file), ("images", "annotations"))
        self.layout = detect_layout(data["annotations"], source=str(self.json_file))
        self._init_categories(data, category_ids)
        images = self._parse_images(data["images"])
        self._parse_annotations(data["annotations"], images)
        kept = [im for im in images.values() if im.anns or not filter_empty]
        self.stats["image without annotations"] = sum(1 for im in images.values() if not im.anns)
        self._images = kept
        self._warn_parse_problems()

    # -- public ---------------------------------------------------------------------------
    @property
    def image_ids(self) -> list[int]:
        return [im.image_id for im in self._images]

    @property
    def num_classes(self) -> int:
        return len(self.category_ids)

    def __len__(self) -> int:
        return len(self._images)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.get(index)

    def get(self, index: int, *, generator: torch.Generator | None = None) -> dict[str, Any]:
        """Sample ``index``; ``generator`` seeds the random transforms (if given)."""
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for {n} images")
        for attempt in range(n):
            rec = self._images[(index + attempt) % n]
            path = self.image_root / rec.file_name
            try:
                array = read_image(path)
            except ImageReadError as e:
                if not self.skip_bad_images:
                    raise
                self._runtime_problem("unreadable image skipped", f"{e}")
                continue
            image = torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))
            h, w = int(image.shape[1]), int(image.shape[2])
            inst = self._instances(rec, h, w)
            if self.transforms is not None:
                if generator is None:
                    image, inst = self.transforms(image, inst)
                else:
                    image, inst = self.transforms(image, inst, generator=generator)
            return {
                "image": image,
                "instances": inst,
                "image_id": rec.image_id,
                "file_name": rec.file_name,
                "orig_size": (h, w),
            }
        raise ImageReadError(f"{self.json_file}: none of the {n} images could be read")

    # -- parsing ----------------------------------------------------------------------------
    def _init_categories(self, data: dict[str, Any], category_ids: list[int] | None) -> None:
        cats = data.get("categories")
        if cats is None and self.layout == "cocoa":
            cats = [{"id": 1, "name": "thing"}, {"id": 2, "name": "stuff"}]
        if not isinstance(cats, list):
            raise ValueError(f"{self.json_file}: missing or invalid key 'categories'")
        names: dict[int, str] = {}
        for i, c in enumerate(cats):
            if not isinstance(c, dict) or "id" not in c:
                raise ValueError(f"{self.json_file}: categories[{i}] has no key 'id'")
            names[int(c["id"])] = str(c.get("name", c["id"]))
        if category_ids is None:
            ids = sorted(names)
        else:
            ids = [int(c) for c in category_ids]
            missing = [c for c in ids if c not in names]
            if missing:
                raise ValueError(f"{self.json_file}: category_ids {missing} not in 'categories'")
        self._all_category_ids = set(names)
        self.category_ids: list[int] = ids
        self.category_names: list[str] = [names[c] for c in ids]
        self._label_of = {c: i for i, c in enumerate(ids)}

    def _parse_images(self, items: list[Any]) -> dict[int, _Image]:
        images: dict[int, _Image] = {}
        for i, im in enumerate(items):
            for key in ("id", "file_name"):
                if not isinstance(im, dict) or key not in im:
                    raise ValueError(f"{self.json_file}: images[{i}] has no key '{key}'")
            h, w = im.get("height"), im.get("width")
            ok = isinstance(h, int) and isinstance(w, int) and h > 0 and w > 0
            try:
                image_id = _as_int(im["id"])
            except ValueError as e:
                raise ValueError(f"{self.json_file}: images[{i}]: invalid 'id' ({e})") from e
            images[image_id] = _Image(
                image_id, str(im["file_name"]), h if ok else None, w if ok else None
            )
        return images

    def _parse_annotations(self, items: list[Any], images: dict[int, _Image]) -> None:
        for i, a in enumerate(items):
            if not isinstance(a, dict) or "image_id" not in a:
                raise ValueError(f"{self.json_file}: annotations[{i}] has no key 'image_id'")
            try:
                rec = images.get(_as_int(a["image_id"]))
                if rec is None:
                    self.stats["unknown image id"] += 1
                    continue
                anns = self._read_layout(a, rec)
            except KeyError as e:
                raise ValueError(
                    f"{self.json_file}: annotations[{i}] has no key {e} (layout '{self.layout}')"
                ) from None
            except (TypeError, ValueError) as e:
                raise ValueError(f"{self.json_file}: annotations[{i}]: invalid value ({e})") from e
            for ann in anns:
                if self._keep(ann):
                    rec.anns.append(ann)

    def _read_layout(self, a: dict[str, Any], rec: _Image) -> list[_Ann]:
        if self.layout == "cocoa":
            if rec.image_id in self._cocoa_seen:  # several annotators: keep the first set
                self.stats["extra COCOA annotation set ignored"] += 1
                return []
            self._cocoa_seen.add(rec.image_id)
            return [self._read_cocoa_region(r, rec, k) for k, r in enumerate(a["regions"])]
        ann = _Ann(
            ann_id=int(a.get("id", -1)),
            category_id=_as_int(a["category_id"]),
            bbox=None,
            iscrowd=bool(a.get("iscrowd", 0)),
        )
        seg = self._clean_segm
        visible, amodal, ann.bbox = layout_fields(a, self.layout)
        if self.layout == "cocoa_cls" and visible is None:
            self.stats["occluded COCOA-cls annotation without visible_mask dropped"] += 1
            return []
        ann.visible = seg(visible, rec)
        if LAYOUT_KEYS[self.layout].amodal is not None:
            ann.amodal = seg(amodal, rec)
        if self.layout == "cocoa_cls" and a.get("occl_depth") is not None:
            ann.extra["cocoa_occl_depth"] = _as_int(a["occl_depth"])
        if self.layout == "synthetic":
            ann.occluder = seg(a.get("occluder_segm"), rec)
            ann.depth = _as_int(a["depth_order"]) if a.get("depth_order") is not None else None
        elif self.layout == "kins":
            for key in ("oco_id", "ico_id"):
                if a.get(key) is not None:
                    ann.extra[f"kins_{key}"] = _as_int(a[key])
        return [ann]

    def _read_cocoa_region(self, r: dict[str, Any], rec: _Image, k: int) -> _Ann:
        amodal = self._clean_segm(r["segmentation"], rec)
        visible = self._clean_segm(r["visible_mask"], rec) if r.get("visible_mask") else amodal
        cat = r.get("category_id", 2 if r.get("isStuff") else 1)
        order = r.get("order")
        return _Ann(
            ann_id=int(r.get("id", k)),  # COCOA regions have no id: their index in the image
            category_id=_as_int(cat),
            bbox=None,  # COCOA region boxes are amodal: the visible box comes from the mask
            visible=visible,
            amodal=amodal,
            depth=_as_int(order) - 1 if order is not None else None,
        )

    def _keep(self, ann: _Ann) -> bool:
        if ann.category_id not in self._all_category_ids:
            self.stats["unknown category id"] += 1
            return False
        if ann.category_id not in self._label_of:
            self.stats["category filtered"] += 1
            return False
        if ann.iscrowd and not self.keep_crowd:
            self.stats["crowd dropped"] += 1
            return False
        ann.bbox = _clean_bbox(ann.bbox)
        if self.with_masks:
            if _is_empty(ann.visible) and _is_empty(ann.amodal):
                self.stats["annotation without a valid mask"] += 1
                return False
        elif ann.bbox is None:
            self.stats["annotation without a valid box"] += 1
            return False
        return True

    def _clean_segm(self, segm: Any, rec: _Image) -> Any:
        """Polygons -> valid parts only ([] if none); RLE checked against the image size."""
        if segm is None:
            return None
        if isinstance(segm, list):
            if segm and all(isinstance(v, int | float) for v in segm):
                segm = [segm]  # one flat polygon (COCOA)
            parts = [p for p in segm if is_valid_polygon(p)]
            self.stats["degenerate polygon dropped"] += len(segm) - len(parts)
            return parts
        if isinstance(segm, dict) and "size" in segm and "counts" in segm:
            size = tuple(int(s) for s in segm["size"])
            if rec.height is not None and size != (rec.height, rec.width):
                self.stats["RLE size differs from image size"] += 1
                return []
            counts = segm["counts"]
            if isinstance(counts, list) and sum(counts) != size[0] * size[1]:
                self.stats["uncompressed RLE with wrong length"] += 1
                return []
            return segm
        self.stats["unsupported segmentation"] += 1
        return []

    def _warn_parse_problems(self) -> None:
        problems = {k: v for k, v in self.stats.items() if v and k not in _QUIET}
        problems.pop("image without annotations", None)
        if problems:
            text = ", ".join(f"{v} {k}" for k, v in sorted(problems.items()))
            warnings.warn(f"{self.json_file}: {text}", stacklevel=3)

    def _runtime_problem(self, kind: str, detail: str, count: int = 1) -> None:
        self.stats[kind] += count
        if kind not in self._warned:
            self._warned.add(kind)
            warnings.warn(
                f"{self.json_file}: {kind} ({detail}); further cases are counted in "
                f"dataset.stats without a warning",
                stacklevel=4,
            )

    # -- building Instances --------------------------------------------------------------
    def _instances(self, rec: _Image, h: int, w: int) -> Instances:
        jh, jw = rec.height or h, rec.width or w
        if (jh, jw) != (h, w):
            self._runtime_problem(
                "JSON size differs from image size",
                f"{rec.file_name}: JSON {jh}x{jw}, image {h}x{w}; masks kept at JSON scale, "
                f"padded/cropped bottom-right",
            )
        anns = rec.anns
        vis = amo = occ = None
        if self.with_masks:
            amodal_layout = self.layout != "coco"
            vis = self._decode_all(anns, "visible", jh, jw, h, w)
            amo = self._decode_all(anns, "amodal", jh, jw, h, w) if amodal_layout else None
            if amodal_layout and anns and all(a.occluder is not None for a in anns):
                occ = self._decode_all(anns, "occluder", jh, jw, h, w)
            keep = [
                i for i in range(len(anns)) if vis[i].any() or (amo is not None and amo[i].any())
            ]
            if len(keep) < len(anns):
                self._runtime_problem(
                    "annotation with an empty mask dropped", rec.file_name, len(anns) - len(keep)
                )
                anns = [anns[i] for i in keep]
                vis, amo, occ = (None if m is None else m[keep] for m in (vis, amo, occ))
            if amo is not None and occ is None:
                occ = _derive_occluders(vis, amo)
        depth = self._depth(anns, vis, amo)
        boxes = self._boxes(anns, vis, h, w, rec.file_name)
        extra = {
            "iscrowd": torch.tensor([int(a.iscrowd) for a in anns], dtype=torch.long),
            "ids": torch.tensor([a.ann_id for a in anns], dtype=torch.long),
        }
        for key in sorted({k for a in anns for k in a.extra}):
            extra[key] = torch.tensor([a.extra.get(key, -1) for a in anns], dtype=torch.long)
        return Instances(
            image_size=(h, w),
            boxes=boxes,
            labels=torch.tensor([self._label_of[a.category_id] for a in anns], dtype=torch.long),
            masks=_bool(vis) if "visible" in self.mask_kinds else None,
            amodal_masks=_bool(amo) if "amodal" in self.mask_kinds else None,
            occluder_masks=_bool(occ) if "occluder" in self.mask_kinds else None,
            depth=depth,
            extra=extra,
        )

    def _decode_all(
        self, anns: list[_Ann], kind: str, jh: int, jw: int, h: int, w: int
    ) -> np.ndarray:
        """(N, h, w) bool masks of one kind; absent or empty segmentations give empty masks."""
        out = np.zeros((len(anns), h, w), dtype=bool)
        hh, ww = min(h, jh), min(w, jw)
        for i, a in enumerate(anns):
            s = getattr(a, kind)
            if _is_empty(s):
                continue
            try:
                m = _decode(s, jh, jw)
            except ValueError as e:
                raise ValueError(
                    f"{self.json_file}: annotation {a.ann_id}: bad {kind} mask ({e})"
                ) from e
            out[i, :hh, :ww] = m[:hh, :ww]
        return out

    def _depth(
        self, anns: list[_Ann], vis: np.ndarray | None, amo: np.ndarray | None
    ) -> Tensor | None:
        given = [a.depth for a in anns]
        if anns and all(d is not None for d in given):
            return torch.tensor(given, dtype=torch.long)
        if vis is not None and amo is not None:
            return torch.from_numpy(_occlusion_layers(vis, amo))
        return None

    def _boxes(
        self, anns: list[_Ann], vis: np.ndarray | None, h: int, w: int, file_name: str
    ) -> Tensor:
        boxes = torch.zeros(len(anns), 4)
        need = []
        for i, a in enumerate(anns):
            if a.bbox is None:
                need.append(i)
                continue
            x, y, bw, bh = a.bbox
            boxes[i] = torch.tensor([x, y, x + bw, y + bh], dtype=torch.float32)
        clipped = boxes.clone()
        clipped[:, 0::2] = clipped[:, 0::2].clamp(0, w)
        clipped[:, 1::2] = clipped[:, 1::2].clamp(0, h)
        if not torch.equal(clipped, boxes):
            changed = int((clipped != boxes).any(dim=1).sum())
            self._runtime_problem("box partly outside the image clipped", file_name, changed)
        if need and vis is not None:
            clipped[need] = masks_to_boxes(torch.from_numpy(vis[need]))
        return clipped


# -- helpers ---------------------------------------------------------------------------------
def _as_int(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int | float | str):
        raise ValueError(f"expected an integer id, got {v!r}")
    return int(v)


def _clean_bbox(b: Any) -> list[float] | None:
    if not isinstance(b, list | tuple) or len(b) != 4:
        return None
    try:
        v = [float(x) for x in b]
    except (TypeError, ValueError):
        return None
    if not np.isfinite(v).all() or v[2] < 0 or v[3] < 0:
        return None
    return v


def _is_empty(segm: Any) -> bool:
    return segm is None or (isinstance(segm, list) and len(segm) == 0)


def _decode(segm: Any, h: int, w: int) -> np.ndarray:
    if isinstance(segm, list):
        return polygons_to_mask(segm, h, w)
    return rle_to_mask(segm)


def _bool(m: np.ndarray | None) -> Tensor | None:
    return None if m is None else torch.from_numpy(np.ascontiguousarray(m))


def occlusion_relation(vis: np.ndarray, amo: np.ndarray) -> np.ndarray:
    """(N, N) bool: [i, j] = instance j's visible mask overlaps instance i's invisible part."""
    n = vis.shape[0]
    rel = np.zeros((n, n), dtype=bool)
    if n == 0:
        return rel
    invisible = amo & ~vis
    for i in np.nonzero(invisible.reshape(n, -1).any(axis=1))[0]:
        rel[i] = (vis & invisible[i]).reshape(n, -1).any(axis=1)
    np.fill_diagonal(rel, False)
    return rel


def _derive_occluders(vis: np.ndarray, amo: np.ndarray) -> np.ndarray:
    rel = occlusion_relation(vis, amo)
    out = np.zeros_like(vis)
    for i in range(vis.shape[0]):
        js = np.nonzero(rel[i])[0]
        if js.size:
            out[i] = vis[js].any(axis=0)
    return out


def _occlusion_layers(vis: np.ndarray, amo: np.ndarray) -> np.ndarray:
    """Layer index per instance: 0 if unoccluded, else 1 + max layer of its occluders (cycles are
    cut after N rounds)."""
    rel = occlusion_relation(vis, amo)
    n = rel.shape[0]
    depth = np.zeros(n, dtype=np.int64)
    for _ in range(n):
        masked = np.where(rel, depth[None, :] + 1, 0)
        new = np.minimum(masked.max(axis=1) if n else depth, n - 1)
        if np.array_equal(new, depth):
            break
        depth = new
    return depth
