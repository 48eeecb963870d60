"""Flow-guided propagation on synthetic known flows: exact fills from translated texture,
forward-backward cycle rejection, the amodal restriction, and blending."""

from __future__ import annotations

import cv2
import numpy as np

from instseg.models.inpainting.baselines import inpaint_opencv, propagation_baseline
from instseg.models.inpainting.flow_guided_propagation import propagate_pixels

H, W = 48, 64


def _translating_clip(t_len: int, dx: int, dy: int, seed: int = 0):
    """Texture moving by (dx, dy) px per frame, with the exact constant flows."""
    rng = np.random.default_rng(seed)
    big = cv2.GaussianBlur((rng.random((H + 40, W + 60, 3)) * 255).astype(np.uint8), (3, 3), 0)
    y0, x0 = 20, 30
    frames = np.stack(
        [big[y0 - dy * t : y0 - dy * t + H, x0 - dx * t : x0 - dx * t + W] for t in range(t_len)]
    )
    fwd = np.zeros((t_len - 1, H, W, 2), np.float32)
    fwd[..., 0], fwd[..., 1] = dx, dy
    return frames, fwd, -fwd


def test_translated_texture_is_filled_exactly_multi_step():
    frames, fwd, bwd = _translating_clip(6, dx=3, dy=1)
    np.testing.assert_array_equal(frames[1, 1:, 3:], frames[0, :-1, :-3])  # fixture sanity
    holes = np.zeros((6, H, W), bool)
    holes[:, 18:28, 25:32] = True  # 7 px wide, 3 px/frame: some pixels need 3 steps
    corrupted = frames.copy()
    corrupted[holes] = 0
    res = propagate_pixels(corrupted, holes, fwd, bwd)
    assert not res.unfilled.any()
    assert res.filled.sum() == holes.sum()
    np.testing.assert_array_equal(res.frames, frames)
    assert res.distance[holes].max() >= 3 and res.distance[~holes].max() == 0
    assert res.frames.dtype == np.uint8


def test_inconsistent_flow_pixel_is_rejected_by_cycle_check():
    frames, fwd, bwd = _translating_clip(2, dx=2, dy=0)
    holes = np.zeros((2, H, W), bool)
    holes[0, 20:24, 20:24] = True
    bad = bwd.copy()
    bad[0, 21, 23] += (0.0, 6.0)  # target of hole pixel (x=21, y=21): cycle error 6 > 5
    bad[0, 22, 24] += (4.0, 0.0)  # target of (x=22, y=22): cycle error 4 <= 5
    corrupted = frames.copy()
    corrupted[holes] = 0
    res = propagate_pixels(corrupted, holes, fwd, bad, cycle_threshold=5.0)
    assert res.unfilled[0, 21, 21] and not res.filled[0, 21, 21]
    assert res.filled[0, 22, 22]
    assert res.unfilled.sum() == 1
    ok = holes & ~res.unfilled
    np.testing.assert_array_equal(res.frames[ok], frames[ok])
    # a looser threshold accepts it
    assert not propagate_pixels(corrupted, holes, fwd, bad, cycle_threshold=7.0).unfilled.any()


def test_pixels_leaving_the_image_are_not_filled():
    frames, fwd, bwd = _translating_clip(2, dx=4, dy=0)
    holes = np.zeros((2, H, W), bool)
    holes[0, 10:12, W - 3 :] = True  # x + 4 > W - 1
    res = propagate_pixels(frames, holes, fwd, bwd)
    assert res.unfilled[0, 10:12, W - 3 :].all()


def test_amodal_restricts_targets_and_sources():
    frames, fwd, bwd = _translating_clip(2, dx=2, dy=0)
    holes = np.zeros((2, H, W), bool)
    holes[0, 10:20, 10:20] = True
    amodal = np.zeros((2, H, W), bool)
    amodal[0, 10:20, 10:18] = True  # hole columns 18, 19 are outside the object
    amodal[1, 10:20, 12:18] = True  # sources x+2 in 12..17 -> targets x in 10..15
    res = propagate_pixels(frames, holes, fwd, bwd, amodal=amodal)
    assert res.filled[0, 10:20, 10:16].all()
    assert res.unfilled[0, 10:20, 16:18].all()  # source lands on background in frame 1
    assert res.unfilled[0, 10:20, 18:20].all()  # not a target (outside the object)
    np.testing.assert_array_equal(res.frames[0, 10:20, 10:16], frames[0, 10:20, 10:16])


def test_bidirectional_blend_weights_by_temporal_distance():
    # constant-colour frames, zero flow: frame 0 = 0, frame 3 = 90; hole in frames 1, 2
    frames = np.zeros((4, 8, 8), np.float32)
    frames[3] = 90.0
    holes = np.zeros((4, 8, 8), bool)
    holes[1:3] = True
    zero = np.zeros((3, 8, 8, 2), np.float32)
    res = propagate_pixels(frames, holes, zero, zero)
    # frame 1: backward source at distance 1 (0), forward at distance 2 (90) -> 90 * 1/3
    np.testing.assert_allclose(res.frames[1], 30.0, atol=1e-4)
    np.testing.assert_allclose(res.frames[2], 60.0, atol=1e-4)


def test_baselines_fill_only_holes_and_flag_fallback():
    frames, fwd, bwd = _translating_clip(3, dx=5, dy=0)
    holes = np.zeros((3, H, W), bool)
    holes[:, 15:25, 20:28] = True  # 8 px wide, 5 px/frame: reachable within 2 steps
    holes[0, 0:4, W - 4 :] = True  # frame 0 near the right border: x + 5 leaves the image
    corrupted = frames.copy()
    corrupted[holes] = 255
    for method in ("telea", "ns"):
        out = inpaint_opencv(corrupted, holes, method=method)
        np.testing.assert_array_equal(out[~holes], frames[~holes])
        err = np.abs(out[holes].astype(int) - frames[holes]).mean()
        assert err < np.abs(255 - frames[holes].astype(int)).mean() / 2
    res = propagation_baseline(corrupted, holes, fwd, bwd)
    assert (res.propagated | res.fallback).sum() == holes.sum()
    assert not (res.propagated & res.fallback).any()
    assert res.fallback[0, 0:4, W - 4 :].all() and res.fallback.sum() == 16
    assert res.propagated_fraction == 1 - 16 / holes.sum()
    np.testing.assert_array_equal(res.frames[res.propagated], frames[res.propagated])


def test_targets_fill_only_those_frames_and_match_the_whole_run():
    frames, fwd, bwd = _translating_clip(8, dx=2, dy=1)
    holes = np.zeros((8, H, W), bool)
    holes[:, 18:28, 25:34] = True
    full = propagate_pixels(frames, holes, fwd, bwd, max_steps=2)
    part = propagate_pixels(frames, holes, fwd, bwd, max_steps=2, targets=[2, 5])
    for t in range(8):
        if t in (2, 5):
            np.testing.assert_array_equal(part.frames[t], full.frames[t])
            np.testing.assert_array_equal(part.filled[t], full.filled[t])
        else:
            assert not part.filled[t].any()
            np.testing.assert_array_equal(part.frames[t], frames[t])
    # frames 3..7 of a span 1..7 with max_steps 2 reach no further than the span: the same
    sub = propagate_pixels(
        frames[1:], holes[1:], fwd[1:], bwd[1:], max_steps=2, targets=range(2, 7)
    )
    np.testing.assert_array_equal(sub.frames[2:], full.frames[3:])
    # float16 flows are read as float32
    half = propagate_pixels(frames, holes, fwd.astype(np.float16), bwd.astype(np.float16))
    np.testing.assert_array_equal(half.frames, propagate_pixels(frames, holes, fwd, bwd).frames)
