"""Loaders: seeded infinite training stream sharded by rank, duplicate-free inference split,
and collation into :class:`~instseg.structures.batch.Batch`.

Training stream: every rank draws the same per-epoch permutations of ``range(len(dataset))``
(``torch.randperm`` seeded with ``seed`` and the epoch) laid end to end; rank ``r`` of ``W`` takes
global positions ``r, r + W, r + 2W, ...``. So ranks see different samples, the stream is a pure
function of ``(seed, rank, world_size)``, and resuming at ``start_iter`` jumps straight to position
``start_iter * batch_size`` (no replay). Each sample also gets its own augmentation seed derived
from its global position, so augmentation is identical whatever ``num_workers`` is and after a
resume.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, Sampler

from instseg.structures.batch import Batch, collate_images

__all__ = [
    "TrainingSampler",
    "InferenceSampler",
    "build_train_loader",
    "build_test_loader",
    "collate_samples",
    "dist_info",
]

_MIX = 0x9E3779B97F4A7C15  # golden-ratio constant to spread (seed, position) over 63 bits


def dist_info(rank: int | None = None, world_size: int | None = None) -> tuple[int, int]:
    """(rank, world_size) from torch.distributed when initialised, else (0, 1).

    Explicit ``rank``/``world_size`` arguments win (tests, custom launchers)."""
    initialised = dist.is_available() and dist.is_initialized()
    r = rank if rank is not None else (dist.get_rank() if initialised else 0)
    w = world_size if world_size is not None else (dist.get_world_size() if initialised else 1)
    if not 0 <= r < w:
        raise ValueError(f"rank {r} out of range for world_size {w}")
    return r, w


class TrainingSampler(Sampler[tuple[int, int]]):
    """Infinite stream of ``(dataset_index, sample_seed)`` for one rank (see module docstring).

    ``start`` is the number of samples of this rank's stream to skip (``start_iter * batch``).
    """

    def __init__(
        self,
        size: int,
        *,
        seed: int = 0,
        shuffle: bool = True,
        rank: int | None = None,
        world_size: int | None = None,
        start: int = 0,
    ) -> None:
        if size <= 0:
            raise ValueError(f"TrainingSampler needs a non-empty dataset, got size {size}")
        self.size, self.seed, self.shuffle, self.start = size, seed, shuffle, start
        self.rank, self.world_size = dist_info(rank, world_size)

    def _perm(self, epoch: int) -> list[int]:
        if not self.shuffle:
            return list(range(self.size))
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.size, generator=g).tolist()

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch, perm = -1, []
        for p in itertools.count(self.start):
            g = p * self.world_size + self.rank  # global position
            e, off = divmod(g, self.size)
            if e != epoch:
                epoch, perm = e, self._perm(e)
            yield perm[off], sample_seed(self.seed, g)


def sample_seed(seed: int, position: int) -> int:
    """Augmentation seed of the sample at global ``position`` of the stream seeded ``seed``."""
    return ((seed + 1) * _MIX + position * 0xBF58476D1CE4E5B9) % (2**63 - 1)


class InferenceSampler(Sampler[int]):
    """Contiguous, duplicate-free shard of ``range(size)``: shard sizes differ by at most one, the
    shards of all ranks concatenated in rank order are ``0..size-1``."""

    def __init__(
        self, size: int, *, rank: int | None = None, world_size: int | None = None
    ) -> None:
        self.size = size
        self.rank, self.world_size = dist_info(rank, world_size)
        per, extra = divmod(size, self.world_size)
        self.begin = self.rank * per + min(self.rank, extra)
        self.end = self.begin + per + (1 if self.rank < extra else 0)

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.begin, self.end))

    def __len__(self) -> int:
        return self.end - self.begin


class _SeededView(Dataset):
    """Maps ``(index, seed)`` keys to ``dataset.get(index, generator=<seeded>)`` (or plain
    ``dataset[index]`` for datasets without ``get``)."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> Any:
        index, seed = key
        if hasattr(self.dataset, "get"):
            return self.dataset.get(index, generator=torch.Generator().manual_seed(seed))
        return self.dataset[index]


def collate_samples(samples: Sequence[dict[str, Any]], size_divisibility: int = 32) -> Batch:
    """Dataset samples -> :class:`Batch` (images float32 in [0, 255], zero padded bottom/right).

    ``targets`` is None when the samples carry no ``"instances"``.
    """
    if not samples:
        raise ValueError("collate_samples needs at least one sample")
    images, sizes = collate_images([s["image"].float() for s in samples], size_divisibility)
    has_targets = all(s.get("instances") is not None for s in samples)
    return Batch(
        images=images,
        image_sizes=sizes,
        targets=[s["instances"] for s in samples] if has_targets else None,
        image_ids=[int(s.get("image_id", -1)) for s in samples],
        orig_sizes=[tuple(s.get("orig_size", sz)) for s, sz in zip(samples, sizes, strict=False)],
        file_names=[str(s.get("file_name", "")) for s in samples],
    )


def _worker_init(worker_id: int) -> None:
    # torch seeds each worker from the loader's generator; make numpy/random follow it
    import random

    import numpy as np

    s = torch.initial_seed() % 2**32
    random.seed(s)
    np.random.seed(s)


def build_train_loader(
    dataset: Any,
    *,
    batch_size: int,
    num_workers: int = 0,
    seed: int = 0,
    size_divisibility: int = 32,
    start_iter: int = 0,
    rank: int | None = None,
    world_size: int | None = None,
    shuffle: bool = True,
    collate_fn: Callable[[list[Any]], Any] | None = None,
) -> DataLoader:
    """Infinite loader of :class:`Batch` (``batch_size`` images per rank per step); another
    ``collate_fn`` (e.g. video clip pairs) may replace :func:`collate_samples`. The dataset
    needs ``get(index, *, generator)``.

    Iteration ``i`` of a loader built with ``start_iter=s`` equals iteration ``s + i`` of one
    built with ``start_iter=0`` (same seed, rank and world size).
    """
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    sampler = TrainingSampler(
        len(dataset),
        seed=seed,
        shuffle=shuffle,
        rank=rank,
        world_size=world_size,
        start=start_iter * batch_size,
    )
    return DataLoader(
        _SeededView(dataset),
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        collate_fn=collate_fn or partial(collate_samples, size_divisibility=size_divisibility),
        drop_last=True,
        worker_init_fn=_worker_init if num_workers > 0 else None,
        generator=torch.Generator().manual_seed(seed),
        persistent_workers=num_workers > 0,
    )


def build_test_loader(
    dataset: Any,
    *,
    batch_size: int = 1,
    num_workers: int = 0,
    size_divisibility: int = 32,
    rank: int | None = None,
    world_size: int | None = None,
) -> DataLoader:
    """Finite loader over this rank's duplicate-free shard, in dataset order."""
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=InferenceSampler(len(dataset), rank=rank, world_size=world_size),
        num_workers=num_workers,
        collate_fn=partial(collate_samples, size_divisibility=size_divisibility),
        drop_last=False,
    )
