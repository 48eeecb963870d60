"""MOTS metrics through TrackEval: parity with TrackEval run directly on real-format KITTI-MOTS
files, perfect predictions, a hand-computed sMOTSA, and the MOTSChallenge convention."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import numpy as np
import pytest

from instseg.data.mots import MOTSObject, write_mots_txt
from instseg.evaluation.mots import _import_trackeval, evaluate_mots, read_seqmap
from instseg.structures import mask_to_rle

H, W = 40, 80


def _box(y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    m = np.zeros((H, W), bool)
    m[y0:y1, x0:x1] = True
    return m


def _sequence(seed: int, n: int = 8, base: int = 0) -> tuple[list[MOTSObject], list[MOTSObject]]:
    """A moving car, a pedestrian and an ignore region; a tracker with jitter, one ID switch,
    a missed frame and a false positive in the ignore region and outside it."""
    rng = np.random.default_rng(seed)
    gt, res = [], []
    for i in range(n):
        t = base + i
        car = _box(4, 14, 2 + 3 * i, 14 + 3 * i)
        ped = _box(24, 36, 50, 56 + (i % 3))
        ign = _box(30, 40, 0, 10)
        gt += [MOTSObject(t, 1001, 1, mask_to_rle(car)), MOTSObject(t, 2001, 2, mask_to_rle(ped)),
               MOTSObject(t, 10000, 10, mask_to_rle(ign))]  # fmt: skip
        dx = int(rng.integers(-1, 2))
        res.append(
            MOTSObject(t, 1001 if i < n // 2 else 1002, 1, mask_to_rle(np.roll(car, dx, axis=1)))
        )
        if i != 3:
            res.append(MOTSObject(t, 2005, 2, mask_to_rle(ped)))
        if i == 5:
            res.append(MOTSObject(t, 2009, 2, mask_to_rle(_box(31, 39, 1, 9))))  # in ignore
            res.append(MOTSObject(t, 1007, 1, mask_to_rle(_box(20, 24, 20, 30))))  # FP
    return gt, res


@pytest.fixture(scope="module")
def kitti_layout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The official KITTI-MOTS layout: gt/label_02/<seq>.txt, a seqmap, and
    trackers/<name>/data/<seq>.txt."""
    root = tmp_path_factory.mktemp("kitti_mots")
    lines = []
    for k, seq in enumerate(["0000", "0001"]):
        gt, res = _sequence(seed=k, n=8 + 2 * k)
        write_mots_txt(root / "gt" / "label_02" / f"{seq}.txt", gt)
        write_mots_txt(root / "trackers" / "ours" / "data" / f"{seq}.txt", res)
        lines.append(f"{seq} empty 000000 {8 + 2 * k - 1:06d}")
    (root / "gt" / "evaluate_mots.seqmap.val").write_text("\n".join(lines) + "\n")
    return root


def test_wrapper_equals_trackeval_direct(kitti_layout: Path) -> None:
    te = _import_trackeval()
    cfg = te.datasets.KittiMOTS.get_default_dataset_config()
    cfg.update(
        GT_FOLDER=str(kitti_layout / "gt"),
        TRACKERS_FOLDER=str(kitti_layout / "trackers"),
        OUTPUT_FOLDER=str(kitti_layout / "te_out"),
        PRINT_CONFIG=False,
    )
    ecfg = te.Evaluator.get_default_eval_config()
    ecfg.update(
        PRINT_RESULTS=False,
        PRINT_CONFIG=False,
        TIME_PROGRESS=False,
        OUTPUT_SUMMARY=False,
        OUTPUT_DETAILED=False,
        PLOT_CURVES=False,
    )
    with contextlib.redirect_stdout(io.StringIO()):
        raw, _ = te.Evaluator(ecfg).evaluate(
            [te.datasets.KittiMOTS(cfg)],
            [te.metrics.HOTA(), te.metrics.CLEAR(), te.metrics.Identity()],
        )
    direct = raw["KittiMOTS"]["ours"]["COMBINED_SEQ"]
    ours = evaluate_mots(
        kitti_layout / "gt",
        kitti_layout / "trackers" / "ours" / "data",
        seqmap=kitti_layout / "gt" / "evaluate_mots.seqmap.val",
    )
    for cls in ("car", "pedestrian"):
        d, o = direct[cls], ours[cls]
        assert o["sMOTSA"] == pytest.approx(d["CLEAR"]["sMOTA"] * 100, abs=1e-9)
        assert o["MOTSA"] == pytest.approx(d["CLEAR"]["MOTA"] * 100, abs=1e-9)
        assert o["MOTSP"] == pytest.approx(d["CLEAR"]["MOTP"] * 100, abs=1e-9)
        assert o["IDF1"] == pytest.approx(d["Identity"]["IDF1"] * 100, abs=1e-9)
        assert o["HOTA"] == pytest.approx(np.mean(d["HOTA"]["HOTA"]) * 100, abs=1e-9)
        assert o["IDSW"] == d["CLEAR"]["IDSW"]
    assert ours["car"]["IDSW"] == 2 and ours["car"]["sMOTSA"] < 100
    assert ours["pedestrian"]["FN"] == 2 and ours["pedestrian"]["FP"] == 0  # FP in ignore dropped
    assert set(ours["per_sequence"]) == {"0000", "0001"}
    # inferred lengths (no seqmap) give the same numbers here: every last frame has GT
    inferred = evaluate_mots(kitti_layout / "gt", kitti_layout / "trackers" / "ours" / "data")
    assert inferred["car"]["sMOTSA"] == pytest.approx(ours["car"]["sMOTSA"])


def test_perfect_prediction_scores_100(kitti_layout: Path) -> None:
    gt_dir = kitti_layout / "gt" / "label_02"
    out = evaluate_mots(gt_dir, gt_dir)
    for cls in ("car", "pedestrian"):
        for key in ("sMOTSA", "MOTSA", "HOTA", "IDF1", "MOTSP"):
            assert out[cls][key] == pytest.approx(100.0), (cls, key)
        assert out[cls]["IDSW"] == 0 and out[cls]["FP"] == 0 and out[cls]["FN"] == 0


def test_hand_computed_smotsa(tmp_path: Path) -> None:
    # one car over 6 frames, tracked with a 1-px shift (IoU 90/110) and one ID switch:
    # sMOTSA = (6 * 90/110 - 0 FP - 1 IDSW) / 6 GT; MOTSA = (6 - 1) / 6; MOTSP = 90/110
    gt, res = [], []
    for t in range(6):
        car = _box(5, 15, 2 + 2 * t, 12 + 2 * t)
        gt.append(MOTSObject(t, 1001, 1, mask_to_rle(car)))
        res.append(MOTSObject(t, 1001 if t < 3 else 1005, 1, mask_to_rle(np.roll(car, 1, 1))))
    write_mots_txt(tmp_path / "gt" / "0000.txt", gt)
    write_mots_txt(tmp_path / "res" / "0000.txt", res)
    out = evaluate_mots(tmp_path / "gt", tmp_path / "res", classes=["car"])["car"]
    assert out["sMOTSA"] == pytest.approx((6 * 90 / 110 - 1) / 6 * 100)
    assert out["MOTSA"] == pytest.approx(5 / 6 * 100)
    assert out["MOTSP"] == pytest.approx(90 / 110 * 100)
    assert out["IDSW"] == 1 and out["IDF1"] == pytest.approx(50.0)  # 3 of 6 frames on one id


def test_motschallenge_one_based_frames(tmp_path: Path) -> None:
    gt, res = _sequence(seed=3, n=5, base=1)
    gt = [o for o in gt if o.class_id != 1]  # MOTSChallenge: pedestrians only
    write_mots_txt(tmp_path / "gt" / "MOTS20-02" / "gt" / "gt.txt", gt)
    write_mots_txt(tmp_path / "res" / "MOTS20-02.txt", gt)
    out = evaluate_mots(tmp_path / "gt", tmp_path / "res", benchmark="motschallenge")
    assert list(out["per_sequence"]) == ["MOTS20-02"]
    assert out["pedestrian"]["sMOTSA"] == pytest.approx(100.0)
    assert out["pedestrian"]["TP"] == 5


def test_errors(tmp_path: Path, kitti_layout: Path) -> None:
    (tmp_path / "res").mkdir()
    write_mots_txt(tmp_path / "res" / "0000.txt", [])
    with pytest.raises(ValueError, match=r"no result file for sequence\(s\) \['0001'\]"):
        evaluate_mots(kitti_layout / "gt", tmp_path / "res")
    with pytest.raises(ValueError, match="benchmark must be one of"):
        evaluate_mots(kitti_layout / "gt", tmp_path / "res", benchmark="mot17")
    (tmp_path / "seqmap").write_text("0000 empty 000000\n")
    with pytest.raises(ValueError, match="seqmap:1: expected"):
        read_seqmap(tmp_path / "seqmap")
