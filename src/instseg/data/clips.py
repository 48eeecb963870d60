"""Clip sampling for video training: (reference, key) frame pairs and fixed-length tubes.

Videos are given by their lengths (or anything with ``len()``, e.g. :class:`~instseg.data.
ytvis.Video`). Everything is deterministic for a given ``seed``; :class:`ClipSampler` mixes
the epoch into the seed so each epoch differs but is reproducible.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "FramePair",
    "Tube",
    "ClipSampler",
    "annotated_frames",
    "sample_frame_pairs",
    "sample_tubes",
    "memory_frames",
    "past_memory_frames",
]


@dataclass(frozen=True)
class FramePair:
    """Key frame (the one trained on) and a reference frame of the same video."""

    video: int
    key: int
    reference: int


@dataclass(frozen=True)
class Tube:
    """``frames`` of ``video``, increasing (repeats only when the video is shorter than T)."""

    video: int
    frames: tuple[int, ...]


def sample_frame_pairs(
    videos: Sequence[Any],
    *,
    max_gap: int,
    seed: int,
    num_pairs: int | None = None,
    valid: Sequence[Sequence[bool]] | None = None,
    past_only: bool = False,
) -> list[FramePair]:
    """Sample (key, reference) pairs with ``1 <= |key - reference| <= max_gap``.

    With ``num_pairs=None`` every valid frame is a key once (in shuffled order); otherwise
    ``num_pairs`` keys are drawn uniformly (with replacement) from all valid frames. The
    reference is uniform among the valid frames within ``max_gap`` of the key, other than the
    key; when there is none it equals the key. ``valid[v][t]`` marks usable frames (e.g. with
    at least one annotated object); default: all.

    ``past_only``: the reference is strictly earlier (``1 <= key - reference <= max_gap``), as
    an online model's memory; keys without a valid earlier frame in reach (e.g. frame 0) are
    not used, so there is no pair with ``reference == key``.
    """
    if max_gap < 1:
        raise ValueError(f"max_gap must be >= 1, got {max_gap}")
    lengths = _lengths(videos)
    rng = np.random.default_rng(seed)
    keys = [(v, t) for v, n in enumerate(lengths) for t in range(n) if _ok(valid, v, t)]
    if past_only:
        keys = [
            (v, t) for v, t in keys
            if any(_ok(valid, v, r) for r in range(max(0, t - max_gap), t))
        ]  # fmt: skip
    if not keys:
        raise ValueError("no valid frame to sample from")
    if num_pairs is None:
        order = rng.permutation(len(keys))
    else:
        order = rng.integers(0, len(keys), size=int(num_pairs))
    out = []
    for i in order:
        v, t = keys[int(i)]
        lo, hi = max(0, t - max_gap), min(lengths[v] - 1, t + max_gap)
        hi = t - 1 if past_only else hi
        cands = [r for r in range(lo, hi + 1) if r != t and _ok(valid, v, r)]
        ref = cands[int(rng.integers(len(cands)))] if cands else t
        out.append(FramePair(video=v, key=t, reference=ref))
    return out


def memory_frames(pair: FramePair, num: int, length: int) -> tuple[int, ...]:
    """``num`` frames continuing from the reference away from the key (the reference's own
    past when it precedes the key), clamped to ``[0, length - 1]``, oldest (farthest) first:
    the PCAM memory a key frame reads during training, beyond the reference."""
    step = -1 if pair.reference <= pair.key else 1
    out = [min(max(pair.reference + step * j, 0), length - 1) for j in range(1, num + 1)]
    return tuple(reversed(out))


def past_memory_frames(
    pair: FramePair, num: int, *, max_gap: int, rng: np.random.Generator
) -> tuple[int, ...]:
    """``num`` extra memory frames for a past reference (``pair.reference < pair.key``): drawn
    without replacement from the frames older than the reference but within ``max_gap`` of
    the key (``key - max_gap <= t < reference``), oldest first, so that memory, reference and
    key are in time order and every gap is one an online model with a memory of ``max_gap``
    frames reads. Too few such frames: the draw repeats them (none: the reference repeats)."""
    if pair.reference >= pair.key:
        raise ValueError(f"the reference must precede the key, got {pair}")
    pool = list(range(max(0, pair.key - max_gap), pair.reference))
    if num <= 0:
        return ()
    if not pool:
        return (pair.reference,) * num
    picks = rng.choice(len(pool), size=num, replace=num > len(pool))
    return tuple(sorted(pool[int(i)] for i in picks))


def sample_tubes(
    videos: Sequence[Any],
    *,
    length: int,
    num_tubes: int,
    seed: int,
    max_stride: int = 1,
) -> list[Tube]:
    """Draw ``num_tubes`` tubes of ``length`` frames: a video uniformly, a stride uniformly in
    1..``max_stride`` (capped so the tube fits), a start uniformly. A video shorter than
    ``length`` gives all its frames with the last one repeated."""
    if length < 1 or max_stride < 1:
        raise ValueError(f"length and max_stride must be >= 1, got {length}, {max_stride}")
    lengths = _lengths(videos)
    usable = [v for v, n in enumerate(lengths) if n > 0]
    if not usable:
        raise ValueError("no non-empty video to sample from")
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(int(num_tubes)):
        v = usable[int(rng.integers(len(usable)))]
        n = lengths[v]
        if n < length:
            frames = tuple(min(i, n - 1) for i in range(length))
        else:
            s_max = max(1, min(max_stride, (n - 1) // max(length - 1, 1)))
            stride = int(rng.integers(1, s_max + 1))
            start = int(rng.integers(0, n - (length - 1) * stride))
            frames = tuple(start + i * stride for i in range(length))
        out.append(Tube(video=v, frames=frames))
    return out


class ClipSampler:
    """Iterable over one epoch of :class:`FramePair` (``tube_length=None``) or :class:`Tube`.

    ``set_epoch(e)`` changes the draw (seed ``seed + e``), as ``DistributedSampler`` does.
    """

    def __init__(
        self,
        videos: Sequence[Any],
        *,
        seed: int,
        max_gap: int = 3,
        tube_length: int | None = None,
        max_stride: int = 1,
        num_samples: int | None = None,
        valid: Sequence[Sequence[bool]] | None = None,
    ) -> None:
        self.lengths = _lengths(videos)
        self.seed, self.max_gap, self.tube_length = seed, max_gap, tube_length
        self.max_stride, self.num_samples, self.valid = max_stride, num_samples, valid
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def samples(self) -> list[FramePair] | list[Tube]:
        seed = self.seed + self.epoch
        if self.tube_length is None:
            return sample_frame_pairs(
                self.lengths,
                max_gap=self.max_gap,
                seed=seed,
                num_pairs=self.num_samples,
                valid=self.valid,
            )
        n = self.num_samples if self.num_samples is not None else sum(self.lengths)
        return sample_tubes(
            self.lengths,
            length=self.tube_length,
            num_tubes=n,
            seed=seed,
            max_stride=self.max_stride,
        )

    def __iter__(self) -> Iterator[FramePair | Tube]:
        return iter(self.samples())

    def __len__(self) -> int:
        if self.num_samples is not None:
            return int(self.num_samples)
        if self.tube_length is None:
            return sum(
                1 for v, n in enumerate(self.lengths) for t in range(n) if _ok(self.valid, v, t)
            )
        return sum(self.lengths)


def annotated_frames(videos: Sequence[Any]) -> list[list[bool]]:
    """``valid`` mask for :func:`sample_frame_pairs`: frames where at least one track of a
    :class:`~instseg.data.ytvis.Video` is present."""
    return [[any(a.present(t) for a in v.annotations) for t in range(len(v))] for v in videos]


def _lengths(videos: Sequence[Any]) -> list[int]:
    return [int(v) if isinstance(v, (int, np.integer)) else len(v) for v in videos]


def _ok(valid: Sequence[Sequence[bool]] | None, v: int, t: int) -> bool:
    return True if valid is None else bool(valid[v][t])
