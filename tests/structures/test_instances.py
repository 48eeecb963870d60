from __future__ import annotations

import pytest
import torch

from instseg.structures import Instances


def _make(n: int = 4, h: int = 5, w: int = 6, offset: int = 0) -> Instances:
    g = torch.Generator().manual_seed(n + offset)
    return Instances(
        image_size=(h, w),
        boxes=torch.arange(n * 4, dtype=torch.float32).reshape(n, 4) + offset,
        labels=torch.arange(n) + offset,
        masks=torch.rand(n, h, w, generator=g) > 0.5,
        amodal_masks=torch.rand(n, h, w, generator=g) > 0.5,
        depth=torch.arange(n),
        extra={"iscrowd": torch.zeros(n, dtype=torch.long), "ids": torch.arange(n) + 100},
    )


def test_int_slice_bool_and_list_indexing() -> None:
    inst = _make()
    one = inst[1]
    assert len(one) == 1 and one.labels.tolist() == [1]
    assert one.masks is not None and one.masks.shape == (1, 5, 6)
    assert torch.equal(one.masks[0], inst.masks[1])  # type: ignore[index]
    assert inst[-1].labels.tolist() == [3]
    assert inst[1:3].extra["ids"].tolist() == [101, 102]
    sel = inst[torch.tensor([True, False, True, False])]
    assert sel.labels.tolist() == [0, 2] and sel.depth.tolist() == [0, 2]  # type: ignore[union-attr]
    assert inst[[3, 0]].boxes[:, 0].tolist() == [12.0, 0.0]
    assert inst[torch.tensor([], dtype=torch.long)].boxes.shape == (0, 4)
    assert inst[1].image_size == (5, 6)


def test_int_index_out_of_range() -> None:
    with pytest.raises(IndexError):
        _make(3)[3]
    with pytest.raises(IndexError):
        _make(3)[-4]


def test_cat_concatenates_every_field() -> None:
    a, b = _make(2), _make(3, offset=10)
    c = Instances.cat([a, b])
    assert len(c) == 5
    assert c.labels.tolist() == [0, 1, 10, 11, 12]
    assert torch.equal(c.masks[2:], b.masks)  # type: ignore[index]
    assert c.extra["ids"].tolist() == [100, 101, 100, 101, 102]
    assert c.scores is None


def test_cat_rejects_mismatches() -> None:
    a = _make(2)
    with pytest.raises(ValueError, match="at least one"):
        Instances.cat([])
    with pytest.raises(ValueError, match="image_size"):
        Instances.cat([a, _make(2, h=7)])
    with pytest.raises(ValueError, match="amodal_masks"):
        Instances.cat([a, a.replace(amodal_masks=None)])
    with pytest.raises(ValueError, match="extra"):
        Instances.cat([a, a.replace(extra={})])


def test_to_converts_floats_only_and_keeps_int_and_bool_dtypes() -> None:
    inst = _make()
    half = inst.to(torch.float64)
    assert half.boxes.dtype == torch.float64
    assert half.labels.dtype == torch.long and half.masks.dtype == torch.bool  # type: ignore[union-attr]
    moved = inst.to("cpu")
    assert moved.boxes.device.type == "cpu" and torch.equal(moved.boxes, inst.boxes)
    moved = inst.to(device="cpu")
    assert torch.equal(moved.extra["ids"], inst.extra["ids"])


def test_validation_of_shapes() -> None:
    with pytest.raises(ValueError, match=r"boxes must be \(N, 4\)"):
        Instances(image_size=(2, 2), boxes=torch.zeros(3, 5), labels=torch.zeros(3))
    with pytest.raises(ValueError, match="labels has 2 rows"):
        Instances(image_size=(2, 2), boxes=torch.zeros(3, 4), labels=torch.zeros(2))
    with pytest.raises(ValueError, match="extra.ids has 1 rows"):
        Instances(
            image_size=(2, 2),
            boxes=torch.zeros(3, 4),
            labels=torch.zeros(3),
            extra={"ids": torch.zeros(1)},
        )
    with pytest.raises(ValueError, match="masks has 1 rows"):
        _make(2).replace(masks=torch.zeros(1, 5, 6, dtype=torch.bool))


def test_empty_and_repr() -> None:
    e = Instances.empty((4, 5))
    assert len(e) == 0 and e.masks is not None and e.masks.shape == (0, 4, 5)
    assert Instances.empty((4, 5), with_masks=False).masks is None
    assert "num=4" in repr(_make()) and "amodal_masks" in repr(_make())
    assert Instances(
        image_size=[3.0, 2.0], boxes=torch.zeros(0, 4), labels=torch.zeros(0)
    ).image_size == (3, 2)


def test_typed_has_mask_and_mask_logits_follow_indexing_and_cat():
    inst = Instances(
        image_size=(4, 4),
        boxes=torch.zeros(3, 4),
        labels=torch.zeros(3, dtype=torch.long),
        has_mask=torch.tensor([True, False, True]),
        mask_logits=torch.randn(3, 1, 28, 28),
    )
    sub = inst[torch.tensor([False, True, True])]
    assert sub.has_mask.tolist() == [False, True] and sub.mask_logits.shape == (2, 1, 28, 28)
    both = Instances.cat([inst, sub])
    assert both.has_mask.tolist() == [True, False, True, False, True]
    with pytest.raises(ValueError, match="has_mask has 2 rows"):
        inst.replace(has_mask=torch.tensor([True, False]))
