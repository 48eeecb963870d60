"""Occlusion data generation: mask invariants, corruption modes, determinism, the occlusion
ratio knob, and the fixed on-disk evaluation split (on a tiny generated DAVIS-style folder)."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from PIL import Image

from instseg.data.video_occlusion import (
    SPLIT_KINDS,
    load_davis_sequence,
    make_eval_split,
    occlude_clip,
    occluder_from_mask,
    synthetic_occluder,
)

T, H, W = 8, 72, 96


def _clip(seed: int = 0):
    """Textured frames and a moving ellipse object."""
    rng = np.random.default_rng(seed)
    frames = (rng.random((T, H, W, 3)) * 255).astype(np.uint8)
    masks = np.zeros((T, H, W), np.uint8)
    for t in range(T):
        cv2.ellipse(masks[t], (30 + 3 * t, 36), (18, 13), 10.0 * t, 0, 360, 1, -1)
    return frames, masks.astype(bool)


def _occlude(seed: int, ratio: float = 0.3, corruption: str = "occluder"):
    frames, masks = _clip()
    rng = np.random.default_rng(seed)
    occ = synthetic_occluder(rng, size=48)
    return occlude_clip(frames, masks, occ, rng=rng, occlusion_ratio=ratio, corruption=corruption)


def test_mask_invariants_and_frames_differ_only_in_holes():
    c = _occlude(0)
    assert c.frames.shape == (T, H, W, 3) and c.holes.shape == (T, H, W)
    np.testing.assert_array_equal(c.visible | c.holes, c.amodal)
    assert not (c.visible & c.holes).any()
    np.testing.assert_array_equal(c.holes, c.amodal & c.occluder)
    assert c.holes.any()
    np.testing.assert_array_equal(c.frames[~c.holes], c.gt[~c.holes])
    np.testing.assert_array_equal(c.gt[c.holes], c.clean[c.holes])
    # occluder pixels outside the object are painted too, and are part of the target
    outside = c.occluder & ~c.amodal
    assert outside.any() and (c.frames[outside] != c.clean[outside]).any()


def test_zero_corruption_mode():
    c = _occlude(0, corruption="zero")
    assert (c.frames[c.holes] == 0).all()
    np.testing.assert_array_equal(c.frames[~c.holes], c.clean[~c.holes])
    np.testing.assert_array_equal(c.gt, c.clean)
    with pytest.raises(ValueError, match="corruption"):
        _occlude(0, corruption="blur")


def test_determinism_for_a_seed():
    a, b, c = _occlude(5), _occlude(5), _occlude(6)
    for name in ("frames", "gt", "holes", "visible", "occluder"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert not np.array_equal(a.holes, c.holes)


def test_occlusion_ratio_knob():
    achieved = [float(np.nanmean(_occlude(1, ratio=r).ratio)) for r in (0.15, 0.35, 0.6)]
    np.testing.assert_allclose(achieved, [0.15, 0.35, 0.6], atol=0.03)
    c = _occlude(1, ratio=0.35)
    per_frame = c.holes.sum((1, 2)) / c.amodal.sum((1, 2))
    np.testing.assert_allclose(c.ratio, per_frame)
    with pytest.raises(ValueError, match="occlusion_ratio"):
        _occlude(1, ratio=0.0)


def test_occluder_track_is_smooth():
    c = _occlude(2)
    step = np.linalg.norm(np.diff(c.track.centers, axis=0), axis=1)
    assert step.max() < 12.0  # object moves 3 px/frame; the occluder follows smoothly


def test_occluder_from_mask_crops_tightly():
    img = np.arange(20 * 30 * 3, dtype=np.uint8).reshape(20, 30, 3)
    m = np.zeros((20, 30), bool)
    m[5:9, 10:16] = True
    occ = occluder_from_mask(img, m, source="x")
    assert occ.mask.shape == (4, 6) and occ.mask.all()
    np.testing.assert_array_equal(occ.rgb, img[5:9, 10:16])
    with pytest.raises(ValueError, match="empty"):
        occluder_from_mask(img, np.zeros_like(m))


@pytest.fixture()
def tiny_davis(tmp_path):
    """A DAVIS-style folder with two 6-frame sequences (JPEG frames, 0/255 PNG masks)."""
    rng = np.random.default_rng(0)
    for k, name in enumerate(("alpha", "beta")):
        jd = tmp_path / "JPEGImages" / "480p" / name
        ad = tmp_path / "Annotations" / "480p" / name
        jd.mkdir(parents=True)
        ad.mkdir(parents=True)
        for t in range(6):
            Image.fromarray((rng.random((H, W, 3)) * 255).astype(np.uint8)).save(
                jd / f"{t:05d}.jpg"
            )
            m = np.zeros((H, W), np.uint8)
            cv2.circle(m, (30 + 2 * t + 10 * k, 36), 16, 255, -1)
            Image.fromarray(m).save(ad / f"{t:05d}.png")
    return tmp_path


def test_load_davis_sequence(tiny_davis):
    frames, masks, paths = load_davis_sequence(tiny_davis, "alpha", start=1, num_frames=4)
    assert frames.shape == (4, H, W, 3) and masks.shape == (4, H, W) and masks.dtype == bool
    assert [p.name for p in paths] == ["00001.jpg", "00002.jpg", "00003.jpg", "00004.jpg"]
    with pytest.raises(FileNotFoundError, match="gamma"):
        load_davis_sequence(tiny_davis, "gamma")
    with pytest.raises(ValueError, match="frames"):
        load_davis_sequence(tiny_davis, "alpha", num_frames=10)


def test_eval_split_is_fixed_for_a_seed(tiny_davis, tmp_path):
    kw = dict(
        num_frames=5,
        occlusion_ratio=(0.2, 0.4),
        occluder_sequences=["alpha", "beta"],
        synthetic_prob=0.0,
    )
    m1 = make_eval_split(tiny_davis, ["alpha", "beta"], seed=3, out_dir=tmp_path / "s1", **kw)
    make_eval_split(tiny_davis, ["beta"], seed=3, out_dir=tmp_path / "s2", **kw)
    m3 = make_eval_split(tiny_davis, ["beta"], seed=4, out_dir=tmp_path / "s3", **kw)
    assert json.loads((tmp_path / "s1" / "manifest.json").read_text()) == m1
    assert m1["sequences"]["alpha"]["occluder"].startswith("beta/")  # never itself
    assert 0.2 <= m1["sequences"]["beta"]["target_ratio"] <= 0.4
    for kind in SPLIT_KINDS:  # same seed, other sequence list: identical files for "beta"
        for t in range(5):
            f = f"{kind}/beta/{t:05d}.png"
            assert (tmp_path / "s1" / f).read_bytes() == (tmp_path / "s2" / f).read_bytes(), f
    assert m3["sequences"]["beta"]["centers"] != m1["sequences"]["beta"]["centers"]

    def read(kind: str, t: int) -> np.ndarray:
        return np.asarray(Image.open(tmp_path / "s1" / kind / "alpha" / f"{t:05d}.png"))

    for t in range(5):
        vis, hole, amo = (read(k, t) > 127 for k in ("visible", "holes", "amodal"))
        np.testing.assert_array_equal(vis | hole, amo)
        assert not (vis & hole).any()
        fr, gt = read("frames", t), read("gt", t)
        assert fr.shape == (H, W, 3)
        np.testing.assert_array_equal(fr[~hole], gt[~hole])
