"""extract_coco_occ: the COCO-OCC split (images with box IoU >= 0.2 between two objects)."""

from __future__ import annotations

import contextlib
import io
import json
import logging
from pathlib import Path

import pytest
from pycocotools.coco import COCO

from instseg.data.occlusion import extract_coco_occ

DAVIS_COCO = (
    Path(__file__).resolve().parents[2]
    / ".."
    / "shared"
    / "data"
    / "davis2016-train-subset"
    / "annotations_json"
    / "davis2016_train_subset_coco.json"
)


def _ann(ann_id: int, image_id: int, bbox: list[float], **extra) -> dict:
    x, y, w, h = bbox
    poly = [x, y, x + w, y, x + w, y + h, x, y + h]
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": 1,
        "bbox": bbox,
        "area": w * h,
        "segmentation": [poly],
        "iscrowd": 0,
        **extra,
    }


def _gt() -> dict:
    images = [{"id": i, "file_name": f"{i}.jpg", "width": 100, "height": 100} for i in range(1, 7)]
    anns = [
        _ann(1, 1, [0, 0, 10, 10]),
        _ann(2, 1, [5, 0, 10, 10]),  # IoU 50/150 = 0.33 -> image 1 kept
        _ann(3, 1, [60, 60, 5, 5], iscrowd=1),  # crowd, carried along with its image
        _ann(4, 2, [0, 0, 10, 10]),
        _ann(5, 2, [8, 0, 10, 10]),  # IoU 20/180 = 0.11, IoS 0.2 -> dropped (kept with "ios")
        _ann(6, 3, [0, 0, 10, 10]),  # a single object -> dropped
        _ann(7, 4, [0, 0, 10, 10]),
        _ann(8, 4, [0, 0, 10, 10], iscrowd=1),  # overlaps only a crowd box -> dropped
        _ann(9, 5, [0, 0, 10, 10]),
        _ann(10, 5, [0, 0, 10, 2]),  # IoU exactly 20/100 = 0.2 -> kept (>=)
        _ann(11, 6, [0, 0, 10, 10]),
        {"id": 12, "image_id": 6, "category_id": 1, "bbox": "bad", "iscrowd": 0},
    ]
    return {
        "info": {"description": "hand-made"},
        "licenses": [],
        "categories": [{"id": 1, "name": "thing"}],
        "images": images,
        "annotations": anns,
    }


def _write(tmp_path: Path, obj) -> Path:
    p = tmp_path / "gt.json"
    p.write_text(json.dumps(obj))
    return p


def test_hand_made_split(tmp_path: Path, caplog):
    out = tmp_path / "occ" / "coco_occ.json"
    with caplog.at_level(logging.WARNING):
        stats = extract_coco_occ(_write(tmp_path, _gt()), out)
    assert stats == {
        "num_images_in": 6,
        "num_images_out": 2,
        "num_annotations_out": 5,
        "num_bad_annotations": 1,
    }
    assert sum("without a valid bbox" in r.message for r in caplog.records) == 1
    data = json.loads(out.read_text())
    assert [im["id"] for im in data["images"]] == [1, 5]
    assert [a["id"] for a in data["annotations"]] == [1, 2, 3, 9, 10]
    assert data["categories"] == _gt()["categories"] and data["info"] == _gt()["info"]
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(out))  # a valid COCO file for the official tools
    assert sorted(coco.getImgIds()) == [1, 5] and len(coco.getAnnIds(imgIds=[1])) == 3
    assert [p.name for p in out.parent.iterdir()] == ["coco_occ.json"]  # atomic, no temp left


def test_threshold_and_measure(tmp_path: Path):
    gt = _write(tmp_path, _gt())
    loose = extract_coco_occ(gt, tmp_path / "a.json", min_overlap=0.1)
    assert loose["num_images_out"] == 3  # image 2 (IoU 0.11) joins
    ios = extract_coco_occ(gt, tmp_path / "b.json", measure="ios")
    ids = [im["id"] for im in json.loads((tmp_path / "b.json").read_text())["images"]]
    assert ios["num_images_out"] == 3 and ids == [1, 2, 5]


def test_bad_files(tmp_path: Path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="bad.json: invalid JSON"):
        extract_coco_occ(bad, tmp_path / "o.json")
    with pytest.raises(ValueError, match="'annotations'"):
        extract_coco_occ(_write(tmp_path, {"images": []}), tmp_path / "o.json")
    with pytest.raises(FileNotFoundError, match="missing.json"):
        extract_coco_occ(tmp_path / "missing.json", tmp_path / "o.json")
    assert not (tmp_path / "o.json").exists()


@pytest.mark.skipif(not DAVIS_COCO.is_file(), reason=f"real data not found at {DAVIS_COCO}")
def test_real_davis_file_has_no_occ_images(tmp_path: Path):
    """DAVIS-2016 annotates one object per frame, so no image has an overlapping pair."""
    out = tmp_path / "davis_occ.json"
    stats = extract_coco_occ(DAVIS_COCO, out)
    assert stats["num_images_in"] == 599
    assert stats["num_images_out"] == 0 and stats["num_annotations_out"] == 0
    data = json.loads(out.read_text())
    assert data["images"] == [] and data["annotations"] == []
    assert data["categories"] == [{"id": 1, "name": "object"}]
