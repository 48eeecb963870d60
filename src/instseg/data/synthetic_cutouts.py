"""Real object cutouts and backgrounds from a DAVIS-style folder, for the synthetic generators.

Layout read (``480p`` is optional)::

    ROOT/JPEGImages/480p/<sequence>/<frame>.jpg
    ROOT/Annotations/480p/<sequence>/<frame>.png   (non-zero = the object)

A few evenly spaced frames per sequence are loaded. A cutout is the frame cropped to its mask's
bounding box (RGB + mask); it is named after the sequence's kind for the known DAVIS sequences
(``boat`` -> ``vehicle``), else after the sequence. A background is a random crop of a loaded
frame that stays clear of the annotated object's box; sequences known to hold unannotated
look-alikes (``flamingo``, ``dance-jump``) give no backgrounds, other sequences may still show
unannotated things. Nothing is copied anywhere.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from instseg.data.synthetic_shapes import Sprite

__all__ = ["DAVIS_KINDS", "CutoutBank", "find_default_cutout_root"]

# Class of the object in the DAVIS sequences we know; other sequences are named after themselves.
DAVIS_KINDS: dict[str, str] = {
    "boat": "vehicle",
    "bus": "vehicle",
    "car-roundabout": "vehicle",
    "car-shadow": "vehicle",
    "breakdance-flare": "person",
    "dance-jump": "person",
    "rollerblade": "person",
    "elephant": "animal",
    "flamingo": "animal",
    "mallard-fly": "animal",
    "mallard-water": "animal",
    "soccerball": "ball",
}
# Sequences with unannotated look-alikes (a second flamingo, bystanders): no backgrounds from them.
_NO_BACKGROUND = frozenset({"flamingo", "dance-jump"})
_DEFAULT_SUBDIR = Path("data") / "davis2016-train-subset"


def find_default_cutout_root() -> Path | None:
    """The shared DAVIS subset beside the repository (``<repo>/../shared/data/...``) or at
    ``/work/shared/data/...``, if it exists; else None."""
    repo = Path(__file__).resolve().parents[3]
    for base in (repo.parent / "shared", Path("/work/shared")):
        if (base / _DEFAULT_SUBDIR / "JPEGImages").is_dir():
            return base / _DEFAULT_SUBDIR
    return None


@dataclass
class _Frame:
    rgb: np.ndarray  # (H, W, 3) uint8
    box: tuple[int, int, int, int]  # object box x0, y0, x1, y1 (exclusive)


class CutoutBank:
    """Cutout sprites (``rgb`` + ``mask`` cropped to the object) and background frames."""

    def __init__(self, *, cutouts: list[Sprite], frames: list[np.ndarray], boxes: list) -> None:
        if not cutouts:
            raise ValueError("CutoutBank needs at least one cutout")
        self.cutouts = cutouts
        self.frames = [_Frame(f, tuple(b)) for f, b in zip(frames, boxes, strict=True)]
        self.names: tuple[str, ...] = tuple(sorted({c.name for c in cutouts}))
        self._by_name = {n: [c for c in cutouts if c.name == n] for n in self.names}

    @classmethod
    def load(
        cls,
        root: str | Path,
        *,
        frames_per_sequence: int = 8,
        max_side: int = 512,
        min_object_side: int = 16,
        exclude: Sequence[str] = (),
    ) -> CutoutBank:
        """Read ``frames_per_sequence`` evenly spaced frames of each sequence under ``root``
        (except the sequences named in ``exclude``, e.g. ones kept out for evaluation),
        downscaled so the longer side is at most ``max_side``. Unreadable frames are skipped
        with one warning; a folder without any usable frame raises ``FileNotFoundError``."""
        root = Path(root)
        img_dir, ann_dir = _layout(root)
        excluded = frozenset(exclude)
        cutouts: list[Sprite] = []
        frames: list[np.ndarray] = []
        boxes: list[tuple[int, int, int, int]] = []
        skipped: list[str] = []
        for seq in sorted(p.name for p in ann_dir.iterdir() if p.is_dir()):
            if seq in excluded:
                continue
            pngs = sorted((ann_dir / seq).glob("*.png"))
            if not pngs:
                continue
            idx = np.unique(np.linspace(0, len(pngs) - 1, frames_per_sequence).round().astype(int))
            for png in (pngs[i] for i in idx):
                loaded = _read_pair(img_dir / seq / (png.stem + ".jpg"), png, max_side)
                if loaded is None:
                    skipped.append(f"{seq}/{png.stem}")
                    continue
                rgb, mask = loaded
                x0, y0, x1, y1 = _box(mask)
                if min(x1 - x0, y1 - y0) < min_object_side:
                    continue
                name = DAVIS_KINDS.get(seq, seq)
                cutouts.append(
                    Sprite(rgb=rgb[y0:y1, x0:x1].copy(), mask=mask[y0:y1, x0:x1], name=name)
                )
                if seq not in _NO_BACKGROUND:
                    frames.append(rgb)
                    boxes.append((x0, y0, x1, y1))
        if skipped:
            warnings.warn(
                f"{root}: skipped {len(skipped)} unreadable frame(s) (first: {skipped[0]})",
                stacklevel=2,
            )
        if not cutouts:
            raise FileNotFoundError(f"{root}: no usable frame+mask pairs under {ann_dir}")
        return cls(cutouts=cutouts, frames=frames, boxes=boxes)

    def sprite(self, rng: np.random.Generator, *, size: int, name: str | None = None) -> Sprite:
        """A random cutout (of class ``name`` if given) scaled so its longer side is ``size``,
        flipped left-right half of the time."""
        name = name or self.names[int(rng.integers(len(self.names)))]
        pool = self._by_name[name]
        src = pool[int(rng.integers(len(pool)))]
        h, w = src.size
        s = size / max(h, w)
        nw, nh = max(1, round(w * s)), max(1, round(h * s))
        rgb = cv2.resize(src.rgb, (nw, nh), interpolation=cv2.INTER_AREA)
        mask = cv2.resize(src.mask.astype(np.uint8), (nw, nh), interpolation=cv2.INTER_NEAREST)
        if rng.random() < 0.5:
            rgb, mask = rgb[:, ::-1], mask[:, ::-1]
        mask = mask.astype(bool)
        if not mask.any():  # a very thin object vanished when shrunk: keep its box instead
            mask = np.ones_like(mask)
        x0, y0, x1, y1 = _box(mask)
        return Sprite(
            rgb=np.ascontiguousarray(rgb[y0:y1, x0:x1]),
            mask=np.ascontiguousarray(mask[y0:y1, x0:x1]),
            name=name,
        )

    def background(self, rng: np.random.Generator, h: int, w: int) -> np.ndarray | None:
        """A (h, w, 3) uint8 crop of a random frame beside its object's box, or None when the
        drawn frame has no free strip at least a quarter of its short side wide."""
        if not self.frames:
            return None
        fr = self.frames[int(rng.integers(len(self.frames)))]
        fh, fw = fr.rgb.shape[:2]
        x0, y0, x1, y1 = fr.box
        strips = [(0, 0, x0, fh), (x1, 0, fw, fh), (0, 0, fw, y0), (0, y1, fw, fh)]
        min_side = min(fh, fw) // 4
        strips = [s for s in strips if min(s[2] - s[0], s[3] - s[1]) >= min_side]
        if not strips:
            return None
        sx0, sy0, sx1, sy1 = strips[int(rng.integers(len(strips)))]
        sw, sh = sx1 - sx0, sy1 - sy0
        scale = rng.uniform(0.6, 1.0) * min(sw / w, sh / h)  # crop has the output's aspect
        cw, ch = max(1, int(w * scale)), max(1, int(h * scale))
        cx = sx0 + int(rng.integers(0, sw - cw + 1))
        cy = sy0 + int(rng.integers(0, sh - ch + 1))
        crop = fr.rgb[cy : cy + ch, cx : cx + cw]
        return cv2.resize(crop, (w, h), interpolation=cv2.INTER_LINEAR)


def _layout(root: Path) -> tuple[Path, Path]:
    for sub in ("480p", ""):
        img_dir, ann_dir = root / "JPEGImages" / sub, root / "Annotations" / sub
        if ann_dir.is_dir() and img_dir.is_dir() and any(p.is_dir() for p in ann_dir.iterdir()):
            return img_dir, ann_dir
    raise FileNotFoundError(
        f"{root}: not a DAVIS-style folder (need JPEGImages[/480p]/<seq>/*.jpg and "
        "Annotations[/480p]/<seq>/*.png)"
    )


def _read_pair(jpg: Path, png: Path, max_side: int) -> tuple[np.ndarray, np.ndarray] | None:
    bgr = cv2.imread(str(jpg), cv2.IMREAD_COLOR)
    ann = cv2.imread(str(png), cv2.IMREAD_UNCHANGED)
    if bgr is None or ann is None or ann.shape[:2] != bgr.shape[:2]:
        return None
    mask = (ann > 0) if ann.ndim == 2 else (ann > 0).any(axis=2)
    if not mask.any():
        return None
    h, w = mask.shape
    s = min(1.0, max_side / max(h, w))
    if s < 1.0:
        size = (max(1, round(w * s)), max(1, round(h * s)))
        bgr = cv2.resize(bgr, size, interpolation=cv2.INTER_AREA)
        mask = cv2.resize(mask.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST) > 0
        if not mask.any():
            return None
    return np.ascontiguousarray(bgr[..., ::-1]), mask


def _box(mask: np.ndarray) -> tuple[int, int, int, int]:
    ys = np.flatnonzero(mask.any(axis=1))
    xs = np.flatnonzero(mask.any(axis=0))
    return int(xs[0]), int(ys[0]), int(xs[-1]) + 1, int(ys[-1]) + 1
