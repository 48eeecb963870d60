"""DAVIS folders: frames and indexed-PNG label maps.

Layout::

    <root>/JPEGImages/<res>/<seq>/%05d.jpg
    <root>/Annotations/<res>/<seq>/%05d.png

Label maps are (H, W) uint8: 0 = background, k = object k, 255 = void (DAVIS-2017 marks
uncertain pixels with 255 in its palette PNGs). DAVIS-2016 stores binary 8-bit grayscale PNGs
(values 0/255); those are read as object 1. :func:`write_davis_label` writes indexed PNGs with
the DAVIS palette (the PASCAL VOC colour map: 1 = dark red, 2 = green, ...).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from instseg.utils.io import atomic_write

__all__ = [
    "VOID_LABEL",
    "DavisSequence",
    "davis_palette",
    "list_davis_sequences",
    "resolve_davis_root",
    "read_davis_label",
    "write_davis_label",
    "labels_to_masks",
]

VOID_LABEL = 255


def davis_palette() -> list[int]:
    """The 256-entry DAVIS / PASCAL VOC palette as a flat ``[r0, g0, b0, r1, ...]`` list."""
    pal = []
    for i in range(256):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        pal += [r, g, b]
    return pal


@dataclass
class DavisSequence:
    """One sequence: ``frame_paths[t]`` and, where it exists, ``label_paths[t]`` (else None)."""

    name: str
    frame_paths: list[Path]
    label_paths: list[Path | None]

    def __len__(self) -> int:
        return len(self.frame_paths)

    def label(self, t: int) -> np.ndarray | None:
        """(H, W) uint8 label map of frame ``t``, or None when the frame is unannotated."""
        p = self.label_paths[t]
        return None if p is None else read_davis_label(p)

    def labels(self) -> list[np.ndarray | None]:
        return [self.label(t) for t in range(len(self))]

    def object_ids(self) -> list[int]:
        """Object ids present in any annotated frame (void and background excluded)."""
        ids: set[int] = set()
        for lab in self.labels():
            if lab is not None:
                ids.update(int(v) for v in np.unique(lab))
        return sorted(ids - {0, VOID_LABEL})


def resolve_davis_root(root: str | Path) -> Path:
    """``root``, or with ``""`` the shared DAVIS-2016 subset beside the repository
    (``../shared/data/davis2016-train-subset``); FileNotFoundError naming the folder when it is
    not a DAVIS root."""
    from instseg.data.synthetic_cutouts import find_default_cutout_root

    if not str(root):
        found = find_default_cutout_root()
        if found is None:
            raise FileNotFoundError(
                "no DAVIS root given and the shared DAVIS-2016 subset "
                "(../shared/data/davis2016-train-subset) was not found; set the data root"
            )
        return found
    path = Path(root)
    if not (path / "JPEGImages").is_dir():
        raise FileNotFoundError(f"{path}: not a DAVIS root (no JPEGImages/)")
    return path


def list_davis_sequences(
    root: str | Path, *, resolution: str = "480p", sequences: Sequence[str] | None = None
) -> list[DavisSequence]:
    """Sequences under ``root`` (all, sorted, or ``sequences`` in the given order).

    Frames come from ``JPEGImages/<resolution>/<seq>`` (sorted by name); a frame's label is
    the PNG of the same stem under ``Annotations/<resolution>/<seq>`` if present.
    """
    root = Path(root)
    img_dir, ann_dir = root / "JPEGImages" / resolution, root / "Annotations" / resolution
    if not img_dir.is_dir():
        raise FileNotFoundError(f"{img_dir}: DAVIS frame folder not found")
    names = (
        list(sequences)
        if sequences is not None
        else sorted(p.name for p in img_dir.iterdir() if p.is_dir())
    )
    out = []
    for name in names:
        frames = sorted(p for p in (img_dir / name).glob("*.jpg"))
        if not frames:
            raise FileNotFoundError(f"{img_dir / name}: no .jpg frames for sequence '{name}'")
        labels = [ann_dir / name / f"{f.stem}.png" for f in frames]
        out.append(DavisSequence(name, frames, [p if p.is_file() else None for p in labels]))
    return out


def read_davis_label(path: str | Path) -> np.ndarray:
    """Read a DAVIS annotation PNG as an (H, W) uint8 label map (see the module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: label file not found")
    try:
        with Image.open(path) as im:
            im.load()
            mode = im.mode
            arr = np.array(im)
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise ValueError(f"{path}: cannot read label PNG ({e})") from e
    if mode == "P":
        return arr.astype(np.uint8)
    if mode == "1":
        return arr.astype(np.uint8)
    if arr.ndim == 3:
        if not (arr[..., :3] == arr[..., :1]).all():
            raise ValueError(f"{path}: colour label PNG (mode {mode}); expected indexed or gray")
        arr = arr[..., 0]
    if arr.dtype != np.uint8:
        raise ValueError(f"{path}: unsupported label dtype {arr.dtype} (mode {mode})")
    values = np.unique(arr)
    if set(values.tolist()) <= {0, 255}:  # DAVIS-2016 binary mask -> object 1
        return (arr == 255).astype(np.uint8)
    return arr


def write_davis_label(path: str | Path, labels: np.ndarray) -> Path:
    """Write an (H, W) integer label map (values 0..255) as an indexed PNG with the DAVIS
    palette, atomically."""
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"{path}: label map must be (H, W), got shape {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() > 255):
        raise ValueError(f"{path}: label values must be in 0..255")
    im = Image.fromarray(labels.astype(np.uint8), mode="P")
    im.putpalette(davis_palette())
    return atomic_write(path, lambda p: im.save(p, format="PNG"))


def labels_to_masks(labels: np.ndarray, object_ids: Sequence[int]) -> np.ndarray:
    """(H, W) label map -> (K, H, W) bool, one mask per id in ``object_ids``."""
    ids = np.asarray(list(object_ids), dtype=np.int64).reshape(-1, 1, 1)
    return labels[None].astype(np.int64) == ids
