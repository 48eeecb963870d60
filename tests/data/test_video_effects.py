"""Synthetic video effects (issue 15 deliverable 4): off = the old clips byte for byte; each
effect changes the frames as documented and is recorded in the JSON."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from instseg.data.synthetic import SceneConfig
from instseg.data.synthetic_video import (
    VideoConfig,
    VideoEffects,
    generate_videos,
    make_video,
    render_video,
)
from instseg.structures.masks import rle_to_mask

SCENE = SceneConfig(image_size=(64, 80), min_objects=2, max_objects=4, min_visible_area=20)
CFG = VideoConfig(scene=SCENE, num_frames=10, max_speed=0.05, enter_prob=0.4)
# computed with the generator before effects existed (commit 8627804)
FRAMES_DIGEST = "65c6e2ac1a3a0f80e7fc9d757e1b61e90208aab39c4225f58e0ab3ca38c00f0b"
ANNS_DIGEST = "f90e4a6a9ec59185eba2c65ab47250dbd069dfed5f37aeda21b2331e4b854b8f"


def _with(**effects: object) -> VideoConfig:
    return dataclasses.replace(CFG, effects=VideoEffects(**effects))  # type: ignore[arg-type]


def _check_layers(frame: np.ndarray, objects: list[dict], t: int) -> None:
    """Every visible pixel of every object shows its own (drawn) sprite."""
    for o in objects:
        vis, spr = o["visible"][t], o["frame_sprites"][t]
        x, y = o["positions"][t]
        ys, xs = np.nonzero(vis)
        np.testing.assert_array_equal(frame[ys, xs], spr.rgb[ys - y, xs - x])
        np.testing.assert_array_equal(o["amodal"][t][ys, xs], spr.mask[ys - y, xs - x])


def test_effects_off_is_the_old_generator(tmp_path: Path) -> None:
    h = hashlib.sha256()
    for v in range(3):
        frames, objects = make_video(np.random.default_rng([7, v]), CFG)
        for f in frames:
            h.update(f.tobytes())
        for o in objects:
            for m in o["visible"]:
                h.update(np.packbits(m).tobytes())
    assert h.hexdigest() == FRAMES_DIGEST
    data = json.loads(generate_videos(tmp_path, num_videos=2, seed=3, config=CFG).read_text())
    anns = json.dumps(data["annotations"], sort_keys=True).encode()
    assert hashlib.sha256(anns).hexdigest() == ANNS_DIGEST
    assert "effects" not in data["info"]["config"]
    assert all("corrupted_frames" not in v for v in data["videos"])


def test_corruption_changes_only_the_listed_frames() -> None:
    cfg = _with(corrupt_prob=0.5)
    seen = set()
    for v in range(4):
        clean = render_video(np.random.default_rng([5, v]), CFG)
        bad = render_video(np.random.default_rng([5, v]), cfg)
        assert bad.corruptions[0] is None
        for t, kind in enumerate(bad.corruptions):
            same = np.array_equal(clean.frames[t], bad.frames[t])
            assert same == (kind is None), (v, t, kind)
            for a, b in zip(clean.objects, bad.objects, strict=True):
                np.testing.assert_array_equal(a["visible"][t], b["visible"][t])
            if kind == "dark":
                assert bad.frames[t].mean() < 0.5 * clean.frames[t].mean() + 1
            if kind == "blur":  # fewer sharp edges
                d = np.abs(np.diff(bad.frames[t].astype(int), axis=1)).mean()
                assert d < np.abs(np.diff(clean.frames[t].astype(int), axis=1)).mean()
            seen.add(kind)
    assert {"noise", "dark", "blur"} <= seen


def test_patches_last_one_to_three_frames_and_stay_on_their_object() -> None:
    cfg = _with(patch_prob=1.0)
    runs = []
    for v in range(6):
        clean = render_video(np.random.default_rng([6, v]), CFG)
        clip = render_video(np.random.default_rng([6, v]), cfg)
        for t in range(cfg.num_frames):
            diff = np.any(clean.frames[t] != clip.frames[t], axis=-1)
            on = [o for o in clip.objects if o["patched"][t]]
            if not on:
                assert not diff.any()
                continue
            boxes = np.zeros_like(diff)
            for o in on:
                ys, xs = np.nonzero(o["amodal"][t])
                boxes[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1] = True
            assert diff.any() and not (diff & ~boxes).any()
            for a, b in zip(clean.objects, clip.objects, strict=True):  # GT unchanged
                np.testing.assert_array_equal(a["visible"][t], b["visible"][t])
        for o in clip.objects:
            flags = np.array(o["patched"], int)
            starts = np.flatnonzero(np.diff(np.r_[0, flags]) == 1)
            ends = np.flatnonzero(np.diff(np.r_[flags, 0]) == -1)
            runs += list(ends - starts + 1)
            assert not o["patched"][0]
    assert runs and min(runs) >= 1 and max(runs) <= 3 and len(set(runs)) > 1


def test_patch_in_gt_cuts_the_visible_mask() -> None:
    clip = render_video(np.random.default_rng([6, 0]), _with(patch_prob=1.0, patch_in_gt=True))
    plain = render_video(np.random.default_rng([6, 0]), _with(patch_prob=1.0))
    cut = 0
    for a, b in zip(clip.objects, plain.objects, strict=True):
        for t in range(CFG.num_frames):
            assert not (a["visible"][t] & ~b["visible"][t]).any()
            cut += int((b["visible"][t] & ~a["visible"][t]).sum())
            np.testing.assert_array_equal(a["amodal"][t], b["amodal"][t])
    assert cut > 0


def test_appearance_drift_keeps_geometry_and_changes_colours() -> None:
    cfg = _with(colour_drift=0.4, brightness_drift=0.2)
    clean = render_video(np.random.default_rng([8, 0]), CFG)
    clip = render_video(np.random.default_rng([8, 0]), cfg)
    np.testing.assert_array_equal(clean.frames[0], clip.frames[0])
    last = CFG.num_frames - 1
    obj = np.zeros(SCENE.image_size, bool)
    for a, b in zip(clean.objects, clip.objects, strict=True):
        assert a["positions"] == b["positions"]
        np.testing.assert_array_equal(a["visible"][last], b["visible"][last])
        obj |= b["visible"][last]
    assert obj.any()
    diff = np.any(clean.frames[last] != clip.frames[last], axis=-1)
    assert diff[obj].mean() > 0.5 and not diff[~obj].any()
    for t in range(CFG.num_frames):
        _check_layers(clip.frames[t], clip.objects, t)


def test_scale_drift_and_camera_motion_keep_masks_on_the_painted_objects() -> None:
    cfg = _with(scale_drift=0.4, camera_speed=0.03, camera_zoom=0.3)
    changed_size = moved_bg = 0
    for v in range(4):
        clean = render_video(np.random.default_rng([9, v]), CFG)
        clip = render_video(np.random.default_rng([9, v]), cfg)
        np.testing.assert_array_equal(clean.frames[0], clip.frames[0])  # identity at t = 0
        for t in range(cfg.num_frames):
            _check_layers(clip.frames[t], clip.objects, t)
        for o in clip.objects:
            changed_size += o["frame_sprites"][-1].size != o["sprite"].size
        bg = ~np.any([o["amodal"][-1] | c["amodal"][-1] for o, c in
                      zip(clip.objects, clean.objects, strict=True)], axis=0)  # fmt: skip
        moved_bg += bool(np.any(clip.frames[-1][bg] != clean.frames[-1][bg]))
    assert changed_size > 0 and moved_bg > 0


def test_json_records_corrupted_frames(tmp_path: Path) -> None:
    cfg = _with(corrupt_prob=0.4, patch_prob=0.7)
    data = json.loads(generate_videos(tmp_path, num_videos=3, seed=2, config=cfg).read_text())
    assert data["info"]["config"]["effects"]["corrupt_prob"] == 0.4
    total = 0
    for v in data["videos"]:
        clip = render_video(np.random.default_rng([2, v["id"] - 1]), cfg)
        assert v["corruptions"] == clip.corruptions
        patched = [t for t in range(v["length"]) if any(o["patched"][t] for o in clip.objects)]
        assert v["patched_frames"] == patched
        kinds = [t for t, c in enumerate(clip.corruptions) if c]
        assert v["corrupted_frames"] == sorted(set(patched) | set(kinds))
        total += len(v["corrupted_frames"])
        for a in (a for a in data["annotations"] if a["video_id"] == v["id"]):
            assert len(a["patched"]) == v["length"]
            for t, seg in enumerate(a["segmentations"]):
                if a["patched"][t] and seg is not None:
                    assert rle_to_mask(seg).any()
    assert total > 0


def test_effects_validation() -> None:
    with pytest.raises(ValueError):
        VideoEffects(corruptions=("rain",))
    with pytest.raises(ValueError):
        VideoEffects(corrupt_prob=1.5)
    with pytest.raises(ValueError):
        VideoEffects(patch_max_frames=0)
    assert not VideoEffects().active and VideoEffects(camera_zoom=0.1).moves_geometry
