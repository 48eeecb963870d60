"""Video sections: ``instseg track`` / ``instseg propagate`` outputs (MP4 with ids, per-track
table and timeline, mask frames), ``instseg predict`` on a video (``vis.mp4``) and ``instseg
inpaint`` outputs (before / after frames with the filled hole outlined).

MP4 files are not embedded: the page links them by a path relative to the page, so they play
from disk as long as the page stays where it was written relative to the run folder.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image

from instseg.inference.visualize import color_for
from instseg.reporting.embed import array_data_uri, figure_data_uri
from instseg.reporting.table import Table
from instseg.utils.image import IMAGE_EXTENSIONS, read_image
from instseg.utils.io import read_json

__all__ = [
    "Picture",
    "VideoSection",
    "InpaintSection",
    "read_video_outputs",
    "read_inpaint",
    "relative_link",
]

HOLE_COLOR = (255, 0, 255)


@dataclass
class Picture:
    caption: str
    src: str  # data URI


@dataclass
class VideoSection:
    title: str
    videos: list[tuple[str, str]]  # (caption, path relative to the page)
    tracks: Table | None = None
    timeline: str | None = None  # PNG data URI
    masks: list[Picture] = field(default_factory=list)


@dataclass
class InpaintSection:
    video: str | None  # relative path of video.mp4
    pairs: list[tuple[Picture, Picture]]  # (before, after)
    num_frames: int
    note: str = ""


def relative_link(target: Path, page: Path) -> str:
    """``target`` as a URL path relative to the page's folder (forward slashes)."""
    return Path(os.path.relpath(target.resolve(), page.resolve().parent)).as_posix()


def read_video_outputs(folder: Path, page: Path, *, num_masks: int = 6) -> VideoSection | None:
    """The section of a track / propagate / video-predict folder, None when ``folder`` has no
    top-level MP4, no ``masks/`` PNGs and no ``tracks.txt``."""
    videos = sorted(
        p for p in folder.glob("*.mp4") if p.name != "video.mp4" or not _is_inpaint(folder)
    )
    mask_files = _frames(folder / "masks")
    results = _video_results(folder / "results.json")
    if not videos and not mask_files and results is None and not (folder / "tracks.txt").is_file():
        return None
    if results is not None or (folder / "tracks.txt").is_file():
        title = "Tracking (instseg track)"
    elif mask_files:
        title = "Video object masks (instseg propagate)"
    else:
        title = "Video"
    sec = VideoSection(title, [(p.name, relative_link(p, page)) for p in videos])
    if results:
        sec.tracks, sec.timeline = _track_table(results), _timeline(results)
    for f in _evenly(mask_files, num_masks):
        sec.masks.append(
            Picture(f.stem, array_data_uri(_colour_labels(f), fmt="png", max_side=320))
        )
    return sec


def read_inpaint(folder: Path, page: Path, *, num_pairs: int = 4) -> InpaintSection | None:
    """The section of an ``instseg inpaint`` folder (``frames/`` and ``amodal/``), None
    otherwise. The "before" frames and the hole (the amodal mask minus the visible mask, or the
    ``--holes`` masks) come from ``inpaint.json``; without it only the results are shown, with
    the amodal mask outlined."""
    if not _is_inpaint(folder):
        return None
    after = _frames(folder / "frames")
    manifest_path = folder / "inpaint.json"
    manifest: dict[str, Any] = read_json(manifest_path) if manifest_path.is_file() else {}
    video = folder / "video.mp4"
    sec = InpaintSection(
        video=relative_link(video, page) if video.is_file() else None,
        pairs=[],
        num_frames=len(after),
    )
    source = manifest.get("source")
    picked = _evenly(after, num_pairs)
    before_frames = _source_frames(Path(source), {f.stem for f in picked}) if source else {}
    if not manifest:
        sec.note = f"no {manifest_path.name}: the frames before inpainting are not known"
    elif source and not before_frames:
        sec.note = f"source {source} is not readable any more: showing the results only"
    for f in picked:
        result = read_image(f)
        amodal = _mask(folder / "amodal" / f"{f.stem}.png", result.shape[:2])
        hole = _hole(manifest, f.stem, amodal, result.shape[:2])
        before = before_frames.get(f.stem)
        b = (
            Picture(f"{f.stem} before", array_data_uri(_outline(before, hole), max_side=400))
            if before is not None
            else Picture(f"{f.stem}: no source frame", "")
        )
        a = Picture(f"{f.stem} after", array_data_uri(_outline(result, hole), max_side=400))
        sec.pairs.append((b, a))
    return sec


# ------------------------------------------------------------------------------- helpers
def _is_inpaint(folder: Path) -> bool:
    return (folder / "frames").is_dir() and (folder / "amodal").is_dir()


def _frames(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(f for f in folder.iterdir() if f.suffix.lower() in IMAGE_EXTENSIONS)


def _evenly(items: list[Path], k: int) -> list[Path]:
    if len(items) <= k:
        return items
    idx = np.linspace(0, len(items) - 1, k).round().astype(int)
    return [items[i] for i in sorted(set(idx.tolist()))]


def _video_results(path: Path) -> list[dict[str, Any]] | None:
    """YouTube-VIS results (one dict per track with per-frame ``segmentations``) or None."""
    if not path.is_file():
        return None
    data = read_json(path)
    if isinstance(data, list) and all(isinstance(r, dict) and "segmentations" in r for r in data):
        return data
    return None


def _track_table(results: list[dict[str, Any]]) -> Table:
    table = Table(
        "Tracks", ["track", "video", "category", "score", "first frame", "last frame", "frames"]
    )
    for j, r in enumerate(results):
        present = [t for t, s in enumerate(r["segmentations"]) if s is not None]
        table.rows.append(
            [
                str(j + 1),
                str(r.get("video_id", "")),
                str(r.get("category_id", "")),
                f"{float(r.get('score', 0.0)):.3f}",
                str(present[0]) if present else "–",
                str(present[-1]) if present else "–",
                str(len(present)),
            ]
        )
    table.note = f"{len(results)} tracks (results.json, YouTube-VIS format)"
    return table


def _timeline(results: list[dict[str, Any]]) -> str | None:
    """Which frames each track is present in, one bar row per track."""
    if not results:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(results)
    fig, ax = plt.subplots(figsize=(9, 0.6 + 0.28 * min(n, 40)))
    for j, r in enumerate(results[:40]):
        present = [t for t, s in enumerate(r["segmentations"]) if s is not None]
        runs = _runs(present)
        ax.broken_barh(runs, (j + 0.6, 0.8), color=np.array(color_for(j)) / 255.0)
    ax.set_ylim(0.5, min(n, 40) + 0.5)
    ax.set_xlabel("frame")
    ax.set_ylabel("track")
    fig.tight_layout()
    return figure_data_uri(fig)


def _runs(frames: list[int]) -> list[tuple[int, int]]:
    runs: list[tuple[int, int]] = []
    for t in frames:
        if runs and runs[-1][0] + runs[-1][1] == t:
            runs[-1] = (runs[-1][0], runs[-1][1] + 1)
        else:
            runs.append((t, 1))
    return runs


def _colour_labels(path: Path) -> np.ndarray:
    """An indexed / label PNG as RGB: label k > 0 in ``color_for(k - 1)``, background black."""
    with Image.open(path) as im:
        labels = np.asarray(im if im.mode in ("P", "L", "I", "I;16") else im.convert("L"))
    labels = labels.astype(np.int64)
    out = np.zeros((*labels.shape, 3), np.uint8)
    for k in Counter(labels.ravel().tolist()):
        if k > 0:
            out[labels == k] = color_for(k - 1)
    return out


def _mask(path: Path, hw: tuple[int, int]) -> np.ndarray | None:
    if not path.is_file():
        return None
    with Image.open(path) as im:
        m = np.asarray(im.convert("L")) > 0
    return m if m.shape == tuple(hw) else None


def _hole(
    manifest: dict[str, Any], stem: str, amodal: np.ndarray | None, hw: tuple[int, int]
) -> np.ndarray | None:
    """The filled region: ``--holes`` mask, else amodal minus visible, else the amodal mask."""
    holes = manifest.get("holes_masks")
    if holes:
        m = _mask(Path(holes) / f"{stem}.png", hw)
        if m is not None:
            return m
    visible = manifest.get("visible_masks")
    if amodal is not None and visible:
        v = _mask(Path(visible) / f"{stem}.png", hw)
        if v is not None:
            return amodal & ~v
    return amodal


def _outline(rgb: np.ndarray, hole: np.ndarray | None) -> np.ndarray:
    out = np.ascontiguousarray(rgb.copy())
    if hole is not None and hole.any():
        contours, _ = cv2.findContours(
            hole.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE
        )
        cv2.drawContours(out, contours, -1, HOLE_COLOR, max(1, round(max(rgb.shape[:2]) / 300)))
    return out


def _source_frames(source: Path, wanted: set[str]) -> dict[str, np.ndarray]:
    """name -> RGB frame of the inpainting source (a folder of frames or a video) for the
    ``wanted`` frame names, {} when it cannot be read."""
    from instseg.utils.sources import iter_source

    try:
        return {n: im for n, im, _ in iter_source(source) if n in wanted}
    except (OSError, ValueError):
        return {}
