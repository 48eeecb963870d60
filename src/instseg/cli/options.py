"""Pieces several commands share: the ``--amp``, ``--strict`` and detection-filter options
(``--conf``, ``--max-det``, ``--classes``) and reading a video source."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from instseg.utils.precision import AMP_CHOICES
from instseg.utils.sources import SourceReader


def add_amp_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--amp",
        default="auto",
        choices=AMP_CHOICES,
        help="autocast precision; auto: bf16 on CPUs with native bf16 and on recent GPUs, "
        "else fp32 (none)",
    )


def add_strict_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--strict",
        action="store_true",
        help="stop at the first unreadable image or frame (default: skip it with a warning "
        "and report the count at the end)",
    )


def add_filter_arguments(p: argparse.ArgumentParser, *, conf: float = 0.25) -> None:
    """``--conf`` (alias ``--score-thresh``), ``--max-det``, ``--classes``: what is drawn and
    saved (:mod:`instseg.inference.filtering`)."""
    p.add_argument(
        "--conf",
        "--score-thresh",
        dest="conf",
        type=_unit_float,
        default=conf,
        help=f"keep detections scoring at least this (default {conf})",
    )
    p.add_argument(
        "--max-det",
        type=_positive_int,
        default=100,
        help="keep at most this many detections per image / frame, highest scores (default 100)",
    )
    p.add_argument(
        "--classes",
        nargs="+",
        default=None,
        metavar="CLASS",
        help="keep only these classes: names or the category ids of results.json "
        "(space- or comma-separated)",
    )


def class_choice(args: argparse.Namespace) -> list[str] | None:
    """``--classes`` values split at commas (None when not given)."""
    if not getattr(args, "classes", None):
        return None
    return [c.strip() for item in args.classes for c in item.split(",") if c.strip()]


def _unit_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}") from None
    if not 0.0 <= v <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}")
    return v


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        v = 0
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return v


class FrameStream(Iterator):
    """The frames of a :class:`~instseg.utils.sources.SourceReader` (first one already read):
    ``(name, RGB uint8 (H, W, 3), path or None)`` tuples; :attr:`index` is the source position
    of the frame just yielded (unreadable frames that were skipped count)."""

    def __init__(self, reader: SourceReader, first: tuple, rest: Iterator) -> None:
        self.reader = reader
        self._items = chain_first(first, rest)

    def __next__(self) -> tuple:
        return next(self._items)

    @property
    def index(self) -> int:
        return self.reader.index


def run_on_frames(
    args: argparse.Namespace,
    prog: str,
    job: Callable[[argparse.Namespace, Iterator, Path, float], int],
) -> int:
    """The frame-by-frame commands' shell: read ``args.source`` (a video or a folder of
    frames; frames are (name, RGB uint8, _) tuples, a :class:`FrameStream`), create
    ``args.out/masks``, run ``job(args, frames, out, fps) -> frames written`` and print one
    summary line. Unreadable frames are skipped with a warning each and counted in the summary
    (``args.strict``: the first one is an error). A missing or empty source raises a
    :class:`~instseg.utils.errors.UserError` (one line and exit status 2 from ``main``)."""
    from instseg.utils.errors import InvalidInputError, MissingFileError, UserError
    from instseg.utils.sources import is_video, video_fps

    strict = bool(getattr(args, "strict", False))
    reader = SourceReader(args.source, strict=strict, warn=_warn(prog))
    source = iter(reader)
    first = next(source, None)
    if first is None:
        raise InvalidInputError(f"{args.source}: no readable frames")
    fps = args.fps or (video_fps(args.source) if is_video(args.source) else 24.0)
    out = Path(args.out)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    try:
        n = job(args, FrameStream(reader, first, source), out, fps)
    except (FileNotFoundError, ValueError) as e:  # the jobs' input checks: user errors
        if isinstance(e, UserError):
            raise
        raise (MissingFileError if isinstance(e, FileNotFoundError) else InvalidInputError)(
            str(e)
        ) from e
    skipped = f" ({reader.summary()})" if reader.skipped else ""
    print(f"{prog}: {n} frames -> {out}{skipped}")
    return 0


def _warn(prog: str) -> Callable[[str], None]:
    def warn(message: str) -> None:
        print(f"{prog}: warning: {message}", file=sys.stderr)

    return warn


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
