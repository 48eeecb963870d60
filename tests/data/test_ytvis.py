"""YouTube-VIS reader/writer: the real DAVIS-2016 YTVIS file, round trips, malformed input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pycocotools.mask as mask_util
import pytest
from PIL import Image

from instseg.data.ytvis import (
    VideoResult,
    class_agnostic,
    load_ytvis,
    load_ytvis_dataset,
    save_ytvis,
    save_ytvis_results,
)
from instseg.structures import mask_to_rle

DAVIS = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "davis2016-train-subset"
YTVIS_JSON = DAVIS / "annotations_json" / "davis2016_train_subset_ytvis.json"


@pytest.fixture(scope="module")
def real_videos():
    if not YTVIS_JSON.is_file():
        pytest.skip(f"shared DAVIS-2016 data not found at {YTVIS_JSON}")
    return load_ytvis_dataset(YTVIS_JSON, DAVIS / "JPEGImages" / "480p")


def test_real_file_structure(real_videos) -> None:
    vids = {v.name: v for v in real_videos.videos}
    assert real_videos.categories == {1: "object"}
    assert len(vids) == 9 and sum(v.length for v in vids.values()) == 599
    assert vids["boat"].length == 75 and vids["rollerblade"].length == 35
    for v in vids.values():
        assert (v.height, v.width) == (480, 854) and len(v.annotations) == 1
        assert v.frame_paths[0].is_file() and v.frame_paths[-1].is_file()
        assert all(s is not None for s in v.annotations[0].segmentations)


@pytest.mark.parametrize("name,t", [("boat", 0), ("bus", 40), ("soccerball", 47)])
def test_real_masks_equal_pngs(real_videos, name: str, t: int) -> None:
    video = next(v for v in real_videos.videos if v.name == name)
    ann = video.annotations[0]
    png = DAVIS / "Annotations" / "480p" / name / f"{t:05d}.png"
    expected = np.array(Image.open(png)) == 255
    m = ann.mask(t)
    assert m.dtype == bool and m.shape == (480, 854)
    assert np.array_equal(m, expected)
    assert ann.areas[t] == expected.sum()
    inst = video.instances(t, label_of={1: 0})
    assert inst.masks.shape == (1, 480, 854) and inst.track_ids.tolist() == [ann.id]
    ys, xs = np.nonzero(expected)
    assert inst.boxes[0].tolist() == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]


def _synthetic_gt() -> dict:
    h, w = 12, 16
    m0 = np.zeros((h, w), np.uint8)
    m0[2:6, 3:9] = 1
    unc = mask_util.encode(np.asfortranarray(m0))
    # uncompressed RLE (column-major run lengths) of the same mask
    flat = m0.flatten(order="F")
    runs, cur, n = [], 0, 0
    for v in flat:
        if v != cur:
            runs.append(n)
            cur, n = v, 0
        n += 1
    runs.append(n)
    poly = [[1.0, 1.0, 7.0, 1.0, 7.0, 5.0, 1.0, 5.0]]
    return {
        "videos": [{"id": 7, "name": "vid", "width": w, "height": h, "length": 3,
                    "file_names": ["vid/0.jpg", "vid/1.jpg", "vid/2.jpg"]}],
        "annotations": [{"id": 3, "video_id": 7, "category_id": 2, "iscrowd": 0,
                         "segmentations": [{"size": [h, w], "counts": unc["counts"].decode()},
                                           None, {"size": [h, w], "counts": runs}]},
                        {"id": 4, "video_id": 7, "category_id": 2,
                         "segmentations": [None, poly, None]}],
        "categories": [{"id": 2, "name": "thing"}],
    }  # fmt: skip


def test_rle_polygon_null_and_round_trip(tmp_path: Path) -> None:
    gt = _synthetic_gt()
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    ds = load_ytvis_dataset(tmp_path / "gt.json", tmp_path)
    (v,) = ds.videos
    a, b = v.annotations
    assert v.frame_paths[1] == tmp_path / "vid/1.jpg"
    assert np.array_equal(a.mask(0), a.mask(2)) and a.mask(0).sum() == 24
    assert a.mask(1) is None and a.areas == [24.0, None, 24.0]  # areas derived from masks
    assert a.bboxes[0] == [3.0, 2.0, 6.0, 4.0]
    assert b.mask(1).sum() > 0 and b.segmentations[0] is None
    assert isinstance(b.segmentations[1]["counts"], str)
    assert a.avg_area == 24.0
    save_ytvis(ds.videos, ds.categories, tmp_path / "again.json")
    ds2 = load_ytvis_dataset(tmp_path / "again.json", tmp_path)
    for x, y in zip(ds.videos[0].annotations, ds2.videos[0].annotations, strict=True):
        assert x.segmentations == y.segmentations and x.id == y.id and x.areas == y.areas
    assert load_ytvis(tmp_path / "again.json", tmp_path)[0].length == 3


def test_class_agnostic_copy_has_one_category(tmp_path: Path) -> None:
    gt = _synthetic_gt()
    gt["categories"].append({"id": 5, "name": "other"})
    gt["annotations"][1]["category_id"] = 5
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    ds = load_ytvis_dataset(tmp_path / "gt.json", tmp_path)
    ag = class_agnostic(ds)
    assert ag.categories == {1: "object"}
    assert [a.category_id for a in ag.videos[0].annotations] == [1, 1]
    assert [a.category_id for a in ds.videos[0].annotations] == [2, 5]  # original untouched
    assert [a.id for a in ag.videos[0].annotations] == [a.id for a in ds.videos[0].annotations]


@pytest.mark.parametrize(
    "mutate,message",
    [
        (lambda g: g["videos"][0].pop("file_names"), "videos[0]: missing key(s) ['file_names']"),
        (lambda g: g["annotations"][0]["segmentations"].pop(), "must list 3 frames, got 2"),
        (lambda g: g["annotations"][0].update(video_id=99), "unknown video_id 99"),
        (lambda g: g["annotations"][1].update(category_id=5), "annotations[1]: unknown category"),
        (
            lambda g: g["annotations"][0]["segmentations"][0].update(size=[5, 5]),
            "segmentations[0]: RLE size [5, 5] != video size [12, 16]",
        ),
        (lambda g: g["videos"][0].update(length=4), "'length' 4 != len(file_names) 3"),
        (lambda g: g.pop("categories"), "missing or invalid key 'categories' (YouTube-VIS format)"),
    ],
)
def test_malformed_input_names_file_and_key(tmp_path: Path, mutate, message: str) -> None:
    gt = _synthetic_gt()
    mutate(gt)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(gt))
    with pytest.raises(ValueError) as e:
        load_ytvis(path, tmp_path)
    assert str(path) in str(e.value) and message in str(e.value)


def test_save_results_keeps_nulls(tmp_path: Path) -> None:
    m = np.zeros((4, 5), bool)
    m[1:3, 1:4] = True
    rle = mask_to_rle(m)
    path = save_ytvis_results(
        [VideoResult(1, 2, 0.5, [None, rle]),
         {"video_id": 3, "category_id": 1, "score": 0.25, "segmentations": [rle, None]}],
        tmp_path / "res.json",
    )  # fmt: skip
    data = json.loads(path.read_text())
    assert data[0] == {"video_id": 1, "category_id": 2, "score": 0.5, "segmentations": [None, rle]}
    assert data[1]["segmentations"][1] is None and data[1]["score"] == 0.25
    with pytest.raises(ValueError, match=r"tracks\[0\]: missing key"):
        save_ytvis_results([{"video_id": 1}], tmp_path / "x.json")
