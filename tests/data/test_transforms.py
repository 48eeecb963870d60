from __future__ import annotations

import pytest
import torch

from instseg.data.transforms import (
    Compose,
    RandomCrop,
    RandomHorizontalFlip,
    ResizeShortestEdge,
    build_transforms,
    resize,
)
from instseg.structures import Instances, masks_to_boxes


def scene(h: int = 12, w: int = 16, *, with_masks: bool = True) -> tuple[torch.Tensor, Instances]:
    """Two rectangles: 0 at rows 1..4 / cols 2..6, 1 at rows 6..11 / cols 10..15."""
    g = torch.Generator().manual_seed(0)
    image = torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=g)
    masks = torch.zeros(2, h, w, dtype=torch.bool)
    masks[0, 1:5, 2:7] = True
    masks[1, 6:12, 10:16] = True
    amodal = masks.clone()
    amodal[1, 4:12, 8:16] = True
    occluder = torch.zeros_like(masks)
    occluder[1, 0:3, 0:3] = True
    return image, Instances(
        image_size=(h, w),
        boxes=masks_to_boxes(masks),
        labels=torch.tensor([3, 1]),
        masks=masks if with_masks else None,
        amodal_masks=amodal if with_masks else None,
        occluder_masks=occluder if with_masks else None,
        depth=torch.tensor([0, 1]),
        extra={"ids": torch.tensor([7, 8])},
    )


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_resize_upscale_by_two_is_exact_for_masks_and_boxes() -> None:
    image, inst = scene()
    img2, out = resize(image, inst, (24, 32))
    assert img2.dtype == torch.uint8 and img2.shape == (3, 24, 32)
    assert out.image_size == (24, 32)
    for name in ("masks", "amodal_masks", "occluder_masks"):
        before, after = getattr(inst, name), getattr(out, name)
        assert after.dtype == torch.bool and after.shape == (2, 24, 32)
        expected = before.repeat_interleave(2, 1).repeat_interleave(2, 2)
        assert torch.equal(after, expected), name
    assert torch.equal(out.boxes, inst.boxes * 2)
    assert torch.equal(out.boxes, masks_to_boxes(out.masks))  # type: ignore[arg-type]
    assert out.depth.tolist() == [0, 1] and out.extra["ids"].tolist() == [7, 8]  # type: ignore[union-attr]
    # a constant image stays constant (antialiased bilinear keeps flat regions)
    flat = torch.full((3, 12, 16), 77, dtype=torch.uint8)
    assert (resize(flat, inst, (5, 7))[0] == 77).all()


def test_resize_shortest_edge_sizes_and_cap() -> None:
    image, inst = scene(12, 16)
    img, out = ResizeShortestEdge(short_edges=(24,), max_size=1000)(image, inst)
    assert img.shape[-2:] == (24, 32) and out.image_size == (24, 32)
    img, out = ResizeShortestEdge(short_edges=24, max_size=20)(image, inst)
    assert img.shape[-2:] == (15, 20)  # long side capped at 20
    assert out.masks.shape[-2:] == (15, 20)  # type: ignore[union-attr]


def test_resize_shortest_edge_choice_and_range_are_seeded() -> None:
    image, inst = scene(12, 16)
    choice = ResizeShortestEdge(short_edges=(6, 12, 18), max_size=1000, sample="choice")
    shorts = {choice(image, inst, generator=gen(s))[0].shape[-2] for s in range(30)}
    assert shorts == {6, 12, 18}
    rng = ResizeShortestEdge(short_edges=(6, 18), max_size=1000, sample="range")
    sizes = [rng(image, inst, generator=gen(s))[0].shape[-2] for s in range(40)]
    assert min(sizes) >= 6 and max(sizes) <= 18 and len(set(sizes)) > 4
    a = rng(image, inst, generator=gen(5))
    b = rng(image, inst, generator=gen(5))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1].masks, b[1].masks)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        ResizeShortestEdge(short_edges=(), max_size=10)
    with pytest.raises(ValueError):
        ResizeShortestEdge(short_edges=(4,), max_size=10, sample="uniform")  # type: ignore[arg-type]


def test_resize_drops_instances_whose_masks_vanish() -> None:
    image, inst = scene()
    tiny = torch.zeros_like(inst.masks)  # type: ignore[arg-type]
    tiny[0, 0, 0] = True
    tiny[1, 4:12, 4:12] = True
    inst = inst.replace(masks=tiny, amodal_masks=tiny.clone(), boxes=masks_to_boxes(tiny))
    _, out = resize(image, inst, (3, 4))
    assert out.extra["ids"].tolist() == [8]


def test_flip_all_mask_kinds_and_boxes() -> None:
    image, inst = scene()
    img, out = RandomHorizontalFlip(p=1.0)(image, inst)
    assert torch.equal(img, image.flip(-1))
    for name in ("masks", "amodal_masks", "occluder_masks"):
        assert torch.equal(getattr(out, name), getattr(inst, name).flip(-1))
    assert torch.equal(out.boxes, masks_to_boxes(out.masks))  # type: ignore[arg-type]
    same_img, same = RandomHorizontalFlip(p=0.0)(image, inst)
    assert same_img is image and same is inst
    flips = [RandomHorizontalFlip(p=0.5)(image, inst, generator=gen(s))[0] for s in range(20)]
    n_flipped = sum(torch.equal(f, image.flip(-1)) for f in flips)
    assert 0 < n_flipped < 20


def test_crop_keeps_nonempty_instances_and_recomputes_boxes() -> None:
    image, inst = scene()
    crop = RandomCrop(size=(6, 8))
    seen_both = seen_one = False
    for s in range(40):
        img, out = crop(image, inst, generator=gen(s))
        assert img.shape == (3, 6, 8) and out.image_size == (6, 8)
        assert out.masks is not None and out.amodal_masks is not None
        assert (out.masks.flatten(1).any(1) | out.amodal_masks.flatten(1).any(1)).all()
        visible = out.masks.flatten(1).any(1)
        assert torch.equal(out.boxes[visible], masks_to_boxes(out.masks[visible]))
        assert out.occluder_masks is not None and out.occluder_masks.shape == (len(out), 6, 8)
        seen_both |= len(out) == 2
        seen_one |= len(out) == 1
    assert seen_one and seen_both  # windows that miss an instance drop it
    # an explicit window: the crop of every mask kind is the same window
    from instseg.data.transforms import crop as crop_fn

    img, out = crop_fn(image, inst, (4, 8, 8, 8))
    assert torch.equal(img, image[:, 4:12, 8:16])
    assert out.extra["ids"].tolist() == [8]  # instance 0 (cols 2..6) is gone
    assert torch.equal(out.amodal_masks[0], inst.amodal_masks[1, 4:12, 8:16])  # type: ignore[index]
    assert out.boxes.tolist() == [[2.0, 2.0, 8.0, 8.0]]


def test_crop_without_masks_clips_boxes() -> None:
    image, inst = scene(with_masks=False)
    from instseg.data.transforms import crop as crop_fn

    _, out = crop_fn(image, inst, (0, 0, 8, 8))
    assert out.extra["ids"].tolist() == [7]  # box 1 starts at x=10: zero area after clipping
    assert out.boxes.tolist() == [[2.0, 1.0, 7.0, 5.0]]
    _, part = crop_fn(image, inst, (0, 4, 8, 8))
    assert part.boxes[0].tolist() == [0.0, 1.0, 3.0, 5.0]


def test_relative_crop_and_validation() -> None:
    image, inst = scene(12, 16)
    img, _ = RandomCrop(size=(0.5, 0.25), kind="relative")(image, inst, generator=gen(0))
    assert img.shape[-2:] == (6, 4)
    img, _ = RandomCrop(size=(100, 100))(image, inst, generator=gen(0))
    assert img.shape[-2:] == (12, 16)  # capped at the image size
    with pytest.raises(ValueError):
        RandomCrop(size=(1.5, 0.5), kind="relative")
    with pytest.raises(ValueError):
        RandomCrop(size=(0, 4))


def test_build_transforms_train_and_test() -> None:
    image, inst = scene(12, 16)
    test_t = build_transforms(train=False, min_size=(18, 24), max_size=1000)
    assert isinstance(test_t, Compose) and len(test_t.transforms) == 1
    a = test_t(image, inst)
    b = test_t(image, inst)
    assert a[0].shape[-2:] == (24, 32) and torch.equal(a[0], b[0])
    train_t = build_transforms(
        train=True, min_size=(12, 24), max_size=1000, sample="range", crop_size=(0.5, 0.5)
    )
    assert [type(t).__name__ for t in train_t.transforms] == [
        "RandomCrop",
        "ResizeShortestEdge",
        "RandomHorizontalFlip",
    ]
    x1 = train_t(image, inst, generator=gen(3))
    x2 = train_t(image, inst, generator=gen(3))
    assert torch.equal(x1[0], x2[0]) and torch.equal(x1[1].boxes, x2[1].boxes)
    for s in range(10):
        img, out = train_t(image, inst, generator=gen(s))
        assert 12 <= min(img.shape[-2:]) <= 24
        assert out.image_size == tuple(img.shape[-2:])
        assert out.masks is not None and out.masks.shape[-2:] == img.shape[-2:]


def test_build_transforms_without_flip() -> None:
    names = [
        type(t).__name__
        for t in build_transforms(train=True, min_size=8, max_size=20, flip=False).transforms
    ]
    assert names == ["ResizeShortestEdge"]
