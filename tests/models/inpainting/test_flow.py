"""Flow utilities: warping with known flows (numpy and torch), EPE, cycle error, DIS on a known
translation, and RAFT's weights-file handling."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from instseg.evaluation.inpainting import flow_epe
from instseg.models.inpainting.flow import (
    RAFTFlow,
    clip_flows,
    dis_flow,
    fb_consistency_error,
    fill_clip_flows,
    fill_object_flow,
    warp,
)


def _texture(h: int, w: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return cv2.GaussianBlur((rng.random((h, w, 3)) * 255).astype(np.uint8), (5, 5), 0)


def test_warp_numpy_constant_integer_flow_is_a_shift():
    img = _texture(40, 50)
    flow = np.zeros((40, 50, 2), np.float32)
    flow[..., 0], flow[..., 1] = 3, -2  # out[y, x] = img[y - 2, x + 3]
    out = warp(img, flow)
    assert out.shape == img.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(out[2:, :-3], img[:-2, 3:])
    assert (out[:, -3:] == 0).all()  # sampled outside: zeros


def test_warp_torch_matches_numpy_bilinear():
    img = _texture(32, 36).astype(np.float32)
    flow = np.full((32, 36, 2), (1.25, 0.5), np.float32)
    ref = warp(img, flow)
    t = warp(
        torch.from_numpy(img).permute(2, 0, 1)[None], torch.from_numpy(flow).permute(2, 0, 1)[None]
    )
    got = t[0].permute(1, 2, 0).numpy()
    np.testing.assert_allclose(got[1:-2, 1:-2], ref[1:-2, 1:-2], atol=1e-2)


def test_warp_torch_is_differentiable_in_flow():
    img = torch.rand(1, 3, 16, 16)
    flow = torch.full((1, 2, 16, 16), 0.3, requires_grad=True)
    warp(img, flow).sum().backward()
    assert flow.grad is not None and flow.grad.abs().sum() > 0


def test_flow_epe_values_mask_and_torch_layout():
    gt = np.zeros((10, 12, 2), np.float32)
    pred = gt.copy()
    pred[:5] = (3.0, 4.0)  # error 5 on the top half, 0 below
    assert flow_epe(pred, gt) == pytest.approx(2.5)
    mask = np.zeros((10, 12), bool)
    mask[:5] = True
    assert flow_epe(pred, gt, mask) == pytest.approx(5.0)
    assert flow_epe(pred, gt, ~mask) == pytest.approx(0.0)
    assert np.isnan(flow_epe(pred, gt, np.zeros_like(mask)))
    tp = torch.from_numpy(pred).permute(2, 0, 1)[None]
    tg = torch.from_numpy(gt).permute(2, 0, 1)[None]
    assert flow_epe(tp, tg, torch.from_numpy(mask)[None]) == pytest.approx(5.0)


def test_fb_consistency_error_zero_for_consistent_and_flags_bad():
    fwd = np.full((20, 20, 2), (2.0, 1.0), np.float32)
    bwd = -fwd
    err = fb_consistency_error(fwd, bwd)
    assert np.allclose(err[:-1, :-2], 0.0)
    assert np.isinf(err[:, -2:]).all()  # targets leave the image
    bad = bwd.copy()
    bad[6, 7] += (6.0, 0.0)  # the reverse flow at the target of (x=5, y=5)
    assert fb_consistency_error(fwd, bad)[5, 5] == pytest.approx(6.0)


def test_dis_recovers_known_translation():
    big = _texture(90, 110, seed=1)
    a, b = big[10:74, 10:90], big[8:72, 13:93]  # content moves by (-3, +2) from a to b
    fwd, bwd = clip_flows(np.stack([a, b]), preset="medium")
    assert fwd.shape == (1, 64, 80, 2) and bwd.shape == fwd.shape
    inner = (slice(10, -10), slice(10, -10))
    med_f = np.median(fwd[0][inner].reshape(-1, 2), axis=0)
    med_b = np.median(bwd[0][inner].reshape(-1, 2), axis=0)
    np.testing.assert_allclose(med_f, (-3.0, 2.0), atol=0.25)
    np.testing.assert_allclose(med_b, (3.0, -2.0), atol=0.25)
    fine = dis_flow(a, b, preset="fine")
    assert flow_epe(fine[inner], np.broadcast_to(np.float32([-3, 2]), fine[inner].shape)) < 0.5
    with pytest.raises(ValueError, match="preset"):
        dis_flow(a, b, preset="extreme")  # type: ignore[arg-type]


def test_raft_needs_a_local_weights_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="raft.pt"):
        RAFTFlow(weights=tmp_path / "raft.pt")
    bad = tmp_path / "bad.pt"
    torch.save({"not": torch.zeros(1)}, bad)
    with pytest.raises(ValueError, match="bad.pt"):
        RAFTFlow(weights=bad)


def _object_scene(h: int = 80, w: int = 120):
    """An object moving by (3, -1) px whose right part is hidden by an occluder moving by
    (-6, 2): the measured flow shows the occluder's motion inside the hole."""
    yy, xx = np.mgrid[:h, :w]
    amodal = (abs(yy - 40) < 25) & (abs(xx - 55) < 40)
    hole = amodal & (xx > 60)
    visible = amodal & ~hole
    flow = np.zeros((h, w, 2), np.float32)
    flow[amodal] = (3.0, -1.0)
    flow[xx > 60] = (-6.0, 2.0)  # the occluder covers the hole and beyond
    return flow, hole, visible, amodal


def test_fill_object_flow_restores_the_objects_motion_in_the_hole():
    flow, hole, visible, amodal = _object_scene()
    out = fill_object_flow(flow, hole, visible)
    np.testing.assert_allclose(out[hole], np.tile([3.0, -1.0], (hole.sum(), 1)), atol=1e-4)
    # unchanged away from the hole (outside the object, and deep inside its visible part)
    far = ~amodal | (visible & (np.mgrid[:80, :120][1] < 30))
    np.testing.assert_array_equal(out[far], flow[far])
    assert out.dtype == np.float32 and out.shape == flow.shape


def test_fill_object_flow_band_and_edge_cases():
    flow, hole, visible, _ = _object_scene()
    # DIS smears the occluder's motion into the visible band next to the hole: refilled
    smeared = flow.copy()
    band = visible & (np.mgrid[:80, :120][1] > 52)
    smeared[band] = (-6.0, 2.0)
    out = fill_object_flow(smeared, hole, visible, erode=12)
    np.testing.assert_allclose(out[hole | band].mean(0), [3.0, -1.0], atol=1e-3)
    # nothing to fill / nothing known: returned unchanged (a copy)
    empty = np.zeros_like(hole)
    for h_, k_ in ((empty, visible), (hole, empty)):
        res = fill_object_flow(flow, h_, k_)
        assert res is not flow and np.array_equal(res, flow)
    with pytest.raises(ValueError, match="fill_object_flow"):
        fill_object_flow(flow[:, :10], hole, visible)


def test_fill_clip_flows_uses_each_flows_own_frame():
    flow, hole, visible, _ = _object_scene()
    empty = np.zeros_like(hole)
    holes = np.stack([hole, empty])
    vis = np.stack([visible, visible])
    fwd, bwd = fill_clip_flows(flow[None], flow[None], holes, vis)
    assert np.allclose(fwd[0][hole], [3.0, -1.0], atol=1e-4)  # forward[0] lives on frame 0
    assert np.array_equal(bwd[0], flow)  # backward[0] lives on frame 1: no hole there
