"""YouTube-VIS AP: pycocotools parity for single-frame videos, hand-computed multi-frame
cases, the evaluator protocol, and the real DAVIS-2016 YTVIS file."""

from __future__ import annotations

import contextlib
import copy
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from instseg.data.ytvis import load_ytvis_dataset
from instseg.evaluation.vis import (
    COCO_AREA_RANGES,
    METRIC_KEYS,
    YTVISEvaluator,
    evaluate_vis,
    evaluate_ytvis,
    video_iou,
)
from instseg.structures import Instances, mask_to_rle
from instseg.structures.batch import Batch

YTVIS_JSON = (
    Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "davis2016-train-subset"
    / "annotations_json" / "davis2016_train_subset_ytvis.json"
)  # fmt: skip


def _box(h: int, w: int, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    m = np.zeros((h, w), bool)
    m[y0:y1, x0:x1] = True
    return m


def _pycocotools_segm(gt: dict, results: list[dict]) -> np.ndarray:
    coco = COCO()
    coco.dataset = copy.deepcopy(gt)
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
        # segm convention: drop result boxes so areas come from the masks
        dt = coco.loadRes([{k: v for k, v in r.items() if k != "bbox"} for r in results])
        ev = COCOeval(coco, dt, "segm")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.stats * 100


def _as_videos(gt: dict, results: list[dict]) -> tuple[dict, list[dict]]:
    """Every image becomes a one-frame video."""
    vgt = {
        "videos": [{"id": im["id"], "width": im["width"], "height": im["height"],
                    "file_names": [im["file_name"]]} for im in gt["images"]],
        "annotations": [{"id": a["id"], "video_id": a["image_id"], "category_id": a["category_id"],
                         "iscrowd": a["iscrowd"], "segmentations": [a["segmentation"]],
                         "areas": [a["area"]]} for a in gt["annotations"]],
        "categories": gt["categories"],
    }  # fmt: skip
    vres = [{"video_id": r["image_id"], "category_id": r["category_id"], "score": r["score"],
             "segmentations": [r["segmentation"]]} for r in results]  # fmt: skip
    return vgt, vres


def _check_parity(gt: dict, results: list[dict], tmp_path: Path) -> None:
    expected = _pycocotools_segm(gt, results)
    vgt, vres = _as_videos(gt, results)
    (tmp_path / "gt.json").write_text(json.dumps(vgt))
    ours = evaluate_vis(
        load_ytvis_dataset(tmp_path / "gt.json", tmp_path), vres, area_ranges=COCO_AREA_RANGES
    )
    for key, value in zip(METRIC_KEYS, expected, strict=True):
        if value < 0:
            assert np.isnan(ours[key]), key
        else:
            assert ours[key] == pytest.approx(value, abs=1e-6), key


def test_single_frame_equals_pycocotools(
    small_gt: dict, small_results: list[dict], tmp_path: Path
) -> None:
    for a in small_gt["annotations"]:
        a["iscrowd"] = 0  # crowd GT: COCO uses IoA, the YTVIS API plain IoU
    _check_parity(small_gt, small_results, tmp_path)


def test_single_frame_equals_pycocotools_real_davis(davis_subset, tmp_path: Path) -> None:
    _, gt, results = davis_subset
    _check_parity(gt, results, tmp_path)


def test_video_iou_hand_computed() -> None:
    h, w = 4, 4
    g0 = _box(h, w, 0, 2, 0, 2)  # 4 px
    d0 = _box(h, w, 0, 2, 1, 3)  # 4 px, 2 overlap -> I = 2, U = 6
    d1 = _box(h, w, 3, 4, 0, 2)  # GT absent: U += 2
    # frame 2: both absent -> ignored; frame 3: only GT present (2 px) -> U += 2
    g3 = _box(h, w, 2, 3, 2, 4)
    gt = [mask_to_rle(g0), None, None, mask_to_rle(g3)]
    dt = [mask_to_rle(d0), mask_to_rle(d1), None, None]
    assert video_iou(dt, gt) == pytest.approx(2 / (6 + 2 + 2))
    assert video_iou(gt, gt) == 1.0
    assert video_iou([None] * 4, [None] * 4) == 0.0


def _golden_case() -> tuple[dict, list[dict]]:
    """One 3-frame 8x8 video, two GT tracks, three detections:
    d1 (0.9) == g1 -> IoU 1; d2 (0.8) vs g2 -> I = 8 + 2, U = 8 + 8 -> IoU 0.625;
    d3 (0.7) overlaps nothing."""
    h, w = 8, 8
    g1 = [_box(h, w, 4, 6, 4, 8), _box(h, w, 4, 6, 4, 8), None]
    g2 = [_box(h, w, 0, 2, 0, 4), _box(h, w, 0, 2, 0, 4), None]
    d2 = [_box(h, w, 0, 2, 0, 4), _box(h, w, 0, 1, 0, 2), None]
    d3 = [None, _box(h, w, 6, 8, 0, 2), _box(h, w, 6, 8, 0, 2)]

    def enc(ms):
        return [None if m is None else mask_to_rle(m) for m in ms]

    gt = {
        "videos": [{"id": 1, "width": w, "height": h, "file_names": ["v/0.jpg", "v/1.jpg",
                                                                       "v/2.jpg"]}],
        "annotations": [{"id": 1, "video_id": 1, "category_id": 1, "segmentations": enc(g1)},
                        {"id": 2, "video_id": 1, "category_id": 1, "segmentations": enc(g2)}],
        "categories": [{"id": 1, "name": "thing"}],
    }  # fmt: skip
    res = [{"video_id": 1, "category_id": 1, "score": s, "segmentations": enc(m)}
           for s, m in ((0.9, g1), (0.8, d2), (0.7, d3))]  # fmt: skip
    return gt, res


def test_multi_frame_ap_hand_computed(tmp_path: Path) -> None:
    gt, res = _golden_case()
    assert video_iou(res[1]["segmentations"], gt["annotations"][1]["segmentations"]) == 0.625
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "res.json").write_text(json.dumps(res))
    m = evaluate_ytvis(tmp_path / "gt.json", tmp_path / "res.json")
    # IoU thresholds .50/.55/.60 (d2 matches): TP, TP, FP -> precision 1 at every recall
    # point -> AP_t = 1. Thresholds .65-.95 (7 of them): TP, FP, FP -> recall stops at 0.5,
    # precision 1 for the 51 recall points 0.00..0.50, 0 above -> AP_t = 51/101.
    assert m["AP"] == pytest.approx((3 + 7 * 51 / 101) / 10 * 100)
    assert m["AP50"] == pytest.approx(100.0)
    assert m["AP75"] == pytest.approx(51 / 101 * 100)
    # AR1: only d1 counts -> recall 0.5 at every threshold; AR10: 1 (3 thr), 0.5 (7 thr)
    assert m["AR1"] == pytest.approx(50.0)
    assert m["AR10"] == pytest.approx((3 * 1 + 7 * 0.5) / 10 * 100)
    # all tracks are small (< 128^2): APs == AP, medium/large have no GT -> NaN
    assert m["APs"] == pytest.approx(m["AP"]) and np.isnan(m["APm"]) and np.isnan(m["APl"])
    assert m["per_category"]["thing"] == pytest.approx(m["AP"])


def test_area_is_mean_over_present_frames(tmp_path: Path) -> None:
    # 150x150 object in 2 of 3 frames: mean over present frames 22500 -> medium
    # (a mean over all frames, 15000 < 128^2, would make it small)
    h = w = 160
    m = _box(h, w, 0, 150, 0, 150)
    segs = [mask_to_rle(m), None, mask_to_rle(m)]
    gt = {"videos": [{"id": 1, "width": w, "height": h, "file_names": ["a", "b", "c"]}],
          "annotations": [{"id": 1, "video_id": 1, "category_id": 1, "segmentations": segs,
                           "areas": [22500, None, 22500]}],
          "categories": [{"id": 1, "name": "x"}]}  # fmt: skip
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    ds = load_ytvis_dataset(tmp_path / "gt.json", tmp_path)
    out = evaluate_vis(ds, [{"video_id": 1, "category_id": 1, "score": 1.0, "segmentations": segs}])
    assert out["APm"] == pytest.approx(100.0) and np.isnan(out["APs"])


def test_bad_results_are_reported(tmp_path: Path) -> None:
    gt, res = _golden_case()
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    ds = load_ytvis_dataset(tmp_path / "gt.json", tmp_path)
    with pytest.raises(ValueError, match=r"results\[0\]: video_id 5 is not in the ground truth"):
        evaluate_vis(ds, [dict(res[0], video_id=5)])
    with pytest.raises(ValueError, match=r"results\[0\]: 'segmentations' must list 3 frames"):
        evaluate_vis(ds, [dict(res[0], segmentations=[None])])


def test_evaluator_process_assembles_tracks(tmp_path: Path) -> None:
    gt, _ = _golden_case()
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    ev = YTVISEvaluator(tmp_path / "gt.json", category_ids=[1], out_dir=tmp_path / "out")
    ds = ev.gt
    ev.reset()
    for t in range(3):
        anns = [a for a in ds.videos[0].annotations if a.present(t)]
        # predictions at half resolution (4x4 batch image) are rescaled to 8x8
        masks = (
            torch.stack([torch.from_numpy(a.mask(t)) for a in anns])
            if anns
            else (torch.zeros(0, 8, 8, dtype=torch.bool))
        )
        small = masks[:, ::2, ::2]
        inst = Instances(image_size=(4, 4), boxes=torch.zeros(len(anns), 4),
                         labels=torch.zeros(len(anns), dtype=torch.long),
                         scores=torch.full((len(anns),), 0.9), masks=small,
                         track_ids=torch.tensor([a.id * 10 for a in anns]))  # fmt: skip
        batch = Batch(
            images=torch.zeros(1, 3, 32, 32),
            image_sizes=[(4, 4)],
            file_names=[f"/data/frames/v/{t}.jpg"],
        )
        ev.process(batch, [inst])
    tracks = ev.tracks()
    assert len(tracks) == 2 and all(tr["segmentations"][2] is None for tr in tracks)
    out = ev.evaluate()
    assert out["AP"] == pytest.approx(100.0)
    assert json.loads((tmp_path / "out" / "results.json").read_text())[0]["category_id"] == 1
    bad = Batch(images=torch.zeros(1, 3, 4, 4), image_sizes=[(4, 4)], file_names=["w/9.jpg"])
    with pytest.raises(ValueError, match="does not match any GT video"):
        ev.process(bad, [inst])


def test_real_davis_ytvis_iou_matches_dense_numpy(tmp_path: Path) -> None:
    if not YTVIS_JSON.is_file():
        pytest.skip(f"shared DAVIS-2016 data not found at {YTVIS_JSON}")
    ds = load_ytvis_dataset(YTVIS_JSON, tmp_path)
    videos = [v for v in ds.videos if v.name in ("rollerblade", "soccerball")]
    perfect = [{"video_id": v.id, "category_id": 1, "score": 1.0,
                "segmentations": v.annotations[0].segmentations} for v in videos]  # fmt: skip
    out = evaluate_vis(ds, perfect, video_ids=[v.id for v in videos])
    assert out["AP"] == pytest.approx(100.0) and out["AR1"] == pytest.approx(100.0)
    # shifted masks on every 3rd frame, dropped on every 4th: compare with a dense computation
    v = videos[0]
    ann = v.annotations[0]
    pred, inter, union = [], 0, 0
    for t in range(v.length):
        g = ann.mask(t)
        p = None if t % 4 == 3 else (np.roll(g, 9, axis=1) if t % 3 == 0 else g)
        pred.append(None if p is None else mask_to_rle(p))
        inter += 0 if p is None else int((p & g).sum())
        union += int(g.sum()) if p is None else int((p | g).sum())
    assert video_iou(pred, ann.segmentations) == pytest.approx(inter / union, abs=1e-12)
