"""`instseg evaluate coco` through the console entry point."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import numpy as np
import pycocotools.mask as mask_util
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from instseg.cli.main import main

KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


def _rle(m: np.ndarray) -> dict:
    r = mask_util.encode(np.asfortranarray(m.astype(np.uint8)))
    return {"size": [int(r["size"][0]), int(r["size"][1])], "counts": r["counts"].decode()}


def _box(m: np.ndarray) -> list[float]:
    return [float(v) for v in mask_util.toBbox(mask_util.encode(np.asfortranarray(m)))]


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path, dict, list]:
    """3 images of 64x96, person (VOC) and zebra (non-VOC); shifted-mask detections + an FP."""
    rng = np.random.default_rng(0)
    cats = [{"id": 1, "name": "person"}, {"id": 24, "name": "zebra"}]
    images, anns, res = [], [], []
    for i in range(1, 4):
        images.append({"id": i, "height": 64, "width": 96})
        for k in range(3):
            m = np.zeros((64, 96), np.uint8)
            y, x = int(rng.integers(0, 40)), int(rng.integers(0, 70))
            m[y : y + int(rng.integers(5, 24)), x : x + int(rng.integers(5, 26))] = 1
            cat = cats[k % 2]["id"]
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": i,
                    "category_id": cat,
                    "iscrowd": 0,
                    "segmentation": _rle(m),
                    "area": float(m.sum()),
                    "bbox": _box(m),
                }
            )
            d = np.roll(m, int(rng.integers(-3, 4)), axis=1)
            res.append(
                {
                    "image_id": i,
                    "category_id": cat,
                    "score": float(rng.random()),
                    "segmentation": _rle(d),
                    "bbox": _box(d),
                }
            )
        fp = np.zeros((64, 96), np.uint8)
        fp[:10, :10] = 1
        res.append(
            {
                "image_id": i,
                "category_id": 24,
                "score": 0.95,
                "segmentation": _rle(fp),
                "bbox": _box(fp),
            }
        )
    gt = {"images": images, "annotations": anns, "categories": cats}
    gt_path, res_path = tmp_path / "gt.json", tmp_path / "res.json"
    gt_path.write_text(json.dumps(gt))
    res_path.write_text(json.dumps(res))
    return gt_path, res_path, gt, res


def _stats(gt: dict, res: list, iou_type: str, cat_ids: list[int] | None = None) -> np.ndarray:
    coco = COCO()
    coco.dataset = copy.deepcopy(gt)
    coco.createIndex()
    res = copy.deepcopy(res)
    if iou_type == "segm":
        for r in res:
            del r["bbox"]
    ev = COCOeval(coco, coco.loadRes(res), iou_type)
    if cat_ids:
        ev.params.catIds = cat_ids
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    return ev.stats


def _check(metrics: dict, stats: np.ndarray) -> None:
    for k, ref in zip(KEYS, stats, strict=True):
        if ref == -1:
            assert metrics[k] is None, k  # NaN is written as null
        else:
            assert metrics[k] == pytest.approx(ref * 100, abs=1e-6), k


def test_evaluate_coco_segm_writes_metrics(files, tmp_path, capsys):
    gt_path, res_path, gt, res = files
    out = tmp_path / "sub" / "metrics.json"
    rc = main(
        [
            "evaluate",
            "coco",
            "--gt",
            str(gt_path),
            "--results",
            str(res_path),
            "--class-split",
            "voc",
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    printed = capsys.readouterr().out
    assert "AP50" in printed and "non_voc" in printed and str(out) in printed
    metrics = json.loads(out.read_text())
    _check(metrics, _stats(gt, res, "segm"))
    _check(metrics["voc"], _stats(gt, res, "segm", [1]))
    _check(metrics["non_voc"], _stats(gt, res, "segm", [24]))
    assert 0 < metrics["AP"] < 100


def test_evaluate_coco_both_and_faster(files, tmp_path, capsys):
    gt_path, res_path, gt, res = files
    out = tmp_path / "m.json"
    rc = main(
        [
            "evaluate",
            "coco",
            "--gt",
            str(gt_path),
            "--results",
            str(res_path),
            "--iou-type",
            "both",
            "--backend",
            "faster",
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    metrics = json.loads(out.read_text())
    assert set(metrics) == {"segm", "bbox"}
    _check(metrics["segm"], _stats(gt, res, "segm"))
    _check(metrics["bbox"], _stats(gt, res, "bbox"))
    table = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in table[2:4]] == ["segm", "bbox"]


def test_evaluate_coco_custom_split_file(files, tmp_path):
    gt_path, res_path, gt, res = files
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"base": ["zebra"], "novel": [1]}))
    out = tmp_path / "m.json"
    assert (
        main(
            [
                "evaluate",
                "coco",
                "--gt",
                str(gt_path),
                "--results",
                str(res_path),
                "--iou-type",
                "bbox",
                "--class-split",
                str(split),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    metrics = json.loads(out.read_text())
    _check(metrics["base"], _stats(gt, res, "bbox", [24]))
    _check(metrics["novel"], _stats(gt, res, "bbox", [1]))


def test_evaluate_coco_empty_results(files, tmp_path):
    gt_path, _, _, _ = files
    empty = tmp_path / "empty.json"
    empty.write_text("[]")
    out = tmp_path / "m.json"
    rc = main(
        [
            "evaluate",
            "coco",
            "--gt",
            str(gt_path),
            "--results",
            str(empty),
            "--iou-type",
            "both",
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    m = json.loads(out.read_text())
    assert m["segm"]["AP"] == 0.0 and m["bbox"]["AR100"] == 0.0
    assert m["segm"]["APl"] is None  # no large GT objects


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("[{", r"res\.json: invalid JSON"),
        (
            '[{"image_id": 99, "category_id": 1, "score": 0.5, "bbox": [0, 0, 1, 1]}]',
            r"res\.json: 1 image id\(s\) not in the GT, e\.g\. \[99\]",
        ),
        (
            '[{"image_id": 1, "category_id": 5, "score": 0.5, "bbox": [0, 0, 1, 1]}]',
            r"res\.json: result 0 has category_id 5",
        ),
        ('{"annotations": []}', r"res\.json: results must be a JSON list"),
    ],
)
def test_evaluate_coco_bad_input(files, capsys, content, message):
    gt_path, res_path, _, _ = files
    res_path.write_text(content)
    rc = main(
        ["evaluate", "coco", "--gt", str(gt_path), "--results", str(res_path), "--iou-type", "bbox"]
    )
    assert rc == 2
    err = capsys.readouterr().err
    assert err.startswith("instseg evaluate coco: error:")
    assert len(err.strip().splitlines()) == 1
    assert re.search(message, err), err


def test_evaluate_missing_gt_and_usage(files, tmp_path, capsys):
    _, res_path, _, _ = files
    rc = main(["evaluate", "coco", "--gt", str(tmp_path / "nope.json"), "--results", str(res_path)])
    assert rc == 2 and "nope.json: file not found" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["evaluate"])  # a benchmark is required
    assert e.value.code == 2
    with pytest.raises(SystemExit):
        main(["evaluate", "coco", "--gt", "a.json", "--results", "b.json", "--iou-type", "x"])
