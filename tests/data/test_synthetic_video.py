"""Synthetic occlusion videos: exact per-frame masks, identities, motion, JSON layout."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from instseg.data.synthetic import SceneConfig
from instseg.data.synthetic_video import VideoConfig, generate_videos, make_video
from instseg.structures.masks import rle_to_mask

SCENE = SceneConfig(image_size=(64, 80), min_objects=2, max_objects=4, min_visible_area=20)
CFG = VideoConfig(scene=SCENE, num_frames=10, max_speed=0.05, enter_prob=0.4)


def _xywh(mask: np.ndarray) -> list[float]:
    ys, xs = np.nonzero(mask)
    return [
        float(xs.min()),
        float(ys.min()),
        float(xs.max() - xs.min() + 1),
        float(ys.max() - ys.min() + 1),
    ]


def test_make_video_frames_are_exact_layers() -> None:
    moved = entered = left = 0
    for v in range(6):
        frames, objects = make_video(np.random.default_rng([4, v]), CFG)
        assert len(frames) == CFG.num_frames and frames[0].shape == (64, 80, 3)
        for t, frame in enumerate(frames):
            nearer = np.zeros((64, 80), bool)
            for o in objects:
                amo, vis = o["amodal"][t], o["visible"][t]
                np.testing.assert_array_equal(vis, amo & ~nearer)
                x, y = o["positions"][t]
                # the frame shows the object's own sprite where it is visible
                ys, xs = np.nonzero(vis)
                np.testing.assert_array_equal(frame[ys, xs], o["sprite"].rgb[ys - y, xs - x])
                assert o["annotated"][t] == (int(vis.sum()) >= SCENE.min_visible_area)
                nearer |= amo
        for o in objects:
            inside = [bool(a.any()) for a in o["amodal"]]
            moved += o["positions"][0] != o["positions"][-1]
            entered += (not inside[0]) and inside[-1]
            left += inside[0] and not inside[-1]
    assert moved > 0 and entered > 0, "objects must move and enter the frame"
    assert entered + left > 0


def test_generate_videos_json(tmp_path: Path) -> None:
    path = generate_videos(tmp_path, num_videos=3, seed=0, config=CFG)
    data = json.loads(path.read_text())
    assert len(data["videos"]) == 3 and data["annotations"]
    assert {c["kind"] for c in data["categories"]} == {"shape"}
    for vid in data["videos"]:
        assert vid["length"] == len(vid["file_names"]) == CFG.num_frames
        assert cv2.imread(str(tmp_path / vid["file_names"][-1])).shape == (64, 80, 3)
        tracks = [a for a in data["annotations"] if a["video_id"] == vid["id"]]
        for t in range(vid["length"]):
            seen = [(a["depth_orders"][t], a) for a in tracks if a["depth_orders"][t] is not None]
            assert sorted(d for d, _ in seen) == list(range(len(seen)))
            vis = {
                d: rle_to_mask(a["segmentations"][t]) if a["segmentations"][t] else None
                for d, a in seen
            }
            for d, a in seen:
                amo = rle_to_mask(a["amodal_segmentations"][t])
                assert a["amodal_bboxes"][t] == _xywh(amo)
                assert a["amodal_areas"][t] == int(amo.sum())
                if vis[d] is None:
                    assert a["bboxes"][t] is None and a["areas"][t] is None
                    continue
                assert not (vis[d] & ~amo).any()
                assert a["bboxes"][t] == _xywh(vis[d]) and a["areas"][t] == int(vis[d].sum())
                for d2 in vis:  # nothing farther shows through a nearer amodal mask
                    if d2 > d and vis[d2] is not None:
                        assert not (vis[d2] & amo).any()
        for a in tracks:  # absent frames are null everywhere
            for t in range(vid["length"]):
                if a["amodal_segmentations"][t] is None:
                    assert a["segmentations"][t] is None and a["depth_orders"][t] is None


def test_generate_videos_is_deterministic(tmp_path: Path) -> None:
    a = generate_videos(tmp_path / "a", num_videos=2, num_frames=4, seed=9, config=CFG)
    b = generate_videos(tmp_path / "b", num_videos=2, num_frames=4, seed=9, config=CFG)
    c = generate_videos(tmp_path / "c", num_videos=2, num_frames=4, seed=10, config=CFG)
    assert a.read_bytes() == b.read_bytes() and a.read_bytes() != c.read_bytes()
    frame = "videos/000002/00003.png"
    assert (tmp_path / "a" / frame).read_bytes() == (tmp_path / "b" / frame).read_bytes()


def test_video_config_validation() -> None:
    with pytest.raises(ValueError, match="num_frames"):
        VideoConfig(num_frames=0)
    with pytest.raises(ValueError, match="enter_prob"):
        VideoConfig(enter_prob=2.0)
