"""Property tests of the mask conversions against pycocotools."""

from __future__ import annotations

import math

import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy import ndimage

from instseg.structures.masks import (
    is_valid_polygon,
    mask_iou,
    mask_to_polygons,
    mask_to_rle,
    masks_to_boxes,
    polygons_to_mask,
    rle_to_mask,
    segmentation_to_mask,
)

SETTINGS = settings(max_examples=60, deadline=None)

bitmaps = st.tuples(st.integers(1, 24), st.integers(1, 24)).flatmap(lambda hw: arrays(np.bool_, hw))


def _uncompressed_counts(mask: np.ndarray) -> list[int]:
    """COCO uncompressed RLE: column-major run lengths, starting with a run of zeros."""
    flat = mask.flatten(order="F").astype(np.uint8)
    counts, current, run = [], 0, 0
    for v in flat:
        if v == current:
            run += 1
        else:
            counts.append(run)
            current, run = v, 1
    counts.append(run)
    return counts


@SETTINGS
@given(bitmaps)
def test_bitmap_rle_bitmap_is_identity(mask: np.ndarray) -> None:
    rle = mask_to_rle(mask)
    assert isinstance(rle["counts"], str)  # JSON-ready
    assert rle["size"] == list(mask.shape)
    back = rle_to_mask(rle)
    assert back.dtype == bool and np.array_equal(back, mask)
    # a torch tensor in gives the same RLE
    assert mask_to_rle(torch.from_numpy(mask)) == rle


@SETTINGS
@given(bitmaps)
def test_uncompressed_rle_is_accepted(mask: np.ndarray) -> None:
    counts = _uncompressed_counts(mask)
    rle = {"size": list(mask.shape), "counts": counts}
    assert np.array_equal(rle_to_mask(rle), mask)
    assert np.array_equal(segmentation_to_mask(rle, *mask.shape), mask)


def test_uncompressed_rle_with_wrong_length_raises() -> None:
    with pytest.raises(ValueError, match="sum to 5"):
        rle_to_mask({"size": [2, 3], "counts": [2, 3]})
    with pytest.raises(ValueError, match="size"):
        rle_to_mask({"counts": "abc"})


@SETTINGS
@given(arrays(np.bool_, st.tuples(st.integers(0, 5), st.integers(1, 16), st.integers(1, 16))))
def test_masks_to_boxes_matches_pycocotools_tobbox(masks: np.ndarray) -> None:
    boxes = masks_to_boxes(torch.from_numpy(masks))
    assert boxes.shape == (masks.shape[0], 4) and boxes.dtype == torch.float32
    for m, box in zip(masks, boxes, strict=False):
        rle = mask_util.encode(np.asfortranarray(m.astype(np.uint8)))
        x, y, w, h = mask_util.toBbox(rle).tolist()
        expected = [x, y, x + w, y + h] if m.any() else [0.0, 0.0, 0.0, 0.0]
        assert box.tolist() == expected


@st.composite
def convex_polygons(draw: st.DrawFn) -> list[float]:
    """A regular-ish convex polygon well inside a 64x64 image."""
    n = draw(st.integers(3, 12))
    r = draw(st.floats(8.0, 20.0))
    cx = draw(st.floats(22.0, 42.0))
    cy = draw(st.floats(22.0, 42.0))
    rot = draw(st.floats(0.0, 2 * math.pi))
    pts = []
    for k in range(n):
        a = rot + 2 * math.pi * k / n
        pts += [cx + r * math.cos(a), cy + r * math.sin(a)]
    return pts


@SETTINGS
@given(convex_polygons())
def test_polygon_mask_polygon_mask_keeps_shape(poly: list[float]) -> None:
    m1 = polygons_to_mask([poly], 64, 64)
    polys = mask_to_polygons(m1)
    assert len(polys) == 1  # one convex blob -> one outer contour
    m2 = polygons_to_mask(polys, 64, 64)
    iou = mask_iou(torch.from_numpy(m1)[None], torch.from_numpy(m2)[None]).item()
    assert iou > 0.99
    assert np.array_equal(m1, m2)  # in fact exact


@SETTINGS
@given(arrays(np.bool_, (12, 14)))
def test_mask_polygon_mask_is_exact_for_masks_without_holes(noise: np.ndarray) -> None:
    mask = ndimage.binary_fill_holes(noise)
    polys = mask_to_polygons(mask)
    assert all(is_valid_polygon(p) for p in polys)
    back = polygons_to_mask(polys, 12, 14) if polys else np.zeros_like(mask)
    assert np.array_equal(back, mask)


def test_mask_to_polygons_min_area_drops_specks() -> None:
    m = np.zeros((8, 8), dtype=bool)
    m[0, 0] = True
    m[3:7, 3:7] = True
    assert len(mask_to_polygons(m)) == 2
    kept = mask_to_polygons(torch.from_numpy(m), min_area=1.0)
    expected = m.copy()
    expected[0, 0] = False
    assert len(kept) == 1 and np.array_equal(polygons_to_mask(kept, 8, 8), expected)


def test_polygon_rasterisation_matches_pycocotools_convention() -> None:
    # the square [2, 6] x [1, 4] covers exactly pixels x in 2..5, y in 1..3 under COCO's rule
    m = polygons_to_mask([[2, 1, 6, 1, 6, 4, 2, 4]], 6, 8)
    expected = np.zeros((6, 8), dtype=bool)
    expected[1:4, 2:6] = True
    assert np.array_equal(m, expected)
    assert masks_to_boxes(torch.from_numpy(m)[None]).tolist() == [[2.0, 1.0, 6.0, 4.0]]


@pytest.mark.parametrize(
    "poly",
    [
        [0, 0, 1, 1],  # 2 points
        [0, 0, 1, 1, 2, 2],  # collinear: zero area
        [0, 0, 4, 0, float("nan"), 4],  # NaN
        [0, 0, 4, 0, float("inf"), 4],
        [0, 0, 4, 0, 4],  # odd count
        ["a", 0, 4, 0, 4, 4],
        "not a polygon",
    ],
)
def test_degenerate_polygons_are_invalid_and_ignored(poly: object) -> None:
    assert not is_valid_polygon(poly)
    assert not polygons_to_mask([poly], 8, 8).any()  # type: ignore[list-item]


def test_invalid_parts_are_dropped_but_valid_parts_kept() -> None:
    good = [1, 1, 5, 1, 5, 5, 1, 5]
    m = polygons_to_mask([[0, 0, 1, 1], good], 8, 8)
    assert np.array_equal(m, polygons_to_mask([good], 8, 8)) and m.sum() == 16


def test_segmentation_to_mask_checks_rle_size_and_type() -> None:
    rle = mask_to_rle(np.ones((3, 4), dtype=bool))
    with pytest.raises(ValueError, match="does not match"):
        segmentation_to_mask(rle, 4, 3)
    with pytest.raises(ValueError, match="unsupported"):
        segmentation_to_mask("x", 3, 4)


@SETTINGS
@given(
    arrays(np.bool_, st.tuples(st.integers(1, 4), st.just(6), st.just(7))),
    arrays(np.bool_, st.tuples(st.integers(1, 4), st.just(6), st.just(7))),
)
def test_mask_iou_matches_pycocotools(a: np.ndarray, b: np.ndarray) -> None:
    ours = mask_iou(torch.from_numpy(a), torch.from_numpy(b)).numpy()
    ra = [mask_util.encode(np.asfortranarray(m.astype(np.uint8))) for m in a]
    rb = [mask_util.encode(np.asfortranarray(m.astype(np.uint8))) for m in b]
    ref = np.asarray(mask_util.iou(ra, rb, [0] * len(rb)), dtype=np.float64).reshape(len(a), len(b))
    # pycocotools gives 0 for empty-vs-empty as well
    np.testing.assert_allclose(ours, ref, atol=1e-6)
