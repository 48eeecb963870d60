"""Frames and per-frame masks on disk for ``instseg inpaint``: frame names of a folder or video,
PNG masks matched by frame stem, the readability pass over both (:func:`check_frames`) and
sequential window access to the frames.

Masks are PNGs named ``<frame stem>.png`` (for a video file the frames are ``000000``,
``000001``, ...), nonzero = inside.

An unreadable frame (a corrupt or truncated image, a video packet that does not decode) or an
unreadable mask of a frame drops that frame from the clip with one warning, as
:class:`~instseg.utils.sources.SourceReader` does for the other commands (``strict``: the first
one raises); a missing mask or a mask of the wrong size stays an error.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from instseg.utils.errors import InvalidInputError, UnreadableFileError
from instseg.utils.sources import SourceReader, is_video, iter_source, list_images

__all__ = ["ClipFrames", "check_frames", "list_frames", "read_mask", "mask_paths", "WindowReader"]

log = logging.getLogger(__name__)


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
    return _unique_stems(source, list_images(source))


def _unique_stems(source: str | Path, files: list[Path]) -> list[str]:
    stems = [f.stem for f in files]
    dup = sorted({s for s in stems if stems.count(s) > 1})
    if dup:
        raise InvalidInputError(
            f"{source}: several frames share a name (stem) {dup[:3]}; "
            "masks are matched by stem, so frame names must be unique"
        )
    return stems


@dataclass
class ClipFrames:
    """The result of :func:`check_frames`: ``names`` of the readable frames (file stems, or
    ``%06d`` frame indices of a video) in source order, ``skipped`` the unreadable ones (file
    names, e.g. ``"0003.jpg"``, or ``%06d`` frame indices), ``total`` all frames of the source."""

    source: str | Path
    names: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    total: int = 0

    def summary(self) -> str:
        """One line: how many frames were unreadable and skipped (empty when none)."""
        if not self.skipped:
            return ""
        return (
            f"{len(self.skipped)} of {self.total} frames of {self.source} were unreadable and "
            "skipped"
        )


def check_frames(
    source: str | Path,
    mask_dirs: dict[str, str | Path | None] | None = None,
    *,
    strict: bool = False,
    warn: Callable[[str], None] | None = None,
) -> ClipFrames:
    """One readability pass over the frames of ``source`` and, for each readable frame, its
    masks in ``mask_dirs`` (kind -> folder, e.g. ``{"visible": ..., "holes": None}``).

    Decodes every frame and mask once (nothing is kept). A frame that cannot be read, or whose
    mask cannot be read, is dropped with one warning (``warn(message)``, default: this module's
    logger) and listed in ``skipped``; with ``strict`` the first one raises its
    :class:`~instseg.utils.errors.UnreadableFileError`. A missing source, mask folder or mask,
    a mask of the wrong size or duplicate frame stems always raise. No readable frame at all
    is not an error here (``names`` is empty); the caller decides."""
    warn = warn or log.warning
    dirs = {k: Path(d) for k, d in (mask_dirs or {}).items() if d}
    for kind, folder in dirs.items():
        mask_paths(folder, [], kind)  # the folder exists: an error before decoding anything
    video = is_video(source)
    files = [] if video else list_images(source)
    if files:
        _unique_stems(source, files)
    reader = SourceReader(source, strict=strict, warn=warn)
    good: set[int] = set()
    clip = ClipFrames(source)
    for name, frame, _ in reader:
        try:
            for kind, folder in dirs.items():
                read_mask(mask_paths(folder, [name], kind)[0], frame.shape[:2])
        except UnreadableFileError as e:
            if strict:
                raise
            warn(f"skipped frame {name}: {e}")
            continue
        good.add(reader.index)
        clip.names.append(name)
    clip.total = reader.total
    clip.skipped = [
        files[i].name if not video else f"{i:06d}" for i in range(reader.total) if i not in good
    ]
    return clip


def read_mask(path: Path, hw: tuple[int, int]) -> np.ndarray:
    """PNG mask -> (H, W) bool (nonzero = inside); size must be ``hw``."""
    try:
        with Image.open(path) as im:
            m = np.asarray(im.convert("L")) > 0
    except (OSError, SyntaxError, ValueError) as e:
        raise UnreadableFileError(f"{path}: cannot read mask ({e})") from e
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
    keeps only the frames from the current window's start on (memory is one window).

    ``names``: read only these frames (the ``names`` of :func:`check_frames`; window indices
    count them, not the source's frames); a frame among them that cannot be read any more
    raises :class:`~instseg.utils.errors.UnreadableFileError`. None: every frame of the source
    (the first unreadable one raises)."""

    def __init__(self, source: str | Path, names: list[str] | None = None) -> None:
        self.source = source
        self._names = None if names is None else list(names)
        self._it = iter_source(source) if names is None else _only(source, set(names))
        self._cache: dict[int, np.ndarray] = {}
        self._next = 0

    def frames(self, start: int, end: int) -> np.ndarray:
        """(end - start, H, W, 3) uint8 RGB frames ``start .. end - 1``; frames before
        ``start`` are dropped (windows must not go back before an earlier start)."""
        for i in [i for i in self._cache if i < start]:
            del self._cache[i]
        while self._next < end:
            want = None if self._names is None else self._names[self._next]
            name, frame, _ = next(self._it, (None, None, None))
            if frame is None or (want is not None and name != want):
                raise UnreadableFileError(
                    f"{self.source}: frame {want or self._next} cannot be read any more"
                )
            self._cache[self._next] = frame
            self._next += 1
        shapes = {self._cache[i].shape for i in range(start, end)}
        if len(shapes) > 1:
            raise ValueError(f"frames {start}..{end - 1} have different sizes {sorted(shapes)}")
        return np.stack([self._cache[i] for i in range(start, end)])


def _only(source: str | Path, names: set[str]) -> Iterator[tuple[str, np.ndarray, Path | None]]:
    """The frames of ``source`` named in ``names``, in source order (others are not kept;
    unreadable ones are passed over quietly, :func:`check_frames` has warned about them)."""
    for name, frame, path in SourceReader(source, warn=lambda _message: None):
        if name in names:
            yield name, frame, path
