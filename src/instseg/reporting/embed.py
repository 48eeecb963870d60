"""Pictures as ``data:`` URIs, so the report is one file that opens from disk (no server, no
folder of pictures to keep next to it, nothing fetched from the network)."""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

__all__ = ["array_data_uri", "figure_data_uri", "image_file_data_uri", "fit_size"]

MIME = {"png": "image/png", "jpeg": "image/jpeg"}


def fit_size(width: int, height: int, max_side: int) -> tuple[int, int]:
    """(w, h) scaled down (never up) so that the longer side is at most ``max_side``."""
    s = min(1.0, max_side / max(width, height, 1))
    return max(1, round(width * s)), max(1, round(height * s))


def array_data_uri(rgb: np.ndarray, *, max_side: int = 640, fmt: str = "jpeg") -> str:
    """A ``data:`` URI of an RGB uint8 (H, W, 3) or grey (H, W) image, downscaled to
    ``max_side``; ``fmt`` "jpeg" (photos) or "png" (masks, plots: lossless)."""
    im = Image.fromarray(np.ascontiguousarray(rgb))
    size = fit_size(im.width, im.height, max_side)
    if size != (im.width, im.height):
        im = im.resize(size, Image.Resampling.LANCZOS)
    return _encode(im, fmt)


def image_file_data_uri(path: str | Path, *, max_side: int = 640, fmt: str | None = None) -> str:
    """A ``data:`` URI of an image file, downscaled to ``max_side`` (format: PNG for .png
    files, else JPEG, unless ``fmt``)."""
    path = Path(path)
    with Image.open(path) as im:
        im.load()
        rgb = np.asarray(im.convert("RGB"))
    return array_data_uri(rgb, max_side=max_side, fmt=fmt or _fmt_of(path))


def figure_data_uri(fig: Any, *, dpi: int = 100) -> str:
    """A matplotlib figure as a PNG ``data:`` URI (the figure is closed)."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    return f"data:image/png;base64,{base64.b64encode(buf.getvalue()).decode('ascii')}"


def _fmt_of(path: Path) -> str:
    return "png" if path.suffix.lower() == ".png" else "jpeg"


def _encode(im: Image.Image, fmt: str) -> str:
    if fmt not in MIME:
        raise ValueError(f"image format must be one of {sorted(MIME)}, got {fmt!r}")
    buf = io.BytesIO()
    im.save(buf, format=fmt.upper(), **({"quality": 88} if fmt == "jpeg" else {}))
    return f"data:{MIME[fmt]};base64,{base64.b64encode(buf.getvalue()).decode('ascii')}"
