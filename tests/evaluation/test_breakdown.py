import numpy as np
import pycocotools.mask as mask_util
import pytest

from instseg.evaluation.breakdown import occlusion_level_metrics, per_category_metrics
from instseg.evaluation.coco import evaluate_coco


def _rle(x0: int, y0: int, size: int = 10, hw: int = 64) -> dict:
    m = np.zeros((hw, hw), np.uint8, order="F")
    m[y0 : y0 + size, x0 : x0 + size] = 1
    r = mask_util.encode(m)
    r["counts"] = r["counts"].decode()
    return r


def _gt(ratios: list[float | None]) -> dict:
    """One 64x64 image; instance k: a 10x10 square at x=12k of category 1 + k % 2."""
    anns = [
        {
            "id": k + 1,
            "image_id": 1,
            "category_id": 1 + k % 2,
            "iscrowd": 0,
            "segmentation": _rle(12 * k, 5),
            "bbox": [12.0 * k, 5.0, 10.0, 10.0],
            "area": 100,
            "occlusion_ratio": r,
        }
        for k, r in enumerate(ratios)
    ]
    return {
        "images": [{"id": 1, "width": 64, "height": 64, "file_name": "a.png"}],
        "annotations": anns,
        "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}],
    }


def _hit(k: int, cat: int, score: float = 0.9) -> dict:
    return {"image_id": 1, "category_id": cat, "score": score, "segmentation": _rle(12 * k, 5)}


def test_per_category_separates_a_perfect_class_from_a_missed_one():
    gt = _gt([0.0, 0.0, 0.0, 0.0])  # cat: instances 0, 2; dog: 1, 3
    res = [_hit(0, 1), _hit(2, 1)]  # every cat found, no dog
    m = per_category_metrics(gt, res, iou_type="segm")
    assert list(m) == ["all", "cat", "dog"]
    assert m["cat"]["AP"] == pytest.approx(100.0)
    assert m["dog"]["AP"] == pytest.approx(0.0)
    assert m["all"]["AP"] == pytest.approx(evaluate_coco(gt, res, iou_type="segm")["AP"])
    assert m["all"]["AP"] == pytest.approx(50.0)


def test_occlusion_levels_score_only_their_own_instances():
    gt = _gt([0.0, 0.3, 0.8, 0.05])  # none: 0, 3; partial: 1; heavy: 2
    res = [_hit(2, 1), _hit(1, 2, 0.8)]  # the heavy and the partial one found
    m = occlusion_level_metrics(gt, res, iou_type="segm")
    assert [v["instances"] for v in m.values()] == [2, 1, 1]
    none, partial, heavy = m.values()
    assert heavy["AP"] == pytest.approx(100.0)
    assert partial["AP"] == pytest.approx(100.0)
    assert none["AP"] == pytest.approx(0.0)  # detections on other levels are ignored, not FPs


def test_occlusion_levels_need_ratios_and_skip_empty_levels():
    assert occlusion_level_metrics(_gt([None, None]), [_hit(0, 1)]) == {}
    m = occlusion_level_metrics(_gt([0.0, None]), [_hit(0, 1)])
    assert [v["instances"] for v in m.values()] == [1, 0, 0]
    assert set(list(m.values())[1]) == {"instances"}
