"""DAVIS J&F: hand-computed region similarity, boundary maps and boundary F, statistics, the
semi-supervised first/last-frame rule, and perfect predictions on the real DAVIS-2016 data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from instseg.data.davis import write_davis_label
from instseg.evaluation.vos import (
    boundary_f_measure,
    db_statistics,
    evaluate_davis,
    evaluate_sequence,
    region_similarity,
    seg2bmap,
)

ANN = (Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "davis2016-train-subset"
       / "Annotations" / "480p")  # fmt: skip


def test_region_similarity_shift_and_empty() -> None:
    gt = np.zeros((20, 20), bool)
    gt[5:15, 5:15] = True
    pred = np.roll(gt, 2, axis=1)  # overlap 10x8 = 80, union 100 + 100 - 80 = 120
    assert region_similarity(pred, gt) == pytest.approx(80 / 120)
    assert region_similarity(np.zeros_like(gt), np.zeros_like(gt)) == 1.0
    void = np.zeros_like(gt)
    void[:, 15:] = True  # the 2 shifted-out columns are void -> 80 / 100
    assert region_similarity(pred, gt, void) == pytest.approx(80 / 100)


def test_seg2bmap_hand_computed() -> None:
    seg = np.zeros((4, 4), bool)
    seg[1:3, 1:3] = True
    # a pixel is boundary when it differs from its right, bottom or bottom-right neighbour
    # (last row: right only; last column: bottom only; the corner never)
    expected = np.array([[1, 1, 1, 0],
                         [1, 0, 1, 0],
                         [1, 1, 1, 0],
                         [0, 0, 0, 0]], bool)  # fmt: skip
    assert np.array_equal(seg2bmap(seg), expected)


def test_boundary_f_hand_computed() -> None:
    # 10x10: GT = columns 0..4 -> its boundary is column 4 (10 px).
    gt = np.zeros((10, 10), bool)
    gt[:, :5] = True
    # prediction: columns 0..6 in rows 0..4, columns 0..4 in rows 5..9. Its boundary:
    # (0..4, 6) [5 px], (4, 4) and (4, 5) [the step], (5..9, 4) [5 px] -> 12 px.
    pred = gt.copy()
    pred[:5, 5:7] = True
    assert seg2bmap(pred).sum() == 12 and seg2bmap(gt).sum() == 10
    # tolerance ceil(0.008 * diag(10x10) = 0.11) = 1 px: a 3x3 cross (disk(1)).
    # precision: (4,4), (4,5), (5..9,4) lie within 1 px of column 4 -> 7/12
    # recall: GT (3,4) (1 px above (4,4)), (4,4) and (5..9,4) are within 1 px of the
    # predicted boundary; (0..2,4) are 2 px from column 6 -> 7/10
    p, r = 7 / 12, 7 / 10
    assert boundary_f_measure(pred, gt) == pytest.approx(2 * p * r / (p + r))  # = 7/11
    assert boundary_f_measure(pred, gt, bound_th=2) == pytest.approx(1.0)  # 2 px: all match
    assert boundary_f_measure(gt, gt) == 1.0
    empty = np.zeros_like(gt)
    assert boundary_f_measure(empty, empty) == 1.0
    assert boundary_f_measure(empty, gt) == 0.0  # P = 1, R = 0
    assert boundary_f_measure(gt, empty) == 0.0  # P = 0, R = 1


def test_statistics_mean_recall_decay() -> None:
    # 8 frames; the official quarters are [0:3], [2:5], [4:6], [5:8]
    m, o, d = db_statistics([1, 1, 1, 1, 0, 0, 0, 0])
    assert (m, o, d) == (0.5, 0.5, 1.0)
    m, o, d = db_statistics([0.9, 0.9, 0.4, 0.4, 0.6, 0.2, 0.2, 0.2])
    assert m == pytest.approx(0.475) and o == pytest.approx(3 / 8)
    assert d == pytest.approx((0.9 + 0.9 + 0.4) / 3 - 0.2)


def test_first_and_last_frames_excluded_by_default() -> None:
    gts = [np.zeros((8, 8), np.uint8) for _ in range(4)]
    for g in gts:
        g[2:6, 2:6] = 1
    preds = [g.copy() for g in gts]
    preds[0][:] = 0  # wrong only in the first and last frame
    preds[3][:] = 0
    semi = evaluate_sequence(preds, gts)
    assert semi[1]["J"] == [1.0, 1.0] and semi[1]["F"] == [1.0, 1.0]
    every = evaluate_sequence(preds, gts, exclude_first_last=False)
    assert every[1]["J"] == [0.0, 1.0, 1.0, 0.0]


def test_void_and_object_ids_follow_the_official_semi_supervised_code() -> None:
    gt = np.zeros((6, 6), np.uint8)
    gt[1:3, 1:3] = 2  # first frame: max id 2 -> objects 1 and 2 (1 is absent: J = F = 1)
    gt[4:, 4:] = 255  # void
    pred = gt.copy()
    pred[4:, 4:] = 2  # prediction spills over the void region (4 px)
    res = evaluate_sequence([pred] * 3, [gt] * 3)
    assert sorted(res) == [1, 2] and res[1]["J"] == [1.0]
    assert res[2]["J"] == [pytest.approx(4 / 8)]  # void counted as background
    res = evaluate_sequence([pred] * 3, [gt] * 3, use_void=True)
    assert res[2]["J"] == [1.0] and res[2]["F"] == [1.0]  # void pixels excluded


def test_evaluate_davis_multi_object_folders(tmp_path: Path) -> None:
    gt = np.zeros((10, 10), np.uint8)
    gt[:, :5] = 1
    gt[8:, 6:] = 2
    pred = gt.copy()
    pred[:5, 5:7] = 1  # object 1 as in the boundary test; object 2 exact
    for t in range(3):
        write_davis_label(tmp_path / "gt" / "s" / f"{t:05d}.png", gt)
        write_davis_label(tmp_path / "pred" / "s" / f"{t:05d}.png", pred)
    out = evaluate_davis(tmp_path / "pred", tmp_path / "gt")
    j1 = 50 / 60  # object 1: GT 50 px, prediction 60 px, all GT inside
    assert out["J-Mean"] == pytest.approx((j1 + 1) / 2 * 100)
    assert out["F-Mean"] == pytest.approx((7 / 11 + 1) / 2 * 100)
    assert out["J&F-Mean"] == pytest.approx((out["J-Mean"] + out["F-Mean"]) / 2)
    assert out["J-Recall"] == pytest.approx(100.0) and out["J-Decay"] == pytest.approx(0.0)
    (tmp_path / "pred" / "s" / "00002.png").unlink()
    with pytest.raises(FileNotFoundError, match="00002.png: predicted frame missing"):
        evaluate_davis(tmp_path / "pred", tmp_path / "gt")


def test_perfect_prediction_real_davis() -> None:
    if not ANN.is_dir():
        pytest.skip(f"shared DAVIS-2016 data not found at {ANN}")
    out = evaluate_davis(ANN, ANN, sequences=["rollerblade"])
    assert out["J-Mean"] == 100.0 and out["F-Mean"] == 100.0 and out["J&F-Mean"] == 100.0
    assert out["J-Recall"] == 100.0 and out["J-Decay"] == 0.0
    assert out["per_sequence"]["rollerblade"]["J&F-Mean"] == 100.0
