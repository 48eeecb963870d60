"""Self-supervised VOIN training clips from DAVIS (paper Sect. 5.4.4): resized sequences, an
endless seeded stream of synthetically occluded clips, and video batches for the generator.

The occlusion itself is :func:`~instseg.data.video_occlusion.occlude_clip` (a synthetic textured
occluder moving over the object, 20-50 % of it covered); the annotated (modal) DAVIS mask is the
amodal target. The stream is a pure function of its NumPy generator, so ``skip`` clips of it
reproduce the position of a resumed run.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import Tensor

from instseg.data.video_occlusion import (
    OccludedClip,
    load_davis_sequence,
    occlude_clip,
    synthetic_occluder,
)

__all__ = [
    "load_resized_videos",
    "root_list",
    "occluded_clip_stream",
    "stack_video",
    "video_batches",
]


def root_list(root: str | Path | Sequence[str | Path]) -> list[Path]:
    """One DAVIS root or several, as a list of paths (the ``root`` argument of
    :func:`load_resized_videos`)."""
    return [Path(root)] if isinstance(root, (str, Path)) else [Path(r) for r in root]


def load_resized_videos(
    root: Path | Sequence[Path], names: Sequence[str], num_frames: int, height: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(frames (T, h, w, 3) uint8, masks (T, h, w) bool) per sequence, resized to ``height``
    (width rounded to a multiple of 4); at most ``num_frames`` per sequence (0: all). ``root``:
    one DAVIS root or several (each sequence is read from the first root that has it, e.g. the
    shared subset and the rest of DAVIS-2016 train); FileNotFoundError names a sequence no root
    has."""
    roots = root_list(root)
    for r in roots:
        if not (r / "JPEGImages").is_dir():
            raise FileNotFoundError(f"{r}: not a DAVIS root (no JPEGImages/)")
    out = []
    for name in names:
        where = [r for r in roots if (r / "JPEGImages" / "480p" / name).is_dir()]
        if not where:
            raise FileNotFoundError(
                f"DAVIS sequence {name!r} is in none of {[str(r) for r in roots]}"
            )
        seq_root = where[0]
        available = len(list((seq_root / "JPEGImages" / "480p" / name).glob("*.jpg")))
        frames, masks, _ = load_davis_sequence(
            seq_root, name, num_frames=min(num_frames, available) if num_frames > 0 else None
        )
        h, w = frames.shape[1:3]
        size = (max(4, round(w * height / h / 4) * 4), height)
        fr = np.stack([cv2.resize(f, size, interpolation=cv2.INTER_AREA) for f in frames])
        ms = np.stack(
            [cv2.resize(m.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST) for m in masks]
        ).astype(bool)
        out.append((fr, ms))
    return out


def occluded_clip_stream(
    videos: Sequence[tuple[np.ndarray, np.ndarray]],
    rng: np.random.Generator,
    clip_len: int,
    *,
    skip: int = 0,
) -> Iterator[OccludedClip]:
    """Endless occluded clips of ``clip_len`` frames (object visible in every frame, some
    pixels occluded), drawn with ``rng``; the first ``skip`` clips are drawn and dropped."""
    made = 0
    while True:
        frames, masks = videos[int(rng.integers(len(videos)))]
        s = int(rng.integers(len(frames) - clip_len + 1))
        fr, ms = frames[s : s + clip_len], masks[s : s + clip_len]
        if not ms.any((1, 2)).all():
            continue
        clip = occlude_clip(
            fr,
            ms,
            synthetic_occluder(rng, size=48),
            rng=rng,
            occlusion_ratio=float(rng.uniform(0.2, 0.5)),
        )
        if clip.holes.any() and clip.visible.any((1, 2)).all():
            made += 1
            if made > skip:
                yield clip


def video_batches(clips: Iterator[OccludedClip], batch: int) -> Iterator[dict[str, Tensor]]:
    """Generator batches: ``frames`` / ``gt`` (B, T, 3, H, W) in [-1, 1], ``holes`` /
    ``amodal`` (B, T, 1, H, W) float 0/1."""
    while True:
        cs = [next(clips) for _ in range(batch)]
        yield {
            k: stack_video([getattr(c, k) for c in cs]) for k in ("frames", "gt", "holes", "amodal")
        }


def stack_video(arrays: Sequence[np.ndarray]) -> Tensor:
    """(T, H, W, 3) uint8 -> (B, T, 3, H, W) in [-1, 1]; (T, H, W) bool -> (B, T, 1, H, W)."""
    a = torch.from_numpy(np.stack(arrays))
    if a.ndim == 5:
        return a.permute(0, 1, 4, 2, 3).float() / 127.5 - 1
    return a[:, :, None].float()
