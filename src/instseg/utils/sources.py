"""Input sources for prediction: an image, a folder, a glob, or a video file (frames via PyAV).

``iter_source(path)`` yields ``(name, rgb uint8 (H, W, 3), path)``; names are file stems for
images and ``"%06d" % frame_index`` for video frames (whose path is None).
"""

from __future__ import annotations

import glob as globlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from instseg.utils.image import IMAGE_EXTENSIONS, read_image

__all__ = ["VIDEO_EXTENSIONS", "is_video", "list_images", "iter_source", "read_video_frames"]

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
        raise FileNotFoundError(f"{source}: no such file, folder or glob match")
    if not files:
        raise FileNotFoundError(
            f"{source}: no images found (extensions {', '.join(IMAGE_EXTENSIONS)})"
        )
    return files


def read_video_frames(path: str | Path, *, max_frames: int | None = None) -> Iterator[np.ndarray]:
    """Decode a video file frame by frame as RGB uint8 (H, W, 3) with PyAV."""
    import av

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: video file not found")
    try:
        container = av.open(str(path))
    except av.error.FFmpegError as e:  # type: ignore[attr-defined]
        raise OSError(f"{path}: cannot open video ({e})") from e
    with container:
        for i, frame in enumerate(container.decode(video=0)):
            if max_frames is not None and i >= max_frames:
                break
            yield frame.to_ndarray(format="rgb24")


def video_fps(path: str | Path, default: float = 24.0) -> float:
    import av

    with av.open(str(path)) as c:
        rate = c.streams.video[0].average_rate
        return float(rate) if rate else default


def iter_source(source: str | Path) -> Iterator[tuple[str, np.ndarray, Path | None]]:
    """Yield (name, RGB frame, file path or None for video frames) for an image / folder /
    glob / video source."""
    if is_video(source):
        for i, frame in enumerate(read_video_frames(source)):
            yield f"{i:06d}", frame, None
        return
    for f in list_images(source):
        yield f.stem, read_image(f), f
