"""COCO evaluation: parity with plain pycocotools (real DAVIS data and a multi-category GT),
class splits, the faster backend, bad input, the evaluator and the inference loop."""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from torch import nn

from instseg.evaluation.coco import (
    METRIC_KEYS,
    COCOEvaluator,
    evaluate_coco,
    format_metrics_table,
    instances_to_coco_results,
    resolve_class_split,
)
from instseg.evaluation.evaluator import inference_on_dataset
from instseg.structures import Instances
from instseg.structures.batch import Batch
from instseg.structures.masks import masks_to_boxes


def encode(mask: np.ndarray) -> dict:
    rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": rle["counts"].decode()}


def decode(rle: dict) -> np.ndarray:
    return mask_util.decode({"size": rle["size"], "counts": rle["counts"].encode()})


def reference_stats(gt: dict, results: list[dict], iou_type: str, cat_ids=None) -> np.ndarray:
    """Plain pycocotools, detectron2 style (segm: results' bbox dropped so areas are mask areas)."""
    coco_gt = COCO()
    coco_gt.dataset = copy.deepcopy(gt)
    coco_gt.createIndex()
    res = copy.deepcopy(results)
    if iou_type == "segm":
        for r in res:
            r.pop("bbox", None)
    ev = COCOeval(coco_gt, coco_gt.loadRes(res), iou_type)
    if cat_ids is not None:
        ev.params.catIds = cat_ids
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    return np.asarray(ev.stats)


def assert_matches(metrics: dict, stats: np.ndarray) -> None:
    assert len(stats) == len(METRIC_KEYS) == 12
    for key, ref in zip(METRIC_KEYS, stats, strict=True):
        if ref == -1:
            assert math.isnan(metrics[key]), key
        else:
            assert metrics[key] == pytest.approx(ref * 100, abs=1e-6), key


@pytest.mark.parametrize("iou_type", ["segm", "bbox"])
def test_parity_with_pycocotools_on_davis(davis_subset, iou_type):
    path, gt, results = davis_subset
    metrics = evaluate_coco(path, results, iou_type=iou_type)
    stats = reference_stats(gt, results, iou_type)
    assert_matches(metrics, stats)
    assert 5 < metrics["AP"] < 95  # the perturbations make a non-trivial score
    assert math.isnan(metrics["APs"])  # DAVIS objects are never small: NaN, not -1


@pytest.mark.parametrize("iou_type", ["segm", "bbox"])
def test_faster_backend_equals_pycocotools(davis_subset, small_gt, small_results, iou_type):
    path, _, results = davis_subset
    for gt, res in ((path, results), (small_gt, small_results)):
        ref = evaluate_coco(gt, res, iou_type=iou_type, class_split="voc")
        fast = evaluate_coco(gt, res, iou_type=iou_type, class_split="voc", backend="faster")
        for group in (None, "voc", "non_voc"):
            a, b = (ref, fast) if group is None else (ref[group], fast[group])
            for k in METRIC_KEYS:
                assert (math.isnan(a[k]) and math.isnan(b[k])) or abs(a[k] - b[k]) <= 1e-6, k


@pytest.mark.parametrize("iou_type", ["segm", "bbox"])
def test_voc_split_parity(small_gt, small_results, iou_type):
    metrics = evaluate_coco(small_gt, small_results, iou_type=iou_type, class_split="voc")
    assert_matches(metrics, reference_stats(small_gt, small_results, iou_type))
    assert_matches(metrics["voc"], reference_stats(small_gt, small_results, iou_type, [1, 3, 18]))
    assert_matches(
        metrics["non_voc"], reference_stats(small_gt, small_results, iou_type, [24, 25, 59])
    )
    # all three area ranges have GT here, so nothing is NaN overall
    assert not any(math.isnan(metrics[k]) for k in METRIC_KEYS)
    assert metrics["voc"]["AP"] != metrics["non_voc"]["AP"]


def test_generic_split_names_and_ids(small_gt, small_results):
    split = {"base": ["person", 25, "zebra"], "novel": [3, "no-such-class", 999]}
    assert resolve_class_split(split, small_gt["categories"]) == {
        "base": [1, 24, 25],
        "novel": [3],
    }
    metrics = evaluate_coco(small_gt, small_results, iou_type="segm", class_split=split)
    assert_matches(metrics["base"], reference_stats(small_gt, small_results, "segm", [1, 24, 25]))
    assert_matches(metrics["novel"], reference_stats(small_gt, small_results, "segm", [3]))
    assert "voc" not in metrics


def test_voc_split_leaves_out_absent_categories(small_gt):
    cats = [c for c in small_gt["categories"] if c["name"] != "dog"]
    split = resolve_class_split("voc", cats + [{"id": 62, "name": "chair"}])
    assert split == {"voc": [1, 3, 62], "non_voc": [24, 25, 59]}
    assert resolve_class_split("none", cats) == {}
    with pytest.raises(ValueError, match="unknown class split"):
        resolve_class_split("coco20", cats)


@pytest.mark.parametrize("backend", ["pycocotools", "faster"])
def test_empty_results(small_gt, backend):
    small_gt = copy.deepcopy(small_gt)
    # keep only small and medium objects: AP over large has no GT -> NaN
    small_gt["annotations"] = [a for a in small_gt["annotations"] if a["area"] < 96**2]
    for iou_type in ("segm", "bbox"):
        m = evaluate_coco(small_gt, [], iou_type=iou_type, class_split="voc", backend=backend)
        assert m["AP"] == 0 and m["AR100"] == 0 and m["APs"] == 0 and m["voc"]["AP"] == 0
        assert math.isnan(m["APl"]) and math.isnan(m["ARl"])


def test_results_file_and_polygon_and_uncompressed_rle(small_gt, small_results, tmp_path):
    path = tmp_path / "res.json"
    path.write_text(json.dumps(small_results))
    ref = evaluate_coco(small_gt, small_results, iou_type="segm")
    assert evaluate_coco(small_gt, path, iou_type="segm") == pytest.approx(ref, nan_ok=True)
    # a rectangle as a polygon and as uncompressed RLE scores like its compressed RLE
    a = small_gt["annotations"][0]
    h, w = 150, 200
    m = np.zeros((h, w), np.uint8)
    m[10:30, 20:60] = 1
    flat = m.flatten(order="F").astype(np.int64)
    runs = np.diff(np.flatnonzero(np.diff(np.r_[-1, flat, -1]) != 0))
    counts = ([0] if flat[0] else []) + runs.tolist()
    variants = [encode(m), [[20, 10, 60, 10, 60, 30, 20, 30]], {"size": [h, w], "counts": counts}]
    scores = []
    for seg in variants:
        r = [{"image_id": a["image_id"], "category_id": 1, "score": 0.9, "segmentation": seg}]
        scores.append(evaluate_coco(small_gt, r, iou_type="segm")["AR100"])
    assert scores[0] == scores[2]
    assert scores[1] == pytest.approx(scores[0], abs=1.0)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda r: r[0].update(image_id=12345), r"res\.json: 1 image id\(s\) not in the GT"),
        (lambda r: r[1].update(category_id=7), "res.json: result 1 has category_id 7"),
        (lambda r: r[2].pop("score"), "res.json: result 2 has no 'score'"),
        (lambda r: r[0].update(score="high"), "non-numeric score"),
        (lambda r: r[0].update(bbox=[1, 2, 3]), "malformed bbox"),
        (lambda r: r[0]["segmentation"].update(size=[10, 10]), "RLE size"),
        (lambda r: r[0].update(segmentation="abc"), "malformed segmentation"),
        (lambda r: r.append(5), "result .* is not an object"),
    ],
)
def test_bad_results_name_the_file(small_gt, small_results, tmp_path, mutate, message):
    res = copy.deepcopy(small_results)
    mutate(res)
    path = tmp_path / "res.json"
    path.write_text(json.dumps(res))
    with pytest.raises(ValueError, match=message):
        evaluate_coco(small_gt, path, iou_type="segm")


def test_bad_files(small_gt, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("[{")
    with pytest.raises(ValueError, match=r"bad\.json: invalid JSON"):
        evaluate_coco(small_gt, bad)
    obj = tmp_path / "obj.json"
    obj.write_text("{}")
    with pytest.raises(ValueError, match=r"obj\.json: results must be a JSON list"):
        evaluate_coco(small_gt, obj)
    with pytest.raises(ValueError, match=r"obj\.json: GT needs a list 'images'"):
        evaluate_coco(obj, [])
    gt = copy.deepcopy(small_gt)
    del gt["annotations"][0]["area"]
    gt_path = tmp_path / "gt.json"
    gt_path.write_text(json.dumps(gt))
    with pytest.raises(ValueError, match=r"gt\.json: GT annotation lacks \['area'\]"):
        evaluate_coco(gt_path, [])
    with pytest.raises(FileNotFoundError, match="nope.json"):
        evaluate_coco(tmp_path / "nope.json", [])
    with pytest.raises(ValueError, match="unknown iou_type"):
        evaluate_coco(small_gt, [], iou_type="keypoints")


def test_instances_to_coco_results_roundtrip():
    masks = torch.zeros(3, 20, 30, dtype=torch.bool)
    masks[0, 2:5, 3:9] = True
    masks[1, 10:20, 0:30] = True  # masks[2] empty
    inst = Instances(
        image_size=(20, 30),
        boxes=masks_to_boxes(masks),
        labels=torch.tensor([1, 0, 1]),
        scores=torch.tensor([0.9, 0.5, 0.1]),
        masks=masks,
    )
    res = instances_to_coco_results(inst, image_id=7, category_ids=[5, 9], scale=(2.0, 0.5))
    assert [r["category_id"] for r in res] == [9, 5, 9]
    assert [r["image_id"] for r in res] == [7, 7, 7]
    assert res[0]["bbox"] == [6.0, 1.0, 12.0, 1.5]  # xyxy (3,2,9,5) scaled by (2, .5), xywh
    assert res[1]["score"] == pytest.approx(0.5)
    assert isinstance(res[0]["segmentation"]["counts"], str)
    for r, m in zip(res, masks, strict=True):
        np.testing.assert_array_equal(decode(r["segmentation"]), m.numpy())
    json.dumps(res)
    assert instances_to_coco_results(Instances.empty((4, 4)), image_id=1, category_ids=[1]) == []
    with pytest.raises(ValueError, match="labels must be in"):
        instances_to_coco_results(inst, image_id=1, category_ids=[5])


def _gt_batches(gt: dict, *, half: bool) -> tuple[list[Batch], list[list[Instances]]]:
    """One batch per two images with perfect predictions from the GT, at half size if asked
    (the blocks are at even pixels, so 2x bilinear upsampling restores them exactly)."""
    batches, outputs = [], []
    ims = gt["images"]
    cat_ids = [c["id"] for c in gt["categories"]]
    for start in range(0, len(ims), 2):
        part = ims[start : start + 2]
        preds, sizes = [], []
        for im in part:
            anns = [a for a in gt["annotations"] if a["image_id"] == im["id"]]
            m = torch.from_numpy(np.stack([decode(a["segmentation"]) for a in anns])).bool()
            if half:
                m = m[:, ::2, ::2]
            size = (m.shape[1], m.shape[2])
            labels = torch.tensor([cat_ids.index(a["category_id"]) for a in anns])
            preds.append(
                Instances(
                    image_size=size,
                    boxes=masks_to_boxes(m),
                    labels=labels,
                    scores=torch.linspace(1, 0.5, len(anns)),
                    masks=m,
                )
            )
            sizes.append(size)
        batches.append(
            Batch(
                images=torch.zeros(len(part), 3, 80, 80),
                image_sizes=sizes,
                image_ids=[im["id"] for im in part],
                orig_sizes=[(im["height"], im["width"]) for im in part],
            )
        )
        outputs.append(preds)
    return batches, outputs


def _block_gt() -> dict:
    """Rectangles on even pixel coordinates, 2 categories, 4 images of 60x80."""
    rng = np.random.default_rng(3)
    images, anns = [], []
    for i in range(1, 5):
        images.append({"id": i, "height": 60, "width": 80})
        for _ in range(3):
            m = np.zeros((60, 80), np.uint8)
            y, x = 2 * rng.integers(0, 20), 2 * rng.integers(0, 30)
            m[y : y + 2 * rng.integers(2, 10), x : x + 2 * rng.integers(2, 10)] = 1
            box = [float(v) for v in mask_util.toBbox(mask_util.encode(np.asfortranarray(m)))]
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": i,
                    "category_id": int(rng.choice([1, 3])),
                    "segmentation": encode(m),
                    "area": float(m.sum()),
                    "bbox": box,
                    "iscrowd": 0,
                }
            )
    return {
        "images": images,
        "annotations": anns,
        "categories": [{"id": 1, "name": "person"}, {"id": 3, "name": "car"}],
    }


@pytest.mark.parametrize("half", [False, True])
def test_evaluator_rescales_and_scores_perfect_predictions(tmp_path, half):
    gt = _block_gt()
    ev = COCOEvaluator(
        gt, iou_types=("segm", "bbox"), category_ids=[1, 3], class_split="voc", out_dir=tmp_path
    )
    batches, outputs = _gt_batches(gt, half=half)
    ev.reset()
    for b, o in zip(batches, outputs, strict=True):
        ev.process(b, o)
    metrics = ev.evaluate()
    assert set(metrics) == {"segm", "bbox"}
    for t in ("segm", "bbox"):
        assert metrics[t]["AP"] == pytest.approx(100.0)
        assert metrics[t]["voc"]["AP"] == pytest.approx(100.0)
    written = json.loads((tmp_path / "results.json").read_text())
    assert len(written) == len(gt["annotations"])
    assert all(r["segmentation"]["size"] == [60, 80] for r in written)


def test_evaluator_scores_only_processed_images():
    gt = _block_gt()
    ev = COCOEvaluator(gt, iou_types=("segm",), category_ids=[1, 3])
    batches, outputs = _gt_batches(gt, half=False)
    ev.process(batches[0], outputs[0])  # images 1, 2 of 4
    assert ev.evaluate()["segm"]["AP"] == pytest.approx(100.0)
    ev.reset()
    with pytest.warns(UserWarning, match="no images"):
        assert ev.evaluate() == {}
    with pytest.raises(ValueError, match="category_ids"):
        COCOEvaluator(gt, category_ids=[1, 2])


def test_evaluator_gathers_across_ranks(monkeypatch):
    gt = _block_gt()
    batches, outputs = _gt_batches(gt, half=True)
    evs = [COCOEvaluator(gt, iou_types=("segm",), category_ids=[1, 3]) for _ in range(2)]
    for r, ev in enumerate(evs):  # rank r processed batch r
        ev.process(batches[r], outputs[r])
    dist = torch.distributed
    rank = {"r": 0}
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_world_size", lambda: 2)
    monkeypatch.setattr(dist, "get_rank", lambda: rank["r"])
    shared = {"calls": 0}

    def fake_all_gather(parts, obj):
        attr = "_results" if shared["calls"] % 2 == 0 else "_image_ids"
        parts[:] = [getattr(e, attr) for e in evs]
        shared["calls"] += 1

    monkeypatch.setattr(dist, "all_gather_object", fake_all_gather)
    assert evs[0].evaluate()["segm"]["AP"] == pytest.approx(100.0)
    rank["r"] = 1
    assert evs[1].evaluate() == {}


class _Oracle(nn.Module):
    """Returns stored predictions; checks it runs without grad and in eval mode."""

    def __init__(self, outputs: list[list[Instances]]) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.ones(1))
        self.outputs = outputs
        self.calls = 0

    def predict(self, batch: Batch) -> list[Instances]:
        assert not torch.is_grad_enabled() and not self.training
        out = self.outputs[self.calls]
        self.calls += 1
        return [o.replace(scores=o.scores * self.w) for o in out]


@pytest.mark.parametrize("amp", ["none", "bf16", "auto"])
def test_inference_on_dataset(amp):
    gt = _block_gt()
    batches, outputs = _gt_batches(gt, half=True)
    model = _Oracle(outputs).train()
    ev = COCOEvaluator(gt, iou_types=("bbox", "segm"), category_ids=[1, 3])
    metrics = inference_on_dataset(model, batches, ev, amp=amp, progress=False)
    assert model.training and model.calls == len(batches)
    assert metrics["segm"]["AP"] == pytest.approx(100.0)
    assert metrics["bbox"]["AP"] == pytest.approx(100.0)


def test_format_metrics_table(small_gt, small_results):
    m = {
        t: evaluate_coco(small_gt, small_results, iou_type=t, class_split="voc")
        for t in ("segm", "bbox")
    }
    m["segm"]["APs"] = float("nan")
    table = format_metrics_table(m)
    lines = table.splitlines()
    assert lines[0].split()[:3] == ["type", "split", "|"] and "AR100" in lines[0]
    assert len(lines) == 2 + 6
    assert lines[2].split()[:3] == ["segm", "all", "|"]
    assert lines[2].split()[3] == f"{m['segm']['AP']:.2f}" and lines[2].split()[6] == "-"
    assert any(line.split()[:2] == ["bbox", "non_voc"] for line in lines)
    flat = format_metrics_table(m["bbox"]).splitlines()
    assert len(flat) == 2 + 3 and flat[2].split()[0] == "all"
