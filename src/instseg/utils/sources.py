"""Input sources for prediction: an image, a folder, a glob, or a video file (frames via PyAV).

``iter_source(path)`` yields ``(name, rgb uint8 (H, W, 3), path)``; names are file stems for
images and ``"%06d" % frame_index`` for video frames (whose path is None). It raises on the
first unreadable item. :class:`SourceReader` yields the same tuples but skips unreadable items
(a corrupt or truncated image, a frame that does not decode) with one warning each and counts
them (``strict=True``: the first one raises).
"""

from __future__ import annotations

import glob as globlib
import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from instseg.utils.errors import InvalidInputError, MissingFileError, UnreadableFileError
from instseg.utils.image import IMAGE_EXTENSIONS, ImageReadError, read_image

__all__ = [
    "VIDEO_EXTENSIONS",
    "SourceReader",
    "is_video",
    "iter_source",
    "list_images",
    "read_video_frames",
]

log = logging.getLogger(__name__)

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg")


def is_video(path: str | Path) -> bool:
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


def list_images(source: str | Path) -> list[Path]:
    """Image files of a folder (sorted), a glob pattern, or a single image path."""
    s = str(source)
    p = Path(s)
    if p.is_dir():
        files = sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_EXTENSIONS)
    elif any(ch in s for ch in "*?["):
        files = sorted(Path(f) for f in globlib.glob(s, recursive=True))
        files = [f for f in files if f.suffix.lower() in IMAGE_EXTENSIONS]
    elif p.is_file():
        files = [p]
    else:
        raise MissingFileError(f"{source}: no such file, folder or glob match")
    if not files:
        raise MissingFileError(
            f"{source}: no images found (extensions {', '.join(IMAGE_EXTENSIONS)})"
        )
    return files


def read_video_frames(path: str | Path, *, max_frames: int | None = None) -> Iterator[np.ndarray]:
    """Decode a video file frame by frame as RGB uint8 (H, W, 3) with PyAV."""
    import av

    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"{path}: video file not found")
    try:
        container = av.open(str(path))
    except av.error.FFmpegError as e:  # type: ignore[attr-defined]
        raise UnreadableFileError(f"{path}: cannot open video ({e})") from e
    with container:
        for i, frame in enumerate(container.decode(video=0)):
            if max_frames is not None and i >= max_frames:
                break
            yield frame.to_ndarray(format="rgb24")


def video_fps(path: str | Path, default: float = 24.0) -> float:
    import av

    try:
        with av.open(str(path)) as c:
            rate = c.streams.video[0].average_rate
            return float(rate) if rate else default
    except (av.error.FFmpegError, IndexError) as e:  # type: ignore[attr-defined]
        raise UnreadableFileError(f"{path}: cannot read the video's frame rate ({e})") from e


def iter_source(source: str | Path) -> Iterator[tuple[str, np.ndarray, Path | None]]:
    """Yield (name, RGB frame, file path or None for video frames) for an image / folder /
    glob / video source."""
    if is_video(source):
        for i, frame in enumerate(read_video_frames(source)):
            yield f"{i:06d}", frame, None
        return
    for f in list_images(source):
        yield f.stem, read_image(f), f


class SourceReader:
    """Iterate an image / folder / glob / video source, skipping what cannot be read.

    Yields ``(name, RGB uint8 (H, W, 3), path or None)`` like :func:`iter_source`. An image that
    cannot be read (corrupt, truncated, not an image) or a video packet that does not decode is
    skipped with one warning naming it (``warn(message)``, default: this module's logger) and
    recorded in :attr:`skipped`; with ``strict`` the first one raises its
    :class:`~instseg.utils.errors.UserError` instead. A source that does not exist, matches no
    image or cannot be opened at all always raises. :attr:`index` is the position in the source
    of the item just yielded (skipped items count), e.g. the frame index of a video frame.

    reader = SourceReader("photos/", strict=False)
    for name, image, path in reader: ...
    print(reader.summary())     # "2 of 50 items of photos/ were unreadable and skipped"
    """

    def __init__(
        self,
        source: str | Path,
        *,
        strict: bool = False,
        warn: Callable[[str], None] | None = None,
    ) -> None:
        self.source = source
        self.strict = strict
        self.warn = warn or log.warning
        self.skipped: list[str] = []  # one "<item>: <problem>" per skipped item
        self.index = -1
        self.total = 0  # items seen so far, skipped ones included

    def __iter__(self) -> Iterator[tuple[str, np.ndarray, Path | None]]:
        items = self._video() if is_video(self.source) else self._images()
        for item in items:
            if item is None:
                continue
            self.index = self.total - 1
            yield item

    def size_hint(self) -> int | None:
        """The number of items to expect (image files; a video's frame count when its header
        has one, else None). Raises the source's error (missing, no images) early."""
        if not is_video(self.source):
            return len(list_images(self.source))
        import av

        path = Path(self.source)
        if not path.is_file():
            raise MissingFileError(f"{path}: video file not found")
        try:
            with av.open(str(path)) as c:
                n = int(c.streams.video[0].frames) if c.streams.video else 0
        except av.error.FFmpegError as e:  # type: ignore[attr-defined]
            raise UnreadableFileError(f"{path}: cannot open video ({e})") from e
        return n or None

    def summary(self) -> str:
        """One line: how many items were read and skipped (empty string when none skipped)."""
        if not self.skipped:
            return ""
        return (
            f"{len(self.skipped)} of {self.total} items of {self.source} were unreadable and "
            "skipped"
        )

    def _skip(self, error: Exception) -> None:
        if self.strict:
            raise error
        self.skipped.append(str(error))
        self.warn(f"skipped: {error}")

    def _images(self) -> Iterator[tuple[str, np.ndarray, Path] | None]:
        for f in list_images(self.source):
            self.total += 1
            try:
                yield f.stem, read_image(f), f
            except ImageReadError as e:
                self._skip(e)
                yield None

    def _video(self) -> Iterator[tuple[str, np.ndarray, None] | None]:
        """Decode packet by packet so that one bad packet costs only its frame; a packet that
        fails counts as one frame (the names of later frames keep their index)."""
        import av

        path = Path(self.source)
        if not path.is_file():
            raise MissingFileError(f"{path}: video file not found")
        try:
            container = av.open(str(path))
        except av.error.FFmpegError as e:  # type: ignore[attr-defined]
            raise UnreadableFileError(f"{path}: cannot open video ({e})") from e
        with container:
            if not container.streams.video:
                raise InvalidInputError(f"{path}: the file has no video stream")
            packets = container.demux(container.streams.video[0])
            while True:
                try:
                    packet = next(packets)
                except StopIteration:
                    return
                except av.error.FFmpegError as e:  # type: ignore[attr-defined]
                    self.total += 1
                    self._skip(UnreadableFileError(f"{path}: the video ends early ({e})"))
                    return
                try:
                    decoded = [f.to_ndarray(format="rgb24") for f in packet.decode()]
                except av.error.FFmpegError as e:  # type: ignore[attr-defined]
                    self.total += 1
                    self._skip(UnreadableFileError(f"{path}: frame {self.total - 1:06d} does "
                                                   f"not decode ({e})"))  # fmt: skip
                    yield None
                    continue
                for frame in decoded:
                    self.total += 1
                    yield f"{self.total - 1:06d}", frame, None
