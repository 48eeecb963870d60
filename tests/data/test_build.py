from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist

from instseg.data.build import (
    InferenceSampler,
    TrainingSampler,
    build_test_loader,
    build_train_loader,
    collate_samples,
    dist_info,
)
from instseg.data.transforms import RandomHorizontalFlip, ResizeShortestEdge
from instseg.structures import Instances
from instseg.structures.batch import Batch


class TinyDataset:
    """Image i is constant i (so its identity is visible after collation); sizes vary; random
    transforms use the generator passed to ``get``."""

    def __init__(self, n: int = 10, transforms: Any = None) -> None:
        self.n, self.transforms = n, transforms

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.get(i)

    def get(self, i: int, *, generator: torch.Generator | None = None) -> dict[str, Any]:
        h, w = 8 + i % 3, 10 + i % 4
        image = torch.full((3, h, w), i, dtype=torch.uint8)
        image[:, :, 0] = 200  # left column marks whether a flip happened
        masks = torch.zeros(1, h, w, dtype=torch.bool)
        masks[0, 1:4, 1:5] = True
        inst = Instances(
            image_size=(h, w),
            boxes=torch.tensor([[1.0, 1.0, 5.0, 4.0]]),
            labels=torch.tensor([i % 2]),
            masks=masks,
        )
        if self.transforms is not None:
            image, inst = self.transforms(image, inst, generator=generator)
        return {
            "image": image,
            "instances": inst,
            "image_id": 100 + i,
            "file_name": f"{i}.png",
            "orig_size": (h, w),
        }


def ids(batch: Batch) -> list[int]:
    return [i - 100 for i in batch.image_ids]


def test_training_sampler_is_deterministic_sharded_and_resumable() -> None:
    def take(n: int, **kw: Any) -> list[tuple[int, int]]:
        return list(itertools.islice(iter(TrainingSampler(10, **kw)), n))

    a = take(25, seed=3, rank=0, world_size=1)
    assert a == take(25, seed=3, rank=0, world_size=1)
    assert [i for i, _ in a] != [i for i, _ in take(25, seed=4, rank=0, world_size=1)]
    assert sorted(i for i, _ in a[:10]) == list(range(10))  # one epoch is a permutation
    assert sorted(i for i, _ in a[10:20]) == list(range(10))
    assert len({s for _, s in a}) == 25  # every position has its own augmentation seed
    # two ranks: together they walk the single-process stream, interleaved
    r0 = take(10, seed=3, rank=0, world_size=2)
    r1 = take(10, seed=3, rank=1, world_size=2)
    assert [x for pair in zip(r0, r1, strict=False) for x in pair] == take(
        20, seed=3, rank=0, world_size=1
    )
    assert set(i for i, _ in r0[:5]).isdisjoint(i for i, _ in r1[:5])  # epoch 0 split, no overlap
    # resuming skips exactly `start` items
    assert (
        take(7, seed=3, rank=1, world_size=2, start=6)
        == r1[6:] + take(13, seed=3, rank=1, world_size=2)[10:13]
    )
    unshuffled = take(12, shuffle=False, rank=0, world_size=1)
    assert [i for i, _ in unshuffled] == list(range(10)) + [0, 1]
    with pytest.raises(ValueError):
        TrainingSampler(0)
    with pytest.raises(ValueError):
        TrainingSampler(5, rank=2, world_size=2)


@pytest.mark.parametrize("size", [0, 1, 5, 7, 16])
@pytest.mark.parametrize("world", [1, 2, 3, 4])
def test_inference_sampler_partitions_without_duplicates(size: int, world: int) -> None:
    shards = [list(InferenceSampler(size, rank=r, world_size=world)) for r in range(world)]
    assert [i for s in shards for i in s] == list(range(size))
    assert max(map(len, shards)) - min(map(len, shards)) <= 1
    assert [len(InferenceSampler(size, rank=r, world_size=world)) for r in range(world)] == [
        len(s) for s in shards
    ]


def test_collate_samples_pads_and_keeps_metadata() -> None:
    ds = TinyDataset()
    batch = collate_samples([ds[0], ds[5]], size_divisibility=32)
    assert isinstance(batch, Batch) and len(batch) == 2
    assert batch.images.dtype == torch.float32 and batch.images.shape == (2, 3, 32, 32)
    assert batch.image_sizes == [(8, 10), (10, 11)]
    assert batch.images[1, 0, 1, 1].item() == 5.0 and batch.images[1, :, 10:].abs().sum() == 0
    assert batch.images[0, :, :8, :10].max() == 200.0
    assert batch.targets is not None and batch.targets[1].labels.tolist() == [1]
    assert batch.image_ids == [100, 105] and batch.file_names == ["0.png", "5.png"]
    assert batch.orig_sizes == [(8, 10), (10, 11)]
    no_targets = collate_samples([{"image": torch.zeros(3, 4, 4, dtype=torch.uint8)}], 1)
    assert no_targets.targets is None and no_targets.images.shape == (1, 3, 4, 4)
    assert no_targets.image_ids == [-1]
    with pytest.raises(ValueError):
        collate_samples([])


def test_train_loader_resume_reproduces_the_stream_including_augmentation() -> None:
    ds = TinyDataset(7, transforms=RandomHorizontalFlip(p=0.5))
    full = list(itertools.islice(iter(build_train_loader(ds, batch_size=3, seed=11)), 5))
    assert all(len(b) == 3 for b in full)
    resumed = list(
        itertools.islice(iter(build_train_loader(ds, batch_size=3, seed=11, start_iter=2)), 3)
    )
    for a, b in zip(full[2:], resumed, strict=False):
        assert ids(a) == ids(b) and torch.equal(a.images, b.images)
    flipped = [bool(b.images[k, 0, 0, 0] != 200) for b in full for k in range(3)]
    assert any(flipped) and not all(flipped)  # augmentation really random, yet reproducible
    other = list(itertools.islice(iter(build_train_loader(ds, batch_size=3, seed=12)), 5))
    assert [ids(b) for b in other] != [ids(b) for b in full]


def test_train_loader_with_workers_matches_main_process() -> None:
    ds = TinyDataset(6, transforms=ResizeShortestEdge(short_edges=(8, 16), max_size=64))
    main = list(itertools.islice(iter(build_train_loader(ds, batch_size=2, seed=5)), 3))
    loader = build_train_loader(ds, batch_size=2, seed=5, num_workers=1)
    workers = list(itertools.islice(iter(loader), 3))
    for a, b in zip(main, workers, strict=False):
        assert ids(a) == ids(b) and torch.equal(a.images, b.images)
        assert a.image_sizes == b.image_sizes
    del loader


def test_train_loader_ranks_get_different_batches() -> None:
    ds = TinyDataset(8)
    r0 = next(iter(build_train_loader(ds, batch_size=4, seed=0, rank=0, world_size=2)))
    r1 = next(iter(build_train_loader(ds, batch_size=4, seed=0, rank=1, world_size=2)))
    assert sorted(ids(r0) + ids(r1)) == list(range(8))


def test_test_loader_covers_dataset_once_across_ranks() -> None:
    ds = TinyDataset(7)
    seen = []
    for r in range(3):
        for b in build_test_loader(ds, batch_size=2, rank=r, world_size=3):
            seen += ids(b)
    assert seen == list(range(7))


def test_dist_info_reads_an_initialised_process_group(tmp_path: Path) -> None:
    assert dist_info() == (0, 1)
    assert dist_info(1, 4) == (1, 4)
    dist.init_process_group(
        "gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1
    )
    try:
        assert dist_info() == (0, 1)
        s = InferenceSampler(5)
        assert (s.rank, s.world_size) == (0, 1) and list(s) == list(range(5))
    finally:
        dist.destroy_process_group()
