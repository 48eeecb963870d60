"""GT-box mask-head metrics and the paired image bootstrap (issue 14's head benchmark)."""

from __future__ import annotations

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from instseg.evaluation.head_metrics import (
    box_rle,
    instance_scores,
    occlusion_bins,
    paired_bootstrap,
)


def _rle(m: np.ndarray) -> dict:
    return mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))


def _rect(h: int, w: int, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    m = np.zeros((h, w), bool)
    m[y0:y1, x0:x1] = True
    return m


def test_box_rle_covers_the_pixels_of_the_box():
    m = mask_utils.decode(box_rle([2, 3, 7, 9], 12, 10)).astype(bool)
    assert m.sum() == 5 * 6
    assert m[3:9, 2:7].all()


def test_instance_scores_golden_values():
    h = w = 20
    visible = _rect(h, w, 0, 10, 0, 10)  # 100 px, box (0, 0, 10, 10)
    occluder = _rect(h, w, 5, 20, 5, 20)  # overlaps the box in a 5x5 corner
    pred = _rect(h, w, 0, 10, 0, 10)  # predicts the whole box: 25 px of it on the occluder
    pred_occ = _rect(h, w, 5, 10, 5, 10)  # layer 1 finds exactly the occluder inside the box
    s = instance_scores(
        [_rle(pred)], [_rle(visible)], [_rle(occluder)], np.array([[0, 0, 10, 10.0]]),
        pred_occluder=[_rle(pred_occ)],
    )  # fmt: skip
    assert s.iou[0] == pytest.approx(1.0)
    assert s.on_occluder[0] == pytest.approx(25 / 100)
    assert s.occluder_iou[0] == pytest.approx(1.0)

    half = _rect(h, w, 0, 10, 0, 5)  # 50 px, none on the occluder
    s = instance_scores(
        [_rle(half)], [_rle(visible)], [_rle(occluder)], np.array([[0, 0, 10, 10.0]])
    )
    assert s.iou[0] == pytest.approx(0.5)
    assert s.on_occluder[0] == pytest.approx(0.0)
    assert np.isnan(s.occluder_iou[0])  # no occluder output given


def test_instance_scores_undefined_cases_are_nan():
    h = w = 8
    vis = _rect(h, w, 0, 4, 0, 4)
    empty = np.zeros((h, w), bool)
    s = instance_scores(
        [_rle(empty)], [_rle(vis)], [_rle(empty)], np.array([[0, 0, 4, 4.0]]),
        pred_occluder=[_rle(empty)],
    )  # fmt: skip
    assert s.iou[0] == 0.0
    assert np.isnan(s.on_occluder[0])  # no occluder
    assert np.isnan(s.occluder_iou[0])  # no occluder pixel in the box
    with pytest.raises(ValueError, match="predictions"):
        instance_scores([_rle(vis)], [], [], np.zeros((0, 4)))


def test_occlusion_bins_are_disjoint_and_cover():
    r = np.array([0.0, 0.005, 0.01, 0.3, 0.31, 0.9])
    b = occlusion_bins(r)
    assert b["unoccluded"].tolist() == [True, True, False, False, False, False]
    assert b["partial"].tolist() == [False, False, True, True, False, False]
    assert b["occluded"].tolist() == [False, False, False, False, True, True]


def test_paired_bootstrap_constant_difference_has_a_point_interval():
    a = np.linspace(0.2, 0.8, 30)
    iv = paired_bootstrap(a + 0.05, a, np.arange(30) // 3, resamples=200)
    assert iv.mean == pytest.approx(0.05)
    assert iv.low == pytest.approx(0.05) and iv.high == pytest.approx(0.05)
    assert iv.excludes_zero() and iv.n == 30


def test_paired_bootstrap_noise_interval_contains_zero_and_is_deterministic():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=200), rng.normal(size=200)
    g = np.arange(200) // 4
    iv = paired_bootstrap(a, b, g, resamples=500, seed=3)
    assert iv.low < 0 < iv.high
    assert iv == paired_bootstrap(a, b, g, resamples=500, seed=3)


def test_paired_bootstrap_resamples_groups_not_instances():
    # two images: one with a large gain on many instances, one with a loss; clustering by
    # image makes the interval wide (the instances of one image move together)
    a = np.r_[np.ones(50), np.zeros(50)]
    b = np.zeros(100)
    iv_img = paired_bootstrap(a, b, np.r_[np.zeros(50), np.ones(50)], resamples=500)
    iv_ins = paired_bootstrap(a, b, np.arange(100), resamples=500)
    assert (iv_img.high - iv_img.low) > 3 * (iv_ins.high - iv_ins.low)


def test_paired_bootstrap_drops_nan_pairs():
    iv = paired_bootstrap(np.array([1.0, np.nan, 3.0]), np.array([0.0, 1.0, np.nan]), np.arange(3))
    assert iv.n == 1 and iv.mean == 1.0


def test_hidden_recall_is_the_covered_share_of_the_amodal_part_on_the_occluders():
    h = w = 20
    amodal = _rect(h, w, 0, 10, 0, 10)
    occluder = _rect(h, w, 0, 20, 5, 20)  # hides the right half (50 px) of the amodal mask
    pred = _rect(h, w, 0, 10, 0, 8)  # recovers 3 of its 5 hidden columns
    s = instance_scores(
        [_rle(pred)], [_rle(amodal)], [_rle(occluder)], np.array([[0, 0, 10, 10.0]]),
        hidden=[_rle(amodal)],
    )  # fmt: skip
    assert s.hidden_recall[0] == pytest.approx(30 / 50)
    assert s.iou[0] == pytest.approx(80 / 100)
    s = instance_scores(
        [_rle(pred)], [_rle(amodal)], [_rle(occluder)], np.array([[0, 0, 10, 10.0]])
    )
    assert np.isnan(s.hidden_recall[0])
