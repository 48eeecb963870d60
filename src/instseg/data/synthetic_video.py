"""Synthetic occlusion videos: the scene generator's sprites moving over a still background,
with exact per-frame visible (modal) and amodal masks, identities and depth order, written as
YouTube-VIS style JSON with amodal fields.

Each object keeps one sprite and one depth for the whole clip and moves in a straight line:
objects start where :func:`~instseg.data.synthetic.place_sprites` puts them (so
``SceneConfig.occlusion`` sets how piled-up the first frame is), or, with probability
``enter_prob``, just outside a border heading in; they may leave the frame. Occlusions arise and
end as they pass each other. Default seeds: 0 for training, 1000 for held-out clips; clip ``v``
is drawn from ``numpy.random.default_rng([seed, v])``.

``VideoConfig.effects`` (:class:`~instseg.data.video_effects.VideoEffects`, all off by default)
adds what makes the past matter: per-frame corruption, short occlusion patches, appearance and
scale drift, camera motion. With any effect on, the JSON also records what was done (below), so
metrics can be reported on the corrupted frames alone
(:func:`instseg.evaluation.vis.evaluate_vis_frames`).

JSON layout (``file_names`` are relative to the output folder)::

    videos[]:      id, name, width, height, length, file_names ["videos/000001/00000.png", ...]
    annotations[]: one per object visible in some frame: id, video_id, category_id, iscrowd=0,
                   width, height, and per frame (null where the entry does not apply):
                   segmentations / bboxes / areas        visible mask (null below
                                                         min_visible_area pixels)
                   amodal_segmentations / amodal_bboxes / amodal_areas   full shape clipped to
                                                         the frame (null when out of the frame)
                   depth_orders   rank among the clip's listed objects that are in the
                                  frame, 0 = nearest (null when out of the frame)
    categories[]:  as in the scene generator (kind, split)

  with effects, also:
    videos[]:      corruptions       per frame "noise" / "dark" / "blur" or null
                   patched_frames    frames where an occlusion patch covers part of an object
                   corrupted_frames  sorted union of the two: the frames to report on
    annotations[]: patched           per frame: this object's occlusion patch is shown (over
                                     part of it; it may also cover a neighbour)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from instseg.data.synthetic import (
    SceneConfig,
    _rle_bbox,
    _write_image,
    composite,
    draw_sprite,
    paste_mask,
    place_sprites,
    scene_categories,
    visible_masks,
)
from instseg.data.synthetic_cutouts import CutoutBank
from instseg.data.synthetic_shapes import Sprite, make_background
from instseg.data.video_effects import (
    VideoEffects,
    camera_path,
    corrupt_frame,
    draw_corruptions,
    draw_patches,
    drift_sprite,
    effect_rngs,
    paint_patch,
    patch_mask,
)
from instseg.structures.masks import mask_to_rle
from instseg.utils.io import atomic_write_json

__all__ = [
    "VideoConfig",
    "VideoEffects",
    "SyntheticClip",
    "make_video",
    "render_video",
    "video_annotations",
    "video_effect_record",
    "generate_videos",
]


@dataclass
class VideoConfig:
    scene: SceneConfig = field(default_factory=SceneConfig)  # sizes, classes, first-frame layout
    num_frames: int = 16  # frames per clip
    max_speed: float = 0.03  # pixels per frame, as a fraction of the image's shorter side
    enter_prob: float = 0.25  # share of objects that start outside the frame and move in
    effects: VideoEffects = field(default_factory=VideoEffects)  # all off: plain clips

    def __post_init__(self) -> None:
        if self.num_frames < 1:
            raise ValueError(f"num_frames must be >= 1, got {self.num_frames}")
        if self.max_speed < 0 or not 0.0 <= self.enter_prob <= 1.0:
            raise ValueError(
                f"need max_speed >= 0 and enter_prob in [0, 1], got "
                f"{self.max_speed}, {self.enter_prob}"
            )


@dataclass
class _Track:
    sprite: Sprite
    start: np.ndarray  # (2,) float x, y of the sprite's top-left corner in frame 0
    velocity: np.ndarray  # (2,) float pixels per frame

    def position(self, t: int) -> tuple[int, int]:
        x, y = np.round(self.start + t * self.velocity)
        return int(x), int(y)


@dataclass
class SyntheticClip:
    """One drawn clip: ``frames`` T x (H, W, 3) uint8 RGB, ``objects`` (see
    :func:`make_video`), ``corruptions`` per frame the corruption kind or None."""

    frames: list[np.ndarray]
    objects: list[dict[str, Any]]
    corruptions: list[str | None]


def make_video(
    rng: np.random.Generator, cfg: VideoConfig, *, bank: CutoutBank | None = None
) -> tuple[list[np.ndarray], list[dict[str, Any]]]:
    """Draw one clip.

    Returns ``frames``: T x (H, W, 3) uint8 RGB, and one dict per object, nearest first (the
    depth is fixed for the clip): ``name``, ``category_id``, ``sprite``, ``positions`` (T x (x, y)
    top-left corners), ``amodal`` and ``visible`` (T x (H, W) bool each, all False while out of
    the frame), ``annotated`` (T bools: visible area >= ``min_visible_area``),
    ``frame_sprites`` (T sprites as drawn: ``sprite`` unless drift or camera zoom changed it)
    and ``patched`` (T bools: its occlusion patch is shown). :func:`render_video` also
    returns the per-frame corruptions.
    """
    clip = render_video(rng, cfg, bank=bank)
    return clip.frames, clip.objects


def render_video(
    rng: np.random.Generator, cfg: VideoConfig, *, bank: CutoutBank | None = None
) -> SyntheticClip:
    """:func:`make_video` with the per-frame corruption kinds."""
    sc = cfg.scene
    h, w = sc.image_size
    cat_ids = {c["name"]: c["id"] for c in scene_categories(sc, bank)}
    n = int(rng.integers(sc.min_objects, sc.max_objects + 1))
    sprites = [draw_sprite(rng, sc, bank) for _ in range(n)]
    starts = place_sprites(rng, sprites, sc)
    speed = cfg.max_speed * min(h, w)
    tracks = []
    for s, p in zip(sprites, starts, strict=True):
        start, vel = np.array(p, float), rng.uniform(-speed, speed, size=2)
        if rng.random() < cfg.enter_prob:
            start, vel = _entering(rng, s, start, speed, h, w)
        tracks.append(_Track(s, start, vel))
    tracks = [tracks[i] for i in rng.permutation(n)]  # nearest first

    background = None
    if bank is not None and rng.random() < sc.real_background_prob:
        background = bank.background(rng, h, w)
    if background is None:
        background = make_background(rng, h, w)
    num = cfg.num_frames
    if cfg.effects.active:
        r = _render_effects(effect_rngs(rng), cfg, tracks, background)
    else:
        r = _Rendered(num)
        for t in range(num):
            pos = [tr.position(t) for tr in tracks]
            layers = [(tr.sprite, p) for tr, p in zip(tracks, pos, strict=True)]
            r.frames.append(composite(background, layers[::-1]))
            r.amodal.append([paste_mask(s.mask, p, (h, w)) for s, p in layers])
            r.visible.append(visible_masks(r.amodal[-1]))
            r.layers.append(layers)
            r.patched.append([False] * n)
    objects = []
    for i, tr in enumerate(tracks):
        vis = [r.visible[t][i] for t in range(num)]
        objects.append(
            {
                "name": tr.sprite.name,
                "category_id": cat_ids[tr.sprite.name],
                "sprite": tr.sprite,
                "positions": [r.layers[t][i][1] for t in range(num)],
                "amodal": [r.amodal[t][i] for t in range(num)],
                "visible": vis,
                "annotated": [int(v.sum()) >= sc.min_visible_area for v in vis],
                "frame_sprites": [r.layers[t][i][0] for t in range(num)],
                "patched": [r.patched[t][i] for t in range(num)],
            }
        )
    return SyntheticClip(frames=r.frames, objects=objects, corruptions=r.corruptions)


@dataclass
class _Rendered:
    num_frames: int
    frames: list[np.ndarray] = field(default_factory=list)
    amodal: list[list[np.ndarray]] = field(default_factory=list)
    visible: list[list[np.ndarray]] = field(default_factory=list)
    layers: list[list[tuple[Sprite, tuple[int, int]]]] = field(default_factory=list)
    patched: list[list[bool]] = field(default_factory=list)
    corruptions: list[str | None] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.corruptions = self.corruptions or [None] * self.num_frames


def _render_effects(
    rngs: dict[str, np.random.Generator],
    cfg: VideoConfig,
    tracks: list[_Track],
    background: np.ndarray,
) -> _Rendered:
    """The frames with :class:`VideoEffects` (see :mod:`instseg.data.video_effects`)."""
    fx, num, n = cfg.effects, cfg.num_frames, len(tracks)
    h, w = cfg.scene.image_size
    r = _Rendered(num)
    if fx.corrupt_prob:
        r.corruptions = draw_corruptions(rngs["corrupt"], fx, num)
    patches = draw_patches(rngs["patch"], fx, n, num) if fx.patch_prob else []
    cams = (
        camera_path(rngs["camera"], fx, num, (h, w)) if fx.camera_speed or fx.camera_zoom else None
    )
    d = rngs["drift"]
    drift = [
        (d.uniform(-fx.scale_drift, fx.scale_drift),
         d.uniform(-fx.colour_drift, fx.colour_drift, size=3),
         d.uniform(-fx.brightness_drift, fx.brightness_drift) * 255.0)
        for _ in range(n)
    ]  # fmt: skip
    for t in range(num):
        frac = t / max(num - 1, 1)
        zoom = float(cams[t][0, 0]) if cams is not None else 1.0
        layers = []
        for tr, (ds, dg, db) in zip(tracks, drift, strict=True):
            scale = (1.0 + ds * frac) * zoom if fx.moves_geometry else 1.0
            spr = drift_sprite(tr.sprite, scale=scale, gain=1.0 + dg * frac, offset=db * frac)
            pos = tr.position(t)
            if fx.moves_geometry:
                sh, sw = tr.sprite.size
                centre = tr.start + t * tr.velocity + np.array([sw / 2.0, sh / 2.0])
                if cams is not None:
                    centre = cams[t] @ np.array([centre[0], centre[1], 1.0])
                nh, nw = spr.size
                pos = (int(round(centre[0] - nw / 2.0)), int(round(centre[1] - nh / 2.0)))
            layers.append((spr, pos))
        bg = background
        if cams is not None:
            bg = cv2.warpAffine(
                background, cams[t], (w, h), flags=cv2.INTER_LINEAR,
                borderMode=cv2.BORDER_REFLECT_101,
            )  # fmt: skip
        frame = composite(bg, layers[::-1])
        amodal = [paste_mask(s.mask, p, (h, w)) for s, p in layers]
        visible = visible_masks(amodal)
        patched = [False] * n
        for p in patches:
            if not p.covers(t) or not amodal[p.obj].any():
                continue
            (sh, sw), (x, y) = layers[p.obj][0].size, layers[p.obj][1]
            pm = patch_mask(p, (x, y, x + sw, y + sh), (h, w))
            if not (pm & visible[p.obj]).any():
                continue  # the object is hidden where the patch would go: no patch
            paint_patch(frame, p, pm)
            patched[p.obj] = True
            if fx.patch_in_gt:
                visible = [v & ~pm for v in visible]
        kind = r.corruptions[t]
        if kind is not None:
            frame = corrupt_frame(frame, kind, rngs["corrupt"], fx)
        r.frames.append(frame)
        r.amodal.append(amodal)
        r.visible.append(visible)
        r.layers.append(layers)
        r.patched.append(patched)
    return r


def video_effect_record(clip: SyntheticClip) -> dict[str, Any]:
    """The ``videos[]`` entries of a clip drawn with effects (see the module docstring)."""
    patched = [t for t in range(len(clip.frames)) if any(o["patched"][t] for o in clip.objects)]
    corrupted = [t for t, c in enumerate(clip.corruptions) if c is not None]
    return {
        "corruptions": list(clip.corruptions),
        "patched_frames": patched,
        "corrupted_frames": sorted(set(patched) | set(corrupted)),
    }


def video_annotations(
    objects: list[dict[str, Any]], *, video_id: int, first_id: int, patched: bool = False
) -> list[dict[str, Any]]:
    """YouTube-VIS annotation dicts (layout in the module docstring) for the objects of
    :func:`make_video` that are annotated in at least one frame; ``patched``: add the per-frame
    ``patched`` flags (clips drawn with effects)."""
    kept = [o for o in objects if any(o["annotated"])]
    if not kept:
        return []
    h, w = kept[0]["amodal"][0].shape
    num_frames = len(kept[0]["amodal"])
    in_frame = [[bool(a.any()) for a in o["amodal"]] for o in kept]
    anns = []
    for k, o in enumerate(kept):
        ann: dict[str, Any] = {
            "id": first_id + k,
            "video_id": video_id,
            "category_id": o["category_id"],
            "iscrowd": 0,
            "width": w,
            "height": h,
        }
        vis = [
            _record(m) if ok else None for m, ok in zip(o["visible"], o["annotated"], strict=True)
        ]
        amo = [_record(m) if ok else None for m, ok in zip(o["amodal"], in_frame[k], strict=True)]
        for key, recs in (("", vis), ("amodal_", amo)):
            ann[key + "segmentations"] = [r and r[0] for r in recs]
            ann[key + "bboxes"] = [r and r[1] for r in recs]
            ann[key + "areas"] = [r and r[2] for r in recs]
        ann["depth_orders"] = [
            sum(in_frame[j][t] for j in range(k)) if in_frame[k][t] else None
            for t in range(num_frames)
        ]
        if patched:
            ann["patched"] = [bool(x) for x in o["patched"]]
        anns.append(ann)
    return anns


def generate_videos(
    out_dir: str | Path,
    *,
    num_videos: int,
    num_frames: int | None = None,
    seed: int,
    image_size: tuple[int, int] | None = None,
    cutout_root: str | Path | None = None,
    cutout_exclude: Sequence[str] = (),
    config: VideoConfig | None = None,
) -> Path:
    """Write ``out_dir/videos/<NNNNNN>/<TTTTT>.png`` and ``out_dir/annotations.json`` (written
    last, atomically). ``config`` (default :class:`VideoConfig`) gives every setting; keyword
    arguments that are not None override it. Returns the JSON's path. Same arguments -> same
    bytes."""
    if num_videos < 0 or seed < 0:
        raise ValueError(f"num_videos and seed must be >= 0, got {num_videos}, {seed}")
    cfg = config or VideoConfig()
    if image_size is not None:
        cfg = dataclasses.replace(cfg, scene=dataclasses.replace(cfg.scene, image_size=image_size))
    if num_frames is not None:
        cfg = dataclasses.replace(cfg, num_frames=num_frames)
    bank = CutoutBank.load(cutout_root, exclude=cutout_exclude) if cutout_root is not None else None
    out_dir = Path(out_dir)
    h, w = cfg.scene.image_size
    videos, annotations = [], []
    for v in range(num_videos):
        clip = render_video(np.random.default_rng([seed, v]), cfg, bank=bank)
        frames, objects = clip.frames, clip.objects
        name = f"{v + 1:06d}"
        (out_dir / "videos" / name).mkdir(parents=True, exist_ok=True)
        file_names = [f"videos/{name}/{t:05d}.{cfg.scene.image_format}" for t in range(len(frames))]
        for fn, frame in zip(file_names, frames, strict=True):
            _write_image(out_dir / fn, frame)
        videos.append(
            {
                "id": v + 1,
                "name": name,
                "width": w,
                "height": h,
                "length": len(frames),
                "file_names": file_names,
                **(video_effect_record(clip) if cfg.effects.active else {}),
            }
        )
        annotations += video_annotations(
            objects, video_id=v + 1, first_id=len(annotations) + 1, patched=cfg.effects.active
        )
    info = {
        "description": "instseg synthetic occlusion videos",
        "seed": seed,
        "num_videos": num_videos,
        "cutout_root": str(cutout_root) if cutout_root else None,
        "cutout_exclude": sorted(cutout_exclude),
        "config": _config_record(cfg),
    }
    data = {
        "info": info,
        "videos": videos,
        "annotations": annotations,
        "categories": scene_categories(cfg.scene, bank),
    }
    return atomic_write_json(out_dir / "annotations.json", data)


def _entering(
    rng: np.random.Generator, s: Sprite, start: np.ndarray, speed: float, h: int, w: int
) -> tuple[np.ndarray, np.ndarray]:
    """Start just outside a random border, moving inwards at 50-100% of ``speed``."""
    sh, sw = s.size
    side = int(rng.integers(4))
    v_in = rng.uniform(0.5, 1.0) * max(speed, 1.0)
    vel = np.array([rng.uniform(-0.3, 0.3) * v_in, rng.uniform(-0.3, 0.3) * v_in])
    x, y = start
    if side == 0:
        x, vel[0] = -sw, v_in
    elif side == 1:
        x, vel[0] = w, -v_in
    elif side == 2:
        y, vel[1] = -sh, v_in
    else:
        y, vel[1] = h, -v_in
    return np.array([x, y], float), vel


def _record(mask: np.ndarray) -> tuple[dict[str, Any], list[float], int]:
    rle = mask_to_rle(mask)
    return rle, _rle_bbox(rle), int(mask.sum())


def _config_record(cfg: VideoConfig) -> dict[str, Any]:
    """``dataclasses.asdict(cfg)``, without ``effects`` when none is on (as files written
    before effects existed)."""
    out = dataclasses.asdict(cfg)
    if not cfg.effects.active:
        out.pop("effects")
    else:
        out["effects"]["corruptions"] = list(cfg.effects.corruptions)
    return out
