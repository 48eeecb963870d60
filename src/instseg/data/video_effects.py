"""Effects that make the past matter in synthetic videos (issue 15, deliverable 4).

Without them a synthetic clip (still background, rigid sprites of constant appearance on
straight lines) shows in every frame all that earlier frames showed, so nothing can teach a
video model to read its memory. :class:`VideoEffects` (all off by default: the clips stay
byte-identical) adds:

- **corruption** of a seeded random subset of frames: gaussian ``noise``, ``dark`` (the frame
  multiplied by 0.15-0.4) or ``blur`` (gaussian, sigma 2-4 px); the whole frame, after
  everything else is painted. Ground truth is unchanged (the objects are where they were).
- **occlusion patches**: a grey or textured rectangle / ellipse over part of one object
  (30-60% of its box each way) for 1 to ``patch_max_frames`` consecutive frames, painted above
  every object (skipped in a frame where none of the object shows under it). By default the
  ground truth is unchanged (the patch is a corruption of the picture; the object's extent is
  known from the frames around it); ``patch_in_gt`` cuts the patch out of the visible masks.
- **appearance drift**: each object's colour gains (per channel) and brightness change linearly
  from the first frame to the last, by up to ``colour_drift`` / ``brightness_drift``.
- **scale drift**: each object's size changes linearly by a factor in
  ``[1 - scale_drift, 1 + scale_drift]`` over the clip (about its centre).
- **camera motion**: a global pan (up to ``camera_speed`` x the shorter side per frame) and zoom
  (by up to ``camera_zoom`` over the clip, about the image centre) of background and objects;
  objects are redrawn at the zoomed size and moved position, so masks and pixels agree exactly.

Random draws: :func:`effect_rngs` derives one generator per effect from a single draw of the
clip's generator, made after every other draw, so a clip's layout, sprites and background do
not depend on the effects, and switching one effect on does not change the draws of another.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from instseg.data.synthetic_shapes import Sprite, make_texture

__all__ = [
    "CORRUPTIONS",
    "VideoEffects",
    "Patch",
    "effect_rngs",
    "draw_corruptions",
    "corrupt_frame",
    "draw_patches",
    "patch_mask",
    "paint_patch",
    "camera_path",
    "drift_sprite",
]

CORRUPTIONS = ("noise", "dark", "blur")


@dataclass
class VideoEffects:
    corrupt_prob: float = 0.0  # share of frames (after the first) hit by one corruption
    corruptions: tuple[str, ...] = CORRUPTIONS  # kinds drawn from (uniformly)
    noise_std: float = 40.0  # gaussian noise std on 0..255
    patch_prob: float = 0.0  # chance per object and clip of one occlusion patch
    patch_max_frames: int = 3  # a patch lasts 1..this many consecutive frames
    patch_in_gt: bool = False  # cut patches out of the visible masks (default: GT unchanged)
    colour_drift: float = 0.0  # max per-channel gain change over the clip (0.3: x0.7..x1.3)
    brightness_drift: float = 0.0  # max brightness offset over the clip, fraction of 255
    scale_drift: float = 0.0  # max relative size change over the clip
    camera_speed: float = 0.0  # max pan per frame, fraction of the shorter side
    camera_zoom: float = 0.0  # max relative zoom change over the clip

    def __post_init__(self) -> None:
        self.corruptions = tuple(self.corruptions)
        unknown = [c for c in self.corruptions if c not in CORRUPTIONS]
        if unknown or not self.corruptions:
            raise ValueError(f"corruptions must be a non-empty subset of {CORRUPTIONS}")
        for name in ("corrupt_prob", "patch_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.patch_max_frames < 1:
            raise ValueError(f"patch_max_frames must be >= 1, got {self.patch_max_frames}")
        for name in ("noise_std", "colour_drift", "brightness_drift", "camera_speed"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not 0.0 <= self.scale_drift < 1.0 or not 0.0 <= self.camera_zoom < 1.0:
            raise ValueError("scale_drift and camera_zoom must be in [0, 1)")

    @property
    def active(self) -> bool:
        """Whether any effect is on (off: the clip is drawn exactly as without effects)."""
        return any(
            (self.corrupt_prob, self.patch_prob, self.colour_drift, self.brightness_drift,
             self.scale_drift, self.camera_speed, self.camera_zoom)
        )  # fmt: skip

    @property
    def moves_geometry(self) -> bool:
        """Whether sprites are redrawn per frame (scale drift or camera motion)."""
        return bool(self.scale_drift or self.camera_speed or self.camera_zoom)


@dataclass(frozen=True)
class Patch:
    """An occlusion patch over object ``obj`` in frames ``start .. start + length - 1``:
    ``box`` (x0, y0, x1, y1) relative to the object's box (fractions), ``ellipse`` or a
    rectangle, ``rgb`` (h, w, 3) uint8 texture (a grey level when uniform)."""

    obj: int
    start: int
    length: int
    box: tuple[float, float, float, float]
    ellipse: bool
    rgb_seed: int
    grey: int | None

    def covers(self, t: int) -> bool:
        return self.start <= t < self.start + self.length


def effect_rngs(rng: np.random.Generator) -> dict[str, np.random.Generator]:
    """One generator per effect (``corrupt``, ``patch``, ``drift``, ``camera``) from one draw
    of ``rng``."""
    seed = int(rng.integers(2**62))
    names = ("corrupt", "patch", "drift", "camera")
    return {n: np.random.default_rng([seed, i]) for i, n in enumerate(names)}


def draw_corruptions(
    rng: np.random.Generator, fx: VideoEffects, num_frames: int
) -> list[str | None]:
    """Per frame: the corruption kind or None. Frame 0 stays clean (a track starts from it)."""
    out: list[str | None] = [None] * num_frames
    for t in range(1, num_frames):
        hit = rng.random() < fx.corrupt_prob
        kind = fx.corruptions[int(rng.integers(len(fx.corruptions)))]
        out[t] = kind if hit else None
    return out


def corrupt_frame(frame: np.ndarray, kind: str, rng: np.random.Generator, fx: VideoEffects):
    """(H, W, 3) uint8 -> the corrupted (H, W, 3) uint8 frame."""
    x = frame.astype(np.float32)
    if kind == "noise":
        x = x + rng.normal(0.0, fx.noise_std, size=x.shape).astype(np.float32)
    elif kind == "dark":
        x = x * float(rng.uniform(0.15, 0.4))
    elif kind == "blur":
        x = cv2.GaussianBlur(x, (0, 0), sigmaX=float(rng.uniform(2.0, 4.0)))
    else:
        raise ValueError(f"unknown corruption '{kind}'")
    return np.clip(x + 0.5, 0, 255).astype(np.uint8)


def draw_patches(
    rng: np.random.Generator, fx: VideoEffects, num_objects: int, num_frames: int
) -> list[Patch]:
    """At most one patch per object, starting after frame 0 (so the object is first seen
    whole), lasting 1..``patch_max_frames`` frames (cut at the clip's end)."""
    out = []
    for i in range(num_objects):
        hit = rng.random() < fx.patch_prob
        start = int(rng.integers(1, max(num_frames, 2)))
        length = int(rng.integers(1, fx.patch_max_frames + 1))
        fw, fh = rng.uniform(0.3, 0.6, size=2)
        fx0, fy0 = rng.uniform(0.0, 1.0 - fw), rng.uniform(0.0, 1.0 - fh)
        ellipse = bool(rng.random() < 0.5)
        grey = int(rng.integers(40, 216)) if rng.random() < 0.5 else None
        rgb_seed = int(rng.integers(2**31))
        if hit and start < num_frames:
            length = min(length, num_frames - start)
            box = (float(fx0), float(fy0), float(fx0 + fw), float(fy0 + fh))
            out.append(Patch(i, start, length, box, ellipse, rgb_seed, grey))
    return out


def patch_mask(patch: Patch, obj_box: tuple[int, int, int, int], size: tuple[int, int]):
    """The patch's (H, W) bool mask over an object whose amodal box is ``obj_box``
    (x0, y0, x1, y1 exclusive) in an image of ``size`` (H, W); never outside that box."""
    h, w = size
    x0, y0, x1, y1 = obj_box
    bw, bh = x1 - x0, y1 - y0
    px0, py0 = x0 + patch.box[0] * bw, y0 + patch.box[1] * bh
    px1, py1 = x0 + patch.box[2] * bw, y0 + patch.box[3] * bh
    out = np.zeros((h, w), np.uint8)
    if patch.ellipse:
        centre = (round((px0 + px1) / 2), round((py0 + py1) / 2))
        axes = (max(1, round((px1 - px0) / 2)), max(1, round((py1 - py0) / 2)))
        cv2.ellipse(out, centre, axes, 0.0, 0.0, 360.0, 1, thickness=-1)
    else:
        c0, r0 = max(0, round(px0)), max(0, round(py0))
        out[r0 : max(r0 + 1, round(py1)), c0 : max(c0 + 1, round(px1))] = 1
    inside = np.zeros((h, w), bool)
    inside[max(0, y0) : max(0, y1), max(0, x0) : max(0, x1)] = True
    return out.astype(bool) & inside


def paint_patch(frame: np.ndarray, patch: Patch, mask: np.ndarray) -> None:
    """Paint the patch (grey, or its seeded texture) where ``mask`` (H, W) is True, in place."""
    if patch.grey is not None:
        frame[mask] = patch.grey
        return
    h, w = frame.shape[:2]
    tex = make_texture(np.random.default_rng(patch.rgb_seed), h, w)
    frame[mask] = tex[mask]


def camera_path(
    rng: np.random.Generator, fx: VideoEffects, num_frames: int, size: tuple[int, int]
) -> list[np.ndarray]:
    """Per frame a (2, 3) affine map from scene to image coordinates: zoom ``z_t`` about the
    image centre, then a pan ``d_t``; both linear in t (frame 0: identity)."""
    h, w = size
    speed = fx.camera_speed * min(h, w)
    vel = rng.uniform(-speed, speed, size=2)
    total_zoom = float(rng.uniform(-fx.camera_zoom, fx.camera_zoom))
    centre = np.array([w / 2.0, h / 2.0])
    out = []
    for t in range(num_frames):
        frac = t / max(num_frames - 1, 1)
        z = 1.0 + total_zoom * frac
        shift = centre - z * centre + t * vel
        out.append(np.array([[z, 0.0, shift[0]], [0.0, z, shift[1]]]))
    return out


def drift_sprite(sprite: Sprite, *, scale: float, gain: np.ndarray, offset: float) -> Sprite:
    """``sprite`` resized by ``scale`` (colours bilinear, mask nearest; at least 1 px) with its
    colours ``rgb * gain + offset`` (gain (3,), offset on 0..255). Identity settings return
    ``sprite`` itself."""
    rgb, mask = sprite.rgb, sprite.mask
    if scale != 1.0:
        sh, sw = sprite.size
        nh, nw = max(1, round(sh * scale)), max(1, round(sw * scale))
        rgb = cv2.resize(rgb, (nw, nh), interpolation=cv2.INTER_LINEAR)
        mask = cv2.resize(mask.astype(np.uint8), (nw, nh), interpolation=cv2.INTER_NEAREST) > 0
    if np.any(gain != 1.0) or offset != 0.0:
        rgb = np.clip(rgb.astype(np.float32) * gain + offset + 0.5, 0, 255).astype(np.uint8)
    if rgb is sprite.rgb and mask is sprite.mask:
        return sprite
    return Sprite(rgb=rgb, mask=mask, name=sprite.name, origin=sprite.origin)
