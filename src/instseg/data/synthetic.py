"""Synthetic occlusion scenes with exact modal (visible) and amodal masks, depth order and
occluder masks, written as COCO JSON with amodal fields. The built-in data every method trains
and evaluates on, on CPU, in minutes.

A scene is a background and a few sprites (procedural textured shapes, and real DAVIS cutouts
when a cutout folder is given) painted back to front. Because every object's full shape is known
before painting, the masks are exact: ``visible = amodal & ~(union of nearer amodal masks)``.

Default seeds: training data uses ``TRAIN_SEED = 0``, held-out data ``VAL_SEED = 1000``; image
``i`` of a set is drawn from ``numpy.random.default_rng([seed, i])``, so a seed fixes every byte
and sets with different seeds share no image.

Annotation layout (per object with at least ``min_visible_area`` visible pixels)::

    id, image_id, category_id, iscrowd=0,
    segmentation  visible mask, COCO RLE {"size": [h, w], "counts": str}
    bbox, area    xywh box (pycocotools' toBbox) and pixel count of the visible mask
    amodal_segm, amodal_bbox, amodal_area   the same for the full shape (clipped to the image)
    occluder_segm union of the visible masks of the nearer annotated objects whose visible mask
                  meets this object's amodal mask (empty RLE when nothing covers it)
    depth_order   rank among the image's annotated objects, 0 = nearest the camera
    occlusion_ratio  1 - area / amodal_area
    lookalike     (only with ``same_class_overlap``) true when the object overlaps a look-alike
                  of its own class drawn onto it, or is one

Categories carry ``kind`` ("shape" | "cutout") and ``split`` ("base" | "novel") for
partially supervised (base -> novel) training; see ``SceneConfig.novel_classes``. With
``SceneConfig.class_agnostic`` there is one category, ``object`` (kind "object"), for every
painted thing: the objectness training of the shared image model.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pycocotools.mask as mask_util

from instseg.data.synthetic_cutouts import CutoutBank, SpriteJitter
from instseg.data.synthetic_shapes import SHAPE_KINDS, Sprite, make_background, make_shape_sprite
from instseg.structures.masks import mask_to_rle
from instseg.utils.io import atomic_write_json

__all__ = [
    "TRAIN_SEED",
    "VAL_SEED",
    "SceneConfig",
    "make_scene",
    "scene_categories",
    "scene_annotations",
    "generate_scenes",
    "draw_sprite",
    "place_sprites",
    "paste_mask",
    "composite",
    "visible_masks",
    "occluder_masks",
]

TRAIN_SEED = 0
VAL_SEED = 1000


@dataclass
class SceneConfig:
    image_size: tuple[int, int] = (256, 256)  # (height, width) in pixels
    min_objects: int = 2  # objects painted per image, drawn uniformly in [min, max]
    max_objects: int = 6
    occlusion: float = 0.5  # 0: objects spread apart; 1: every object piled onto another
    min_size: float = 0.15  # object's longer side, as a fraction of the image's shorter side
    max_size: float = 0.45
    min_visible_area: int = 48  # pixels; objects seen less are not annotated (still occlude)
    shape_kinds: tuple[str, ...] = SHAPE_KINDS  # procedural classes, in category-id order
    # classes tagged split="novel" (the rest are "base"): half the shapes, half the DAVIS kinds
    novel_classes: tuple[str, ...] = ("triangle", "star", "cross", "hexagon", "ball", "vehicle")
    cutout_prob: float = 0.4  # share of objects that are real cutouts (when cutouts are given)
    real_background_prob: float = 0.7  # share of images on a real crop (when cutouts are given)
    image_format: str = "png"  # "png" (lossless) or "jpg"
    class_agnostic: bool = False  # one category "object" for every painted thing
    jitter: SpriteJitter | None = None  # photometric jitter of each pasted cutout (None: off)
    scene_blur: float = 0.0  # probability of a mild Gaussian blur of the whole image
    shape_size_scale: float = 1.0  # procedural shapes' size relative to cutouts' (min/max_size)
    # probability that an object (after the first) is a look-alike of an earlier one, placed
    # onto it: same class, and same texture (shapes) or same DAVIS sequence (cutouts). The
    # same-class / similar-appearance overlaps BCNet is motivated by (survey ch. 3); 0 = never
    # (and the same scenes as before this option existed)
    same_class_overlap: float = 0.0

    def __post_init__(self) -> None:
        if isinstance(self.jitter, dict):  # from YAML / dataclasses.asdict
            self.jitter = SpriteJitter(**self.jitter)
        h, w = self.image_size
        if min(h, w) < 16:
            raise ValueError(f"image_size must be at least 16x16, got {self.image_size}")
        if not 1 <= self.min_objects <= self.max_objects:
            raise ValueError(
                f"need 1 <= min_objects <= max_objects, got {self.min_objects}, {self.max_objects}"
            )
        if not 0.0 <= self.same_class_overlap <= 1.0:
            raise ValueError(f"same_class_overlap must be in [0, 1], got {self.same_class_overlap}")
        if not 0.0 <= self.occlusion <= 1.0:
            raise ValueError(f"occlusion must be in [0, 1], got {self.occlusion}")
        if not 0.0 < self.min_size <= self.max_size <= 1.0:
            raise ValueError(
                f"need 0 < min_size <= max_size <= 1, got {self.min_size}, {self.max_size}"
            )
        bad = [k for k in self.shape_kinds if k not in SHAPE_KINDS]
        if bad or not self.shape_kinds:
            raise ValueError(f"shape_kinds must be a non-empty subset of {SHAPE_KINDS}, got {bad}")
        if self.image_format not in ("png", "jpg"):
            raise ValueError(f"image_format must be 'png' or 'jpg', got '{self.image_format}'")


def scene_categories(cfg: SceneConfig, bank: CutoutBank | None = None) -> list[dict[str, Any]]:
    """COCO categories: the shape kinds (ids 1..K in ``cfg.shape_kinds`` order), then the
    cutout classes of ``bank`` in sorted order; just ``object`` (id 1) when
    ``cfg.class_agnostic``."""
    if cfg.class_agnostic:
        return [
            {
                "id": 1,
                "name": "object",
                "supercategory": "object",
                "kind": "object",
                "split": "base",
            }
        ]
    names = [(n, "shape") for n in cfg.shape_kinds]
    names += [(n, "cutout") for n in (bank.names if bank else ()) if n not in cfg.shape_kinds]
    return [
        {
            "id": i + 1,
            "name": n,
            "supercategory": kind,
            "kind": kind,
            "split": "novel" if n in cfg.novel_classes else "base",
        }
        for i, (n, kind) in enumerate(names)
    ]


def make_scene(
    rng: np.random.Generator, cfg: SceneConfig, *, bank: CutoutBank | None = None
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Draw one scene.

    Returns ``image`` (H, W, 3) uint8 RGB and one dict per painted object, nearest first:

    - ``name``, ``category_id``: class (ids as in :func:`scene_categories`)
    - ``amodal``, ``visible``, ``occluder``: (H, W) bool masks (``occluder`` as in the module
      docstring; all False for objects that are not annotated)
    - ``depth``: index in this list (0 = nearest); ``depth_order``: rank among annotated objects,
      -1 if not annotated; ``annotated``: visible area >= ``cfg.min_visible_area``
    - ``occlusion_ratio``: 1 - visible / amodal pixel counts
    - ``sprite`` (:class:`Sprite`), ``position``: (x, y) of the sprite's top-left corner
    - ``lookalike_of``: index in this list of the object it was drawn to look like (placed onto
      it; ``cfg.same_class_overlap``), -1 if none
    """
    h, w = cfg.image_size
    cat_ids = {c["name"]: c["id"] for c in scene_categories(cfg, bank)}
    if cfg.class_agnostic:
        cat_ids = _AllOne()
    n = int(rng.integers(cfg.min_objects, cfg.max_objects + 1))
    if cfg.same_class_overlap > 0:
        sprites, anchors = [], []
        for k in range(n):
            if k > 0 and rng.random() < cfg.same_class_overlap:
                j = int(rng.integers(k))
                sprites.append(draw_lookalike(rng, cfg, bank, sprites[j]))
                anchors.append(j)
            else:
                sprites.append(draw_sprite(rng, cfg, bank))
                anchors.append(None)
        positions = place_sprites(rng, sprites, cfg, anchors=anchors)
    else:
        sprites = [draw_sprite(rng, cfg, bank) for _ in range(n)]
        anchors = [None] * n
        positions = place_sprites(rng, sprites, cfg)
    near_first = rng.permutation(n)
    rank_of = {int(old): new for new, old in enumerate(near_first)}
    lookalike_of = [
        -1 if anchors[i] is None else rank_of[anchors[i]] for i in near_first
    ]  # index (nearest first) of the object each one was drawn to look like
    sprites = [sprites[i] for i in near_first]
    positions = [positions[i] for i in near_first]

    background = None
    if bank is not None and rng.random() < cfg.real_background_prob:
        background = bank.background(rng, h, w)
    if background is None:
        background = make_background(rng, h, w)
    layers = list(zip(sprites, positions, strict=True))[::-1]  # back to front
    image = composite(background, layers)
    if cfg.scene_blur > 0 and rng.random() < cfg.scene_blur:
        image = cv2.GaussianBlur(image, (0, 0), float(rng.uniform(0.5, 1.2)))

    amodal = [paste_mask(s.mask, p, (h, w)) for s, p in zip(sprites, positions, strict=True)]
    visible = visible_masks(amodal)
    annotated = [int(v.sum()) >= cfg.min_visible_area for v in visible]
    occluders = occluder_masks(amodal, visible, annotated)
    objects, rank = [], 0
    for i, (s, p) in enumerate(zip(sprites, positions, strict=True)):
        a_area = int(amodal[i].sum())
        objects.append(
            {
                "name": s.name,
                "category_id": cat_ids[s.name],
                "amodal": amodal[i],
                "visible": visible[i],
                "occluder": occluders[i],
                "depth": i,
                "depth_order": rank if annotated[i] else -1,
                "annotated": annotated[i],
                "occlusion_ratio": 1.0 - int(visible[i].sum()) / max(a_area, 1),
                "sprite": s,
                "position": p,
                "lookalike_of": lookalike_of[i],
            }
        )
        rank += int(annotated[i])
    partners = {j for j in lookalike_of if j >= 0}
    for i, o in enumerate(objects):
        o["lookalike"] = o["lookalike_of"] >= 0 or i in partners
    return image, objects


def scene_annotations(
    objects: list[dict[str, Any]], *, image_id: int, first_id: int
) -> list[dict[str, Any]]:
    """COCO annotation dicts (layout in the module docstring) for the annotated objects of
    :func:`make_scene`, with ids ``first_id, first_id + 1, ...``."""
    anns = []
    for o in (o for o in objects if o["annotated"]):
        vis, amo = mask_to_rle(o["visible"]), mask_to_rle(o["amodal"])
        area, a_area = int(o["visible"].sum()), int(o["amodal"].sum())
        anns.append(
            {
                "id": first_id + len(anns),
                "image_id": image_id,
                "category_id": o["category_id"],
                "iscrowd": 0,
                "segmentation": vis,
                "bbox": _rle_bbox(vis),
                "area": area,
                "amodal_segm": amo,
                "amodal_bbox": _rle_bbox(amo),
                "amodal_area": a_area,
                "occluder_segm": mask_to_rle(o["occluder"]),
                "depth_order": o["depth_order"],
                "occlusion_ratio": round(1.0 - area / a_area, 6),
            }
        )
        if o.get("lookalike"):
            anns[-1]["lookalike"] = True
    return anns


def generate_scenes(
    out_dir: str | Path,
    *,
    num_images: int,
    seed: int,
    image_size: tuple[int, int] | None = None,
    min_objects: int | None = None,
    max_objects: int | None = None,
    occlusion: float | None = None,
    cutout_root: str | Path | Sequence[str | Path] | None = None,
    config: SceneConfig | None = None,
    bank: CutoutBank | None = None,
) -> Path:
    """Write ``out_dir/images/NNNNNN.png`` (or ``.jpg``) and ``out_dir/annotations.json``.

    ``config`` (default :class:`SceneConfig`) gives every setting; the keyword arguments that are
    not None override it. ``cutout_root`` is a DAVIS-style folder of real cutouts and
    backgrounds (None: procedural only); ``bank`` a loaded :class:`CutoutBank` instead (e.g. one
    restricted to some sequences). The JSON is written last and atomically, so its presence
    means the set is complete; ``info.cutout_sequences`` lists the sequences drawn from.
    Returns the JSON's path. Same arguments -> same bytes.
    """
    if num_images < 0 or seed < 0:
        raise ValueError(f"num_images and seed must be >= 0, got {num_images}, {seed}")
    overrides = {
        "image_size": image_size,
        "min_objects": min_objects,
        "max_objects": max_objects,
        "occlusion": occlusion,
    }
    cfg = dataclasses.replace(
        config or SceneConfig(), **{k: v for k, v in overrides.items() if v is not None}
    )
    if bank is None and cutout_root is not None:
        bank = CutoutBank.load(cutout_root)
    out_dir = Path(out_dir)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for i in range(num_images):
        image, objects = make_scene(np.random.default_rng([seed, i]), cfg, bank=bank)
        file_name = f"images/{i + 1:06d}.{cfg.image_format}"
        _write_image(out_dir / file_name, image)
        h, w = cfg.image_size
        images.append({"id": i + 1, "file_name": file_name, "width": w, "height": h})
        annotations += scene_annotations(objects, image_id=i + 1, first_id=len(annotations) + 1)
    info = {
        "description": "instseg synthetic occlusion scenes",
        "seed": seed,
        "num_images": num_images,
        "cutout_root": _root_info(cutout_root),
        "cutout_sequences": list(bank.sequences) if bank is not None else [],
        "config": dataclasses.asdict(cfg),
    }
    data = {
        "info": info,
        "images": images,
        "annotations": annotations,
        "categories": scene_categories(cfg, bank),
    }
    return atomic_write_json(out_dir / "annotations.json", data)


# ---- layering and placement: shared with the video generator----------------------------------


def paste_mask(mask: np.ndarray, position: tuple[int, int], size: tuple[int, int]) -> np.ndarray:
    """Place a sprite mask (h, w) with its top-left corner at ``position`` = (x, y) in an image
    of ``size`` = (H, W); parts outside the image are cut off. Returns (H, W) bool."""
    out = np.zeros(size, dtype=bool)
    src, dst = _overlap(mask.shape, position, size)
    if src is not None:
        out[dst] = mask[src]
    return out


def composite(background: np.ndarray, layers: list[tuple[Sprite, tuple[int, int]]]) -> np.ndarray:
    """Paint ``(sprite, (x, y))`` layers over a copy of ``background`` (H, W, 3), back to front
    (the last layer is nearest). Returns (H, W, 3) uint8."""
    image = background.copy()
    for sprite, pos in layers:
        src, dst = _overlap(sprite.mask.shape, pos, image.shape[:2])
        if src is not None:
            m = sprite.mask[src]
            image[dst][m] = sprite.rgb[src][m]
    return image


def visible_masks(amodal: list[np.ndarray]) -> list[np.ndarray]:
    """Modal masks from amodal masks ordered nearest first: what no nearer object covers."""
    covered = np.zeros_like(amodal[0]) if amodal else None
    out = []
    for a in amodal:
        out.append(a & ~covered)
        covered = covered | a
    return out


def occluder_masks(
    amodal: list[np.ndarray], visible: list[np.ndarray], annotated: list[bool]
) -> list[np.ndarray]:
    """Per object (nearest first): union of the visible masks of the nearer annotated objects
    whose visible mask meets its amodal mask; all False for objects not annotated."""
    out = []
    for i, a in enumerate(amodal):
        occ = np.zeros_like(a)
        if annotated[i]:
            for j in range(i):
                if annotated[j] and (visible[j] & a).any():
                    occ |= visible[j]
        out.append(occ)
    return out


def draw_sprite(rng: np.random.Generator, cfg: SceneConfig, bank: CutoutBank | None) -> Sprite:
    """One object: a cutout of ``bank`` with probability ``cfg.cutout_prob`` (when given), else
    a textured shape of a kind drawn from ``cfg.shape_kinds``; longer side drawn in
    [min_size, max_size] x the image's shorter side."""
    short = min(cfg.image_size)
    size = max(6, int(round(rng.uniform(cfg.min_size, cfg.max_size) * short)))
    if bank is not None and rng.random() < cfg.cutout_prob:
        return bank.sprite(rng, size=size, jitter=cfg.jitter)
    kind = cfg.shape_kinds[int(rng.integers(len(cfg.shape_kinds)))]
    if cfg.shape_size_scale != 1.0:
        size = max(6, int(round(size * cfg.shape_size_scale)))
    return make_shape_sprite(rng, kind, size=size)


def draw_lookalike(
    rng: np.random.Generator, cfg: SceneConfig, bank: CutoutBank | None, like: Sprite
) -> Sprite:
    """An object of the same class as ``like`` that looks like it: another cutout of the same
    DAVIS sequence, or a shape of the same kind with ``like``'s texture; its own size."""
    short = min(cfg.image_size)
    size = max(6, int(round(rng.uniform(cfg.min_size, cfg.max_size) * short)))
    if bank is not None and like.origin:
        return bank.sprite(rng, size=size, jitter=cfg.jitter, origin=like.origin)
    if cfg.shape_size_scale != 1.0:
        size = max(6, int(round(size * cfg.shape_size_scale)))
    shape = make_shape_sprite(rng, like.name, size=size)
    h, w = shape.size
    rgb = cv2.resize(like.rgb, (w, h), interpolation=cv2.INTER_LINEAR)
    return Sprite(rgb=rgb, mask=shape.mask, name=shape.name, origin=like.origin)


def place_sprites(
    rng: np.random.Generator,
    sprites: list[Sprite],
    cfg: SceneConfig,
    *,
    anchors: list[int | None] | None = None,
) -> list[tuple[int, int]]:
    """Top-left corners, sprites inside the image. With probability ``occlusion`` a sprite is
    put near an already placed one (closer the higher ``occlusion``); otherwise the least
    covered of a few random spots is taken (more tries the lower ``occlusion``). A sprite with
    an ``anchors`` entry j (an earlier index) is always put near sprite j."""
    h, w = cfg.image_size
    cover = np.zeros((h, w), dtype=np.int32)
    centres: list[tuple[float, float, float]] = []
    tries = 1 + int(round(7 * (1.0 - cfg.occlusion)))
    out = []
    for k, s in enumerate(sprites):
        sh, sw = s.size
        anchor = anchors[k] if anchors is not None else None
        if anchor is not None:
            pos = _near(rng, centres[anchor], s, cfg)
        elif centres and rng.random() < cfg.occlusion:
            pos = _near(rng, centres[int(rng.integers(len(centres)))], s, cfg)
        else:
            cands = [
                _clamp(rng.uniform(0, w - sw), rng.uniform(0, h - sh), s, h, w)
                for _ in range(tries)
            ]
            overlaps = [int(cover[y : y + sh, x : x + sw][s.mask].sum()) for x, y in cands]
            pos = cands[int(np.argmin(overlaps))]
        cover[pos[1] : pos[1] + sh, pos[0] : pos[0] + sw] += s.mask
        centres.append((pos[0] + sw / 2, pos[1] + sh / 2, 0.5 * max(sh, sw)))
        out.append(pos)
    return out


# ---- helpers --------------------------------------------------------------------------------


def _root_info(root: Any) -> Any:
    if not root:
        return None
    return str(root) if isinstance(root, (str, Path)) else [str(r) for r in root]


class _AllOne(dict):
    """Category ids of a class-agnostic scene: every name maps to 1."""

    def __missing__(self, key: str) -> int:
        return 1


def _near(
    rng: np.random.Generator, centre: tuple[float, float, float], s: Sprite, cfg: SceneConfig
) -> tuple[int, int]:
    """Top-left corner putting ``s`` next to / onto the object at ``centre`` = (cx, cy, r):
    closer the higher ``cfg.occlusion``."""
    h, w = cfg.image_size
    sh, sw = s.size
    cx, cy, r = centre
    dist = (r + 0.5 * max(sh, sw)) * rng.uniform(0.1, 0.3 + 0.5 * (1.0 - cfg.occlusion))
    ang = rng.uniform(0.0, 2.0 * np.pi)
    x, y = cx + dist * np.cos(ang) - sw / 2, cy + dist * np.sin(ang) - sh / 2
    return _clamp(x, y, s, h, w)


def _clamp(x: float, y: float, s: Sprite, h: int, w: int) -> tuple[int, int]:
    sh, sw = s.size
    return int(np.clip(round(x), 0, max(0, w - sw))), int(np.clip(round(y), 0, max(0, h - sh)))


def _overlap(shape: tuple[int, ...], pos: tuple[int, int], size: tuple[int, ...]):
    """Slices (src in the sprite, dst in the image) of the visible part, or (None, None)."""
    sh, sw = shape[:2]
    x, y = pos
    x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + sw, size[1]), min(y + sh, size[0])
    if x0 >= x1 or y0 >= y1:
        return None, None
    src = (slice(y0 - y, y1 - y), slice(x0 - x, x1 - x))
    return src, (slice(y0, y1), slice(x0, x1))


def _rle_bbox(rle: dict[str, Any]) -> list[float]:
    r = {"size": rle["size"], "counts": rle["counts"].encode("ascii")}
    return [float(v) for v in mask_util.toBbox(r)]


def _write_image(path: Path, rgb: np.ndarray) -> None:
    ok, buf = cv2.imencode(path.suffix, np.ascontiguousarray(rgb[..., ::-1]))
    if not ok:
        raise OSError(f"{path}: could not encode image")
    path.write_bytes(buf.tobytes())
