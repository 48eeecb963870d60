"""Pieces several commands share: the ``--amp`` option and reading a video source."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterator
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


def run_on_frames(
    args: argparse.Namespace,
    prog: str,
    job: Callable[[argparse.Namespace, Iterator, Path, float], int],
) -> int:
    """The frame-by-frame commands' shell: read ``args.source`` (a video or a folder of
    frames; frames are (name, RGB uint8, _) tuples), create ``args.out/masks``, run
    ``job(args, frames, out, fps) -> frames written`` and print one summary line. A missing or
    empty source, or a FileNotFoundError / ValueError / CheckpointError of the job, is one line
    naming the problem and exit status 2."""
    from instseg.engine.checkpoint import CheckpointError
    from instseg.utils.sources import is_video, iter_source, video_fps

    try:
        source = iter_source(args.source)
        first = next(source, None)
    except (FileNotFoundError, OSError) as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return 2
    if first is None:
        print(f"{prog}: {args.source}: no frames", file=sys.stderr)
        return 2
    fps = args.fps or (video_fps(args.source) if is_video(args.source) else 24.0)
    out = Path(args.out)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    try:
        n = job(args, chain_first(first, source), out, fps)
    except (FileNotFoundError, ValueError, CheckpointError) as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return 2
    print(f"{prog}: {n} frames -> {out}")
    return 0


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
