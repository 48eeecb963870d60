"""MP4 writing through PyAV (H.264 when available, else MPEG-4 Part 2), atomically."""

from __future__ import annotations

from collections.abc import Iterable
from fractions import Fraction
from pathlib import Path

import numpy as np

from instseg.utils.io import atomic_write

__all__ = ["write_video"]


def write_video(path: str | Path, frames: Iterable[np.ndarray], *, fps: float = 24.0) -> Path:
    """Encode RGB uint8 (H, W, 3) frames to ``path`` (.mp4). Odd sizes are padded to even."""
    import av

    def writer(tmp: Path) -> None:
        with av.open(str(tmp), mode="w", format="mp4") as container:
            stream = None
            for frame in frames:
                h, w = frame.shape[:2]
                if stream is None:
                    codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
                    stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1000))
                    stream.width, stream.height = w + w % 2, h + h % 2
                    stream.pix_fmt = "yuv420p"
                if frame.shape[0] % 2 or frame.shape[1] % 2:
                    frame = np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
                vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
                for packet in stream.encode(vf):
                    container.mux(packet)
            if stream is None:
                raise ValueError(f"{path}: no frames to write")
            for packet in stream.encode():
                container.mux(packet)

    return atomic_write(path, writer)
