"""Pieces several commands share: the ``--amp`` option and reading a video source."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from instseg.utils.precision import AMP_CHOICES


def add_amp_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--amp",
        default="auto",
        choices=AMP_CHOICES,
        help="autocast precision; auto: bf16 on CPUs with native bf16 and on recent GPUs, "
        "else fp32 (none)",
    )


def open_frames(args: argparse.Namespace, prog: str) -> tuple[Iterator, float] | None:
    """(frames, fps) of ``args.source`` (a video or a folder of frames; frames are
    (name, RGB uint8, _) tuples) and creates ``args.out/masks``; None after printing one line
    naming the source when it is missing or has no frames."""
    from instseg.utils.sources import is_video, iter_source, video_fps

    try:
        source = iter_source(args.source)
        first = next(source, None)
    except (FileNotFoundError, OSError) as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return None
    if first is None:
        print(f"{prog}: {args.source}: no frames", file=sys.stderr)
        return None
    fps = args.fps or (video_fps(args.source) if is_video(args.source) else 24.0)
    (Path(args.out) / "masks").mkdir(parents=True, exist_ok=True)
    return chain_first(first, source), fps


def chain_first(first: tuple, rest: Iterator) -> Iterator:
    yield first
    yield from rest


def drain_to_video(frames: Iterator[np.ndarray], path: Path, fps: float, *, render: bool) -> None:
    """Drain ``frames`` (the side effects write the outputs), encoding them to ``path`` when
    ``render``."""
    if not render:
        for _ in frames:
            pass
        return
    from instseg.utils.video_writer import write_video

    write_video(path, frames, fps=fps)
