"""Procedural sprites for the synthetic generators: shape masks, textures and backgrounds.

A :class:`Sprite` is an object's appearance in its own frame (an RGB patch and a binary mask of
the same size). The scene generator (``synthetic.py``) pastes sprites into an image; a video
generator can move the same sprite from frame to frame, which keeps the object's identity and
its exact amodal mask.

Everything is drawn with numpy / OpenCV from a ``numpy.random.Generator``, so a seed fixes the
output bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

__all__ = [
    "SHAPE_KINDS",
    "TEXTURE_KINDS",
    "Sprite",
    "shape_polygons",
    "make_shape_sprite",
    "make_texture",
    "make_background",
]

# The shape classes, in category-id order (category id = index + 1 in the default config).
SHAPE_KINDS: tuple[str, ...] = (
    "circle",
    "ellipse",
    "rectangle",
    "ring",
    "triangle",
    "star",
    "cross",
    "hexagon",
)
TEXTURE_KINDS: tuple[str, ...] = ("solid", "stripes", "checker", "noise", "linear", "radial")

_SUBPIXEL_BITS = 4  # cv2.fillPoly fixed-point precision


@dataclass
class Sprite:
    """One object's appearance in its own frame.

    - ``rgb``: (h, w, 3) uint8 colours (only pixels under ``mask`` are ever painted)
    - ``mask``: (h, w) bool, the object's full (amodal) shape; it touches all four borders
    - ``name``: category name (a shape kind, or a cutout's class)
    - ``origin``: where it came from (a cutout's DAVIS sequence; "" for shapes), so a look-alike
      can be drawn from the same source
    """

    rgb: np.ndarray
    mask: np.ndarray
    name: str
    origin: str = ""

    @property
    def size(self) -> tuple[int, int]:
        """(h, w) of the patch."""
        return int(self.mask.shape[0]), int(self.mask.shape[1])


def shape_polygons(kind: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray | None]:
    """Unit-scale outline of a shape kind, before rotation and scaling.

    Returns ``(outer, hole)``: (K, 2) float arrays of (x, y) points around the origin, roughly
    within [-1, 1]; ``hole`` is None except for the ring. Aspect ratios, star points, arm widths
    and ring thickness are drawn from ``rng``.
    """

    def t(n: int) -> np.ndarray:
        return np.linspace(0.0, 2.0 * np.pi, n, endpoint=False)

    def circle(n: int) -> np.ndarray:
        return np.stack([np.cos(t(n)), np.sin(t(n))], axis=1)

    if kind == "circle":
        return circle(64), None
    if kind == "ellipse":
        return circle(64) * [1.0, rng.uniform(0.35, 0.7)], None
    if kind == "rectangle":
        a = rng.uniform(0.3, 1.0)
        return np.array([[-1, -a], [1, -a], [1, a], [-1, a]], dtype=np.float64), None
    if kind == "ring":
        return circle(64), circle(64) * rng.uniform(0.4, 0.65)
    if kind == "triangle":
        apex = rng.uniform(-0.6, 0.6)
        return np.array([[-1.0, 0.8], [1.0, 0.8], [apex, -1.0]]), None
    if kind == "star":
        n = int(rng.integers(5, 8))
        radius = np.where(np.arange(2 * n) % 2 == 0, 1.0, rng.uniform(0.38, 0.55))
        ang = t(2 * n)
        return np.stack([radius * np.cos(ang), radius * np.sin(ang)], axis=1), None
    if kind == "cross":
        a = rng.uniform(0.22, 0.4)  # half arm width
        pts = [
            (a, -1),
            (a, -a),
            (1, -a),
            (1, a),
            (a, a),
            (a, 1),
            (-a, 1),
            (-a, a),
            (-1, a),
            (-1, -a),
            (-a, -a),
            (-a, -1),
        ]
        return np.array(pts, dtype=np.float64), None
    if kind == "hexagon":
        return circle(6), None
    raise ValueError(f"unknown shape kind '{kind}' (choose from {', '.join(SHAPE_KINDS)})")


def make_shape_sprite(
    rng: np.random.Generator, kind: str, *, size: int, min_side: int = 6
) -> Sprite:
    """Draw one textured shape whose bounding box has its longer side equal to ``size`` pixels.

    The outline gets a random rotation and a random stretch (kinds other than the circle and the
    ring) before it is rasterised with sub-pixel precision.
    """
    outer, hole = shape_polygons(kind, rng)
    theta = rng.uniform(0.0, 2.0 * np.pi)
    stretch = 1.0 if kind in ("circle", "ring") else rng.uniform(0.75, 1.0)
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    lin = rot @ np.diag([1.0, stretch])
    outer = outer @ lin.T
    lo, hi = outer.min(axis=0), outer.max(axis=0)
    scale = (size - 1) / float((hi - lo).max())
    offset = -lo * scale
    w = max(min_side, int(np.ceil((hi[0] - lo[0]) * scale)) + 1)
    h = max(min_side, int(np.ceil((hi[1] - lo[1]) * scale)) + 1)
    mask = np.zeros((h, w), dtype=np.uint8)
    _fill(mask, outer * scale + offset, 1)
    if hole is not None:
        _fill(mask, (hole @ lin.T) * scale + offset, 0)
    mask = _crop_to_mask(mask.astype(bool))
    rgb = make_texture(rng, *mask.shape)
    return Sprite(rgb=rgb, mask=mask, name=kind)


def make_texture(rng: np.random.Generator, h: int, w: int, kind: str | None = None) -> np.ndarray:
    """A random (h, w, 3) uint8 texture: solid colour, stripes, checker, smooth noise, linear or
    radial gradient (``kind`` picks one; None draws it), plus mild pixel noise."""
    kind = kind or TEXTURE_KINDS[int(rng.integers(len(TEXTURE_KINDS)))]
    c1, c2 = _two_colours(rng)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    if kind == "solid":
        t = np.zeros((h, w), np.float32)
    elif kind in ("stripes", "checker"):
        a = rng.uniform(0.0, np.pi)
        period = rng.uniform(4.0, 14.0)
        u = (xx * np.cos(a) + yy * np.sin(a)) / period
        v = (-xx * np.sin(a) + yy * np.cos(a)) / period
        t = (np.floor(u) % 2) if kind == "stripes" else ((np.floor(u) + np.floor(v)) % 2)
    elif kind == "noise":
        cell = float(rng.uniform(4.0, 16.0))
        low = rng.random((int(h / cell) + 2, int(w / cell) + 2)).astype(np.float32)
        t = cv2.resize(low, (w, h), interpolation=cv2.INTER_CUBIC)
    elif kind == "linear":
        a = rng.uniform(0.0, 2.0 * np.pi)
        u = xx * np.cos(a) + yy * np.sin(a)
        t = (u - u.min()) / max(float(u.max() - u.min()), 1.0)
    elif kind == "radial":
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        d = np.sqrt((xx - cx) ** 2 + (yy - cy) ** 2)
        t = d / max(float(d.max()), 1.0)
    else:
        raise ValueError(f"unknown texture kind '{kind}' (choose from {', '.join(TEXTURE_KINDS)})")
    t = np.clip(t, 0.0, 1.0)[..., None]
    img = c1 * (1.0 - t) + c2 * t
    img += rng.normal(0.0, rng.uniform(0.0, 8.0), size=(h, w, 1)).astype(np.float32)
    return np.clip(img + 0.5, 0, 255).astype(np.uint8)


def make_background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A low-contrast procedural (h, w, 3) uint8 background, so objects stand out from it."""
    tex = make_texture(rng, h, w).astype(np.float32)
    mean = tex.reshape(-1, 3).mean(axis=0)
    keep = rng.uniform(0.2, 0.6)
    out = mean + (tex - mean) * keep
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def _two_colours(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Two random RGB colours (float32) that differ by at least 60 in some channel."""
    c1 = rng.integers(0, 256, 3)
    c2 = rng.integers(0, 256, 3)
    if np.abs(c1 - c2).max() < 60:
        c2 = 255 - c1
    return c1.astype(np.float32), c2.astype(np.float32)


def _fill(mask: np.ndarray, pts: np.ndarray, value: int) -> None:
    fixed = np.round(pts * (1 << _SUBPIXEL_BITS)).astype(np.int32).reshape(-1, 1, 2)
    cv2.fillPoly(mask, [fixed], value, lineType=cv2.LINE_8, shift=_SUBPIXEL_BITS)


def _crop_to_mask(mask: np.ndarray) -> np.ndarray:
    ys = np.flatnonzero(mask.any(axis=1))
    xs = np.flatnonzero(mask.any(axis=0))
    return mask[ys[0] : ys[-1] + 1, xs[0] : xs[-1] + 1]
