"""Real object cutouts and backgrounds from DAVIS-style folders, for the synthetic generators.

Layout read (``480p`` is optional); several folders may be given and are read as one::

    ROOT/JPEGImages/480p/<sequence>/<frame>.jpg
    ROOT/Annotations/480p/<sequence>/<frame>.png   (non-zero = the object)

A few evenly spaced frames per sequence are loaded. A cutout is the frame cropped to its mask's
bounding box (RGB + mask); it is named after the sequence's kind for the known DAVIS sequences
(``boat`` -> ``vehicle``), else after the sequence. A background is a random crop of a loaded
frame that stays clear of the annotated object's box; sequences known to hold unannotated
look-alikes (``flamingo``, ``dance-jump``) give no backgrounds, other sequences may still show
unannotated things. Nothing is copied anywhere.

``include`` / ``exclude`` pick sequences, so that a training bank and an evaluation bank can be
built from disjoint sequences (objects *and* backgrounds never seen in training; see
:data:`instseg.data.davis_splits.IMAGE_HELD_OUT`). :class:`SpriteJitter` varies a cutout's
colour, contrast and sharpness each time it is drawn.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from instseg.data.synthetic_shapes import Sprite

__all__ = [
    "DAVIS_KINDS",
    "CutoutBank",
    "SpriteJitter",
    "find_davis_roots",
    "find_default_cutout_root",
]

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
# all 30 DAVIS-2016 training sequences: the subset (9, every frame) and the rest (21, every 2nd)
_ALL_SUBDIRS = (_DEFAULT_SUBDIR, Path("data") / "davis2016-train-rest")


def _shared_bases() -> tuple[Path, ...]:
    repo = Path(__file__).resolve().parents[3]
    return (repo.parent / "shared", Path("/work/shared"))


def find_default_cutout_root() -> Path | None:
    """The shared DAVIS subset beside the repository (``<repo>/../shared/data/...``) or at
    ``/work/shared/data/...``, if it exists; else None."""
    for base in _shared_bases():
        if (base / _DEFAULT_SUBDIR / "JPEGImages").is_dir():
            return base / _DEFAULT_SUBDIR
    return None


def find_davis_roots() -> tuple[Path, ...]:
    """Every shared DAVIS-2016 training folder that exists (subset, then rest), from the first
    shared folder that has the subset; () when there is none."""
    for base in _shared_bases():
        found = tuple(base / d for d in _ALL_SUBDIRS if (base / d / "JPEGImages").is_dir())
        if found:
            return found
    return ()


@dataclass(frozen=True)
class SpriteJitter:
    """Photometric jitter of a cutout, drawn anew each time it is pasted.

    - ``brightness``, ``contrast``, ``saturation``: factors drawn in [1 - v, 1 + v]
    - ``hue``: per-channel gain drawn in [1 - v, 1 + v] (a colour cast)
    - ``blur``: probability of a Gaussian blur with sigma in [0.5, 1.5] px
    """

    brightness: float = 0.3
    contrast: float = 0.3
    saturation: float = 0.4
    hue: float = 0.08
    blur: float = 0.2

    def apply(self, rng: np.random.Generator, rgb: np.ndarray) -> np.ndarray:
        """(h, w, 3) uint8 -> jittered (h, w, 3) uint8; the same draws for the same ``rng``."""
        x = rgb.astype(np.float32)
        b, c, s = (
            1.0 + rng.uniform(-v, v) for v in (self.brightness, self.contrast, self.saturation)
        )
        gain = 1.0 + rng.uniform(-self.hue, self.hue, size=3).astype(np.float32)
        grey = x.mean(axis=2, keepdims=True)
        x = grey + (x - grey) * s  # saturation
        x = x.mean() + (x - x.mean()) * c  # contrast
        x = x * b * gain
        if rng.random() < self.blur:
            x = cv2.GaussianBlur(x, (0, 0), float(rng.uniform(0.5, 1.5)))
        return np.clip(x + 0.5, 0, 255).astype(np.uint8)


@dataclass
class _Frame:
    rgb: np.ndarray  # (H, W, 3) uint8
    box: tuple[int, int, int, int]  # object box x0, y0, x1, y1 (exclusive)


class CutoutBank:
    """Cutout sprites (``rgb`` + ``mask`` cropped to the object) and background frames."""

    def __init__(
        self,
        *,
        cutouts: list[Sprite],
        frames: list[np.ndarray],
        boxes: list,
        sequences: tuple[str, ...] = (),
    ) -> None:
        if not cutouts:
            raise ValueError("CutoutBank needs at least one cutout")
        self.cutouts = cutouts
        self.sequences = tuple(sequences)  # the sequences read, sorted
        self.frames = [_Frame(f, tuple(b)) for f, b in zip(frames, boxes, strict=True)]
        self.names: tuple[str, ...] = tuple(sorted({c.name for c in cutouts}))
        self._by_name = {n: [c for c in cutouts if c.name == n] for n in self.names}
        self._by_origin: dict[str, list[Sprite]] = {}
        for c in cutouts:
            self._by_origin.setdefault(c.origin, []).append(c)

    @classmethod
    def load(
        cls,
        root: str | Path | Sequence[str | Path],
        *,
        frames_per_sequence: int = 8,
        max_side: int = 512,
        min_object_side: int = 16,
        exclude: Sequence[str] = (),
        include: Sequence[str] | None = None,
        class_name: str | None = None,
    ) -> CutoutBank:
        """Read ``frames_per_sequence`` evenly spaced frames of each sequence under ``root``
        (one folder or several, read as one), downscaled so the longer side is at most
        ``max_side``. ``include`` (None: all) keeps only the named sequences and ``exclude``
        drops the named ones (e.g. sequences kept out for evaluation); a name in ``include``
        found in no folder raises ``ValueError``. ``class_name`` names every cutout (e.g.
        ``"object"`` for class-agnostic scenes) instead of the sequence's kind. Unreadable
        frames are skipped with one warning; no usable frame raises ``FileNotFoundError``."""
        roots = [Path(root)] if isinstance(root, (str, Path)) else [Path(r) for r in root]
        if not roots:
            raise FileNotFoundError("CutoutBank.load: no cutout folder given")
        excluded = frozenset(exclude)
        wanted = None if include is None else frozenset(include)
        cutouts: list[Sprite] = []
        frames: list[np.ndarray] = []
        boxes: list[tuple[int, int, int, int]] = []
        skipped: list[str] = []
        seqs_read: list[str] = []
        listing = []
        for r in roots:
            img_dir, ann_dir = _layout(r)
            listing += [(p.name, img_dir, ann_dir) for p in ann_dir.iterdir() if p.is_dir()]
        if wanted is not None:
            missing = sorted(wanted - {name for name, _, _ in listing})
            if missing:
                where = ", ".join(str(r) for r in roots)
                raise ValueError(f"{where}: no sequence named {', '.join(missing)}")
        for seq, img_dir, ann_dir in sorted(listing, key=lambda t: t[0]):
            if seq in excluded or (wanted is not None and seq not in wanted):
                continue
            pngs = sorted((ann_dir / seq).glob("*.png"))
            if not pngs:
                continue
            idx = np.unique(np.linspace(0, len(pngs) - 1, frames_per_sequence).round().astype(int))
            for png in (pngs[i] for i in idx):
                loaded = _read_pair(img_dir / seq / (png.stem + ".jpg"), png, max_side)
                if loaded is None:
                    skipped.append(str(img_dir / seq / (png.stem + ".jpg")))
                    continue
                rgb, mask = loaded
                x0, y0, x1, y1 = _box(mask)
                if min(x1 - x0, y1 - y0) < min_object_side:
                    continue
                name = class_name or DAVIS_KINDS.get(seq, seq)
                if not seqs_read or seqs_read[-1] != seq:
                    seqs_read.append(seq)
                cutouts.append(
                    Sprite(
                        rgb=rgb[y0:y1, x0:x1].copy(),
                        mask=mask[y0:y1, x0:x1],
                        name=name,
                        origin=seq,
                    )
                )
                if seq not in _NO_BACKGROUND:
                    frames.append(rgb)
                    boxes.append((x0, y0, x1, y1))
        if skipped:
            warnings.warn(
                f"skipped {len(skipped)} unreadable frame(s) or frame(s) with an empty mask "
                f"(first: {skipped[0]})",
                stacklevel=2,
            )
        if not cutouts:
            raise FileNotFoundError(
                f"{', '.join(str(r) for r in roots)}: no usable frame+mask pairs"
            )
        return cls(cutouts=cutouts, frames=frames, boxes=boxes, sequences=tuple(seqs_read))

    def sprite(
        self,
        rng: np.random.Generator,
        *,
        size: int,
        name: str | None = None,
        jitter: SpriteJitter | None = None,
        origin: str | None = None,
    ) -> Sprite:
        """A random cutout (of class ``name`` if given, or from sequence ``origin`` if given:
        a look-alike of another cutout of it) scaled so its longer side is ``size``, flipped
        left-right half of the time, colours jittered by ``jitter`` when given (drawn after the
        rest, so a bank without jitter draws the same sprites as before)."""
        if origin is not None and origin in self._by_origin:
            pool = self._by_origin[origin]
            name = pool[0].name
        else:
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
        if jitter is not None:
            rgb = jitter.apply(rng, np.ascontiguousarray(rgb))
        return Sprite(
            rgb=np.ascontiguousarray(rgb[y0:y1, x0:x1]),
            mask=np.ascontiguousarray(mask[y0:y1, x0:x1]),
            name=name,
            origin=src.origin,
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
