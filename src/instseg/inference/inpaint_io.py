"""Frames and per-frame masks on disk for ``instseg inpaint``: frame names of a folder or video,
PNG masks matched by frame stem, and sequential window access to the frames.

Masks are PNGs named ``<frame stem>.png`` (for a video file the frames are ``000000``,
``000001``, ...), nonzero = inside.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from instseg.utils.sources import is_video, iter_source, list_images

__all__ = ["list_frames", "read_mask", "mask_paths", "WindowReader"]


def list_frames(source: str | Path) -> list[str]:
    """Frame names of a folder / glob / image (file stems, must be unique) or a video file
    (``%06d`` frame indices, as :func:`instseg.utils.sources.iter_source` names them)."""
    if is_video(source):
        import av

        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: video file not found")
        with av.open(str(path)) as c:
            n = sum(1 for _ in c.decode(video=0))
        if n == 0:
            raise ValueError(f"{path}: the video has no frames")
        return [f"{i:06d}" for i in range(n)]
    files = list_images(source)
    stems = [f.stem for f in files]
    dup = sorted({s for s in stems if stems.count(s) > 1})
    if dup:
        raise ValueError(
            f"{source}: several frames share a name (stem) {dup[:3]}; "
            "masks are matched by stem, so frame names must be unique"
        )
    return stems


def read_mask(path: Path, hw: tuple[int, int]) -> np.ndarray:
    """PNG mask -> (H, W) bool (nonzero = inside); size must be ``hw``."""
    try:
        with Image.open(path) as im:
            m = np.asarray(im.convert("L")) > 0
    except OSError as e:
        raise OSError(f"{path}: cannot read mask ({e})") from e
    if m.shape != tuple(hw):
        raise ValueError(f"{path}: mask size {m.shape} does not match frame size {tuple(hw)}")
    return m


def mask_paths(folder: Path, names: list[str], kind: str) -> list[Path]:
    """``folder/<name>.png`` for every frame name; a missing folder or file is an error naming
    it and the mask ``kind`` ("visible", "holes", "occluder")."""
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: {kind} mask folder not found")
    paths = [folder / f"{n}.png" for n in names]
    for n, p in zip(names, paths, strict=True):
        if not p.is_file():
            raise FileNotFoundError(f"{p}: {kind} mask missing for frame '{n}'")
    return paths


class WindowReader:
    """Sequential frame access for non-decreasing windows: decodes up to the window's end and
    keeps only the frames from the current window's start on (memory is one window)."""

    def __init__(self, source: str | Path) -> None:
        self._it = iter_source(source)
        self._cache: dict[int, np.ndarray] = {}
        self._next = 0

    def frames(self, start: int, end: int) -> np.ndarray:
        """(end - start, H, W, 3) uint8 RGB frames ``start .. end - 1``; frames before
        ``start`` are dropped (windows must not go back before an earlier start)."""
        for i in [i for i in self._cache if i < start]:
            del self._cache[i]
        while self._next < end:
            _, frame, _ = next(self._it)
            self._cache[self._next] = frame
            self._next += 1
        shapes = {self._cache[i].shape for i in range(start, end)}
        if len(shapes) > 1:
            raise ValueError(f"frames {start}..{end - 1} have different sizes {sorted(shapes)}")
        return np.stack([self._cache[i] for i in range(start, end)])
