"""compute_occluder_masks (depth and overlap rules), box helpers, occluded_instance_ids."""

from __future__ import annotations

import pytest
import torch
from torchvision.ops import box_iou

from instseg.data.occlusion import (
    box_overlap,
    box_regions,
    compute_occluder_masks,
    occluded_instance_ids,
)
from instseg.structures.masks import masks_to_boxes


def _rects(size: tuple[int, int], rects: list[tuple[int, int, int, int]]) -> torch.Tensor:
    """xyxy integer rectangles -> (N, H, W) bool masks."""
    out = torch.zeros(len(rects), *size, dtype=torch.bool)
    for i, (x0, y0, x1, y1) in enumerate(rects):
        out[i, y0:y1, x0:x1] = True
    return out


def _two_squares():
    """A = [2,10)^2 in front (depth 0) of B = [6,14)^2 (depth 1); B's visible mask lacks A."""
    amodal = _rects((20, 20), [(2, 2, 10, 10), (6, 6, 14, 14)])
    visible = amodal.clone()
    visible[1] &= ~amodal[0]
    return visible, amodal, torch.tensor([0, 1])


def test_depth_rule_two_overlapping_squares_exact():
    visible, amodal, depth = _two_squares()
    boxes = masks_to_boxes(amodal)
    occ = compute_occluder_masks(visible, boxes, depth=depth)
    expected_b = torch.zeros(20, 20, dtype=torch.bool)
    expected_b[6:10, 6:10] = True  # A's mask inside B's box
    assert occ.dtype == torch.bool and occ.shape == (2, 20, 20)
    assert not occ[0].any()  # B is behind A: A has no occluder
    assert torch.equal(occ[1], expected_b)
    with_amodal = compute_occluder_masks(visible, boxes, depth=depth, amodal_masks=amodal)
    assert torch.equal(with_amodal, occ)
    assert torch.equal(compute_occluder_masks(visible, boxes, depth=depth, rule="depth"), occ)


def test_depth_rule_amodal_region_excludes_objects_that_only_touch_the_box():
    # B is an L shape: its box has an empty top-right corner where a nearer object D sits
    h = w = 20
    b_amodal = _rects((h, w), [(4, 4, 8, 16)])[0] | _rects((h, w), [(4, 12, 16, 16)])[0]
    d = _rects((h, w), [(12, 4, 16, 8)])[0]  # inside B's box, not touching B
    far = _rects((h, w), [(0, 18, 3, 20)])[0]  # nearer but outside B's box
    masks = torch.stack([b_amodal, d, far])
    amodal = masks.clone()
    depth = torch.tensor([2, 0, 1])
    boxes = masks_to_boxes(masks)
    box_rule = compute_occluder_masks(masks, boxes, depth=depth)
    assert torch.equal(box_rule[0], d)  # box rule: D touches B's box
    amodal_rule = compute_occluder_masks(masks, boxes, depth=depth, amodal_masks=amodal)
    assert not amodal_rule[0].any()  # D does not hide any of B
    assert not box_rule[1:].any()


def test_uncropped_occluders_keep_whole_masks():
    visible, amodal, depth = _two_squares()
    boxes = masks_to_boxes(amodal)
    occ = compute_occluder_masks(visible, boxes, depth=depth, amodal_masks=amodal, crop=False)
    assert torch.equal(occ[1], visible[0]) and not occ[0].any()  # all of A, not just A in B's box
    # overlap rule: whole masks, 20-pixel test still on the part inside the box
    masks = _rects((10, 20), [(0, 0, 10, 10), (7, 0, 17, 10)])
    occ = compute_occluder_masks(masks, masks_to_boxes(masks), crop=False)
    assert torch.equal(occ, masks.flip(0))
    masks = _rects((10, 20), [(0, 0, 10, 10), (8, 0, 18, 10)])
    assert not compute_occluder_masks(masks, masks_to_boxes(masks), crop=False).any()


def test_depth_ties_never_occlude():
    visible, _, _ = _two_squares()
    occ = compute_occluder_masks(visible, masks_to_boxes(visible), depth=torch.tensor([1, 1]))
    assert not occ.any()


def test_overlap_rule_20_pixel_rule():
    size = (10, 20)
    # A=[0,10)x[0,10), B=[8,18): box IoU 20/180 = 0.11 > 0.05, but B covers only 20 px of A's box
    masks = _rects(size, [(0, 0, 10, 10), (8, 0, 18, 10)])
    occ = compute_occluder_masks(masks, masks_to_boxes(masks))
    assert not occ.any()  # 20 px is not > 20
    assert compute_occluder_masks(masks, masks_to_boxes(masks), min_pixels=19).any()
    # shift B one column: 30 px inside A's box -> kept, and symmetric (no depth order)
    masks = _rects(size, [(0, 0, 10, 10), (7, 0, 17, 10)])
    occ = compute_occluder_masks(masks, masks_to_boxes(masks))
    expected = _rects(size, [(7, 0, 10, 10), (7, 0, 10, 10)])
    assert torch.equal(occ, expected)


def test_overlap_rule_iou_threshold():
    size = (30, 40)
    # A=[0,20)x[0,30), B=[19,39): overlap 30 px (> 20) but box IoU 30/1170 = 0.026 < 0.05
    masks = _rects(size, [(0, 0, 20, 30), (19, 0, 39, 30)])
    boxes = masks_to_boxes(masks)
    assert not compute_occluder_masks(masks, boxes).any()
    occ = compute_occluder_masks(masks, boxes, iou_thresh=0.02)
    assert torch.equal(occ[0], _rects(size, [(19, 0, 20, 30)])[0])
    assert torch.equal(occ[1], _rects(size, [(19, 0, 20, 30)])[0])


def test_overlap_rule_unions_several_occluders_cropped_to_the_box():
    size = (20, 20)
    masks = _rects(size, [(5, 5, 15, 15), (0, 0, 9, 9), (11, 11, 20, 20)])
    occ = compute_occluder_masks(masks, masks_to_boxes(masks))
    expected = _rects(size, [(5, 5, 9, 9), (11, 11, 15, 15)]).any(0)
    assert torch.equal(occ[0], expected)  # 16 + 16 = 32 px > 20


def test_non_overlapping_instances_have_empty_occluders():
    masks = _rects((20, 30), [(0, 0, 10, 10), (15, 5, 25, 15)])
    boxes = masks_to_boxes(masks)
    assert not compute_occluder_masks(masks, boxes).any()
    assert not compute_occluder_masks(masks, boxes, depth=torch.tensor([0, 1])).any()
    assert not compute_occluder_masks(masks, boxes, depth=torch.tensor([1, 0])).any()


def test_empty_and_bad_input():
    empty = compute_occluder_masks(torch.zeros(0, 5, 6, dtype=torch.bool), torch.zeros(0, 4))
    assert empty.shape == (0, 5, 6)
    m = torch.zeros(2, 5, 5, dtype=torch.bool)
    with pytest.raises(ValueError, match="bool"):
        compute_occluder_masks(m.float(), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="boxes"):
        compute_occluder_masks(m, torch.zeros(3, 4))
    with pytest.raises(ValueError, match="needs depth"):
        compute_occluder_masks(m, torch.zeros(2, 4), rule="depth")
    with pytest.raises(ValueError, match="depth must be"):
        compute_occluder_masks(m, torch.zeros(2, 4), depth=torch.zeros(3))
    with pytest.raises(ValueError, match="rule"):
        compute_occluder_masks(m, torch.zeros(2, 4), rule="nearest")  # type: ignore[arg-type]


def test_box_regions_cover_partly_covered_pixels():
    r = box_regions(torch.tensor([[0.5, 0.5, 2.2, 1.0], [1.0, 1.0, 1.0, 3.0]]), (3, 4))
    expected = torch.zeros(3, 4, dtype=torch.bool)
    expected[0, 0:3] = True
    assert torch.equal(r[0], expected)
    assert not r[1].any()  # zero-width box


def test_box_overlap_parity_with_torchvision_and_ios():
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(7, 2, generator=g) * 50
    wh = torch.rand(7, 2, generator=g) * 30 + 1
    boxes = torch.cat([xy, xy + wh], dim=1)
    torch.testing.assert_close(box_overlap(boxes, boxes[:4]), box_iou(boxes, boxes[:4]))
    a = torch.tensor([[0.0, 0, 10, 10]])
    b = torch.tensor([[5.0, 5, 25, 25]])
    assert box_overlap(a, b, measure="ios").item() == pytest.approx(25 / 100)
    assert box_overlap(a, b).item() == pytest.approx(25 / 475)
    assert box_overlap(a.double(), b).dtype == torch.float64


def test_occluded_instance_ids():
    anns = [
        {"id": 1, "image_id": 1, "bbox": [0, 0, 10, 10]},
        {"id": 2, "image_id": 1, "bbox": [5, 0, 10, 10]},  # IoU 50/150 with 1
        {"id": 3, "image_id": 1, "bbox": [40, 40, 5, 5]},
        {"id": 4, "image_id": 2, "bbox": [0, 0, 10, 10]},  # other image: no pair
        {"id": 5, "image_id": 1, "bbox": [0, 0, 10, 10], "iscrowd": 1},
        {"id": 6, "image_id": 1},  # no bbox: ignored
    ]
    assert occluded_instance_ids(anns) == {1, 2}
    assert occluded_instance_ids(anns, min_overlap=0.4) == set()


def _dense_reference(masks, boxes, *, depth=None, amodal=None, iou_thresh=0.05, min_pixels=20):
    """The definition written densely over the whole image (O(N^2 H W))."""
    n = masks.shape[0]
    region = box_regions(boxes, masks.shape[1:])
    out = torch.zeros_like(masks)
    iou = box_iou(boxes, boxes)
    for i in range(n):
        for j in range(n):
            if i == j:
                continue
            if depth is None:
                use = iou[i, j] > iou_thresh
            else:
                ref = amodal[i] if amodal is not None else region[i]
                use = depth[j] < depth[i] and (masks[j] & ref).any()
            if use:
                out[i] |= masks[j] & region[i]
        if depth is None and out[i].sum() <= min_pixels:
            out[i] = False
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_dense_reference_on_random_scenes(seed: int):
    g = torch.Generator().manual_seed(seed)
    n, h, w = 6, 24, 32
    amodal = torch.zeros(n, h, w, dtype=torch.bool)
    for i in range(n):
        x0, y0 = (
            int(torch.randint(0, w - 8, (1,), generator=g)),
            int(torch.randint(0, h - 8, (1,), generator=g)),
        )
        amodal[i, y0 : y0 + 4 + i, x0 : x0 + 12 - i] = True
        amodal[i] &= torch.rand(h, w, generator=g) > 0.1  # ragged shapes
    depth = torch.randperm(n, generator=g)
    visible = amodal.clone()
    for i in range(n):  # nearer instances hide farther ones
        visible[i] &= ~amodal[depth < depth[i]].any(0)
    boxes = masks_to_boxes(amodal) + torch.rand(n, 4, generator=g) - 0.5  # fractional boxes
    nonempty = 0
    for kw in ({}, {"depth": depth}, {"depth": depth, "amodal": amodal}, {"min_pixels": 5}):
        ours = compute_occluder_masks(
            visible, boxes, depth=kw.get("depth"), amodal_masks=kw.get("amodal"),
            min_pixels=kw.get("min_pixels", 20),
        )  # fmt: skip
        ref = _dense_reference(
            visible, boxes, depth=kw.get("depth"), amodal=kw.get("amodal"),
            min_pixels=kw.get("min_pixels", 20),
        )  # fmt: skip
        assert torch.equal(ours, ref), kw
        nonempty += int(ours.any())
    assert nonempty >= 3  # the scenes do contain occlusions
