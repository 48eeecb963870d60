"""KITTI-MOTS / MOTSChallenge txt, BDD100K bitmask PNG and BDD RLE JSON: round trips and the
documented encodings."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from instseg.data.mots import (
    BDDFrame,
    MOTSObject,
    decode_bdd_bitmask,
    encode_bdd_bitmask,
    group_by_frame,
    mask_label,
    read_bdd_bitmask,
    read_bdd_rle_json,
    read_mots_txt,
    write_bdd_bitmask,
    write_bdd_rle_json,
    write_mots_txt,
)
from instseg.structures import Instances, mask_to_rle


def _masks(h: int = 10, w: int = 12) -> tuple[np.ndarray, np.ndarray]:
    a = np.zeros((h, w), bool)
    a[1:4, 2:6] = True
    b = np.zeros((h, w), bool)
    b[6:9, 7:11] = True
    return a, b


def test_mots_txt_round_trip(tmp_path: Path) -> None:
    a, b = _masks()
    objs = [MOTSObject(1, 2003, 2, mask_to_rle(b)), MOTSObject(0, 1001, 1, mask_to_rle(a)),
            MOTSObject(0, 10000, 10, mask_to_rle(b))]  # fmt: skip
    path = write_mots_txt(tmp_path / "0000.txt", objs)
    lines = path.read_text().splitlines()
    assert lines[0].startswith("0 1001 1 10 12 ") and lines[2].startswith("1 2003 2 10 12 ")
    back = read_mots_txt(path)
    assert [(o.frame, o.obj_id, o.class_id) for o in back] == [
        (0, 1001, 1),
        (0, 10000, 10),
        (1, 2003, 2),
    ]
    assert back[2].instance == 3 and back[1].is_ignore and not back[0].is_ignore
    assert np.array_equal(back[0].mask(), a) and np.array_equal(back[2].mask(), b)
    assert list(group_by_frame(back)) == [0, 1] and len(group_by_frame(back)[0]) == 2


def test_mots_txt_bad_lines(tmp_path: Path) -> None:
    p = tmp_path / "bad.txt"
    p.write_text("0 1001 1 10 12 abc\n1 1001 1 10\n")
    with pytest.raises(ValueError, match=r"bad.txt:2: expected 6"):
        read_mots_txt(p)
    p.write_text("x 1001 1 10 12 abc\n")
    with pytest.raises(ValueError, match=r"bad.txt:1: non-integer"):
        read_mots_txt(p)


def test_bdd_bitmask_channel_encoding(tmp_path: Path) -> None:
    a, b = _masks()
    rgba = encode_bdd_bitmask(
        [a, b], [300, 7], [3, 1], [{"truncated": True, "crowd": True}, {"ignore": True}]
    )
    # BDD100K: R = category, G = truncated<<3 | occluded<<2 | crowd<<1 | ignore, id = B<<8 | A
    assert rgba[2, 3].tolist() == [3, 8 + 2, 1, 44]  # 300 = 1 * 256 + 44
    assert rgba[7, 8].tolist() == [1, 1, 0, 7]
    assert rgba[0, 0].tolist() == [0, 0, 0, 0]
    path = write_bdd_bitmask(tmp_path / "f.png", rgba)
    dec = read_bdd_bitmask(path)
    assert np.array_equal(dec.instance, decode_bdd_bitmask(rgba).instance)
    inst = {i: (c, at, m) for i, c, at, m in dec.instances()}
    assert sorted(inst) == [7, 300]
    assert inst[300][0] == 3 and inst[300][1] == {
        "truncated": True,
        "occluded": False,
        "crowd": True,
        "ignore": False,
    }
    assert np.array_equal(inst[300][2], a) and np.array_equal(inst[7][2], b)
    with pytest.raises(ValueError, match="out of range"):
        encode_bdd_bitmask([a], [70000], [1])


def test_bdd_rle_json_round_trip(tmp_path: Path) -> None:
    a, b = _masks()
    frames = [
        BDDFrame("v-0000001.jpg", "v", 0, [mask_label("1", "car", a, score=0.9),
                                            mask_label("2", "pedestrian", b,
                                                       attributes={"occluded": True})]),
        BDDFrame("v-0000002.jpg", "v", 1, []),
    ]  # fmt: skip
    path = write_bdd_rle_json(tmp_path / "v.json", frames)
    raw = json.loads(path.read_text())
    assert raw[0]["labels"][0]["rle"]["size"] == [10, 12] and raw[0]["videoName"] == "v"
    back = read_bdd_rle_json(path)
    assert back[1].labels == [] and back[0].frame_index == 0
    assert back[0].labels[0].score == 0.9 and back[0].labels[1].attributes == {"occluded": True}
    assert np.array_equal(back[0].labels[0].mask(), a)
    assert np.array_equal(back[0].labels[1].mask(), b)
    (tmp_path / "bad.json").write_text(json.dumps([{"name": "x", "labels": [{"id": "1"}]}]))
    with pytest.raises(ValueError, match=r"bad.json: frames\[0\].labels\[0\]: missing"):
        read_bdd_rle_json(tmp_path / "bad.json")


def test_instances_to_mots_is_non_overlapping_and_thresholded() -> None:
    """Tracked instances -> MOTS objects: the higher score owns shared pixels, an instance
    left without pixels and one below the threshold are dropped, ids encode class + track."""
    import torch

    from instseg.data.mots import instances_to_mots

    a, b = _masks()
    covered = a.copy()  # inside a: a lower-scoring duplicate of it loses every pixel
    masks = torch.from_numpy(np.stack([a, b, covered, b]))
    inst = Instances(
        (10, 12), boxes=torch.zeros(4, 4), scores=torch.tensor([0.9, 0.8, 0.7, 0.2]),
        labels=torch.tensor([0, 1, 0, 1]), masks=masks, track_ids=torch.tensor([4, 7, 9, 11]),
    )  # fmt: skip
    objs = instances_to_mots(3, inst, score_thresh=0.3)
    assert [(o.frame, o.obj_id, o.class_id) for o in objs] == [(3, 1005, 1), (3, 1008, 1)]
    assert np.array_equal(objs[0].mask(), a) and np.array_equal(objs[1].mask(), b)
    objs = instances_to_mots(0, inst, class_ids=[1, 2], score_thresh=0.3)
    assert [o.obj_id for o in objs] == [1005, 2008]
    with pytest.raises(ValueError, match="track_ids"):
        instances_to_mots(0, Instances((10, 12), torch.zeros(0, 4), torch.ones(0), torch.ones(0)))


def test_video_to_mots_lists_every_present_frame() -> None:
    from instseg.data.mots import video_to_mots
    from instseg.data.ytvis import Video, VideoAnnotation

    a, b = (mask_to_rle(m) for m in _masks())
    anns = [
        VideoAnnotation(id=5, video_id=1, category_id=1, segmentations=[a, None, a]),
        VideoAnnotation(id=6, video_id=1, category_id=1, segmentations=[None, b, b]),
    ]
    video = Video(1, "v", 12, 10, ["0", "1", "2"], [Path("0"), Path("1"), Path("2")], anns)
    objs = video_to_mots(video)
    assert [(o.frame, o.obj_id) for o in objs] == [(0, 1001), (2, 1001), (1, 1002), (2, 1002)]
    assert {o.class_id for o in objs} == {1}
