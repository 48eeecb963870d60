"""Amodal shape completion transformer: shapes, class embedding x visible mask, spatio-temporal
attention, canvas crop/paste, and self-supervised overfitting on a synthesised occlusion."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from instseg.data.video_occlusion import occlude_clip, synthetic_occluder
from instseg.models.inpainting.shape_completion import (
    AmodalShapeCompletion,
    MultiScaleAttention,
    crop_to_canvas,
    mask_iou,
    object_canvas,
    paste_canvas,
    shape_completion_loss,
)


def _tiny(num_classes=3) -> AmodalShapeCompletion:
    torch.manual_seed(0)
    return AmodalShapeCompletion(
        num_classes=num_classes,
        embed_dim=32,
        num_layers=2,
        num_heads=2,
        patch_sizes=(8, 16),
        decoder_dim=16,
    )


def test_default_is_the_paper_configuration():
    m = AmodalShapeCompletion(num_classes=5)
    assert len(m.layers) == 8
    assert m.layers[0].attn.head_patch == [2, 4, 2, 4]  # 8 / 16 canvas pixels at stride 4


def test_shapes_and_class_embedding_only_through_visible_mask():
    m = _tiny()
    v = torch.zeros(2, 3, 1, 32, 32)
    with torch.no_grad():
        empty = [m(v, torch.tensor([c, c])) for c in range(3)]
        assert empty[0].shape == (2, 3, 1, 32, 32)
        assert torch.equal(empty[0], empty[2])  # E_cls * M_vis vanishes without visible pixels
        v[..., 8:20, 10:22] = 1
        assert not torch.allclose(m(v, torch.tensor([0, 0])), m(v, torch.tensor([2, 2])))
    with pytest.raises(ValueError, match="labels"):
        m(v)
    with pytest.raises(ValueError, match="labels"):
        m(v, torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="multiple"):
        m(torch.zeros(1, 2, 1, 24, 24), torch.tensor([0]))
    agnostic = _tiny(num_classes=0)
    assert agnostic(v).shape == v.shape


def test_attention_spans_the_whole_clip_at_each_scale():
    torch.manual_seed(0)
    att = MultiScaleAttention(dim=8, num_heads=2, patch_sizes=(1, 2))
    x = torch.randn(4, 8, 4, 4)  # B=1, T=4
    with torch.no_grad():
        y = att(x, num_frames=4)
        x2 = x.clone()
        x2[0, :, 0, 0] += 5.0  # one pixel of frame 0
        y2 = att(x2, num_frames=4)
    assert y.shape == x.shape
    assert not torch.allclose(y[3], y2[3])  # reaches the last frame (distant in time)
    # two clips in a batch do not attend to each other
    with torch.no_grad():
        yb = att(torch.cat([x, x2]), num_frames=4)
    torch.testing.assert_close(yb[:4], y)


def test_canvas_crop_and_paste_round_trip():
    vis = np.zeros((3, 50, 70), bool)
    for t in range(3):
        vis[t, 10 + t : 30 + t, 20 + 2 * t : 45 + 2 * t] = True
    vis[1] = False  # nothing visible in the middle frame: its box is interpolated
    canvas, boxes = object_canvas(vis, size=32, context=2.0)
    assert canvas.shape == (3, 32, 32) and boxes.shape == (3, 4)
    np.testing.assert_allclose(boxes[:, 2] - boxes[:, 0], 50.0)  # 2 x the largest side (25)
    np.testing.assert_allclose(boxes[1], (boxes[0] + boxes[2]) / 2)
    back = paste_canvas(canvas * 40 - 20, boxes, vis.shape[1:]) > 0
    for t in (0, 2):
        assert mask_iou(back[t], torch.from_numpy(vis[t])) > 0.9
    assert not back[:, :, :5].any()  # far outside the boxes
    with pytest.raises(ValueError, match="not visible"):
        object_canvas(np.zeros((2, 8, 8), bool))


def test_self_supervised_overfit_on_a_synthesised_occlusion():
    rng = np.random.default_rng(0)
    t_len, size = 4, 64
    amodal = np.zeros((t_len, size, size), np.uint8)
    for t in range(t_len):
        cv2.ellipse(amodal[t], (24 + 3 * t, 32), (14, 9), 0, 0, 360, 1, -1)
    amodal = amodal.astype(bool)
    clip = occlude_clip(
        np.zeros((t_len, size, size, 3), np.uint8),
        amodal,
        synthetic_occluder(rng, size=32),
        rng=rng,
        occlusion_ratio=0.3,
    )
    assert clip.holes.any()
    canvas, boxes = object_canvas(clip.visible, size=32)
    gt = crop_to_canvas(amodal, boxes, size=32) > 0.5  # the amodal target on the same canvas
    assert gt.sum() > (canvas > 0.5).sum()
    v = torch.from_numpy(canvas)[None, :, None]
    g = torch.from_numpy(gt).float()[:, None][None]
    m = _tiny(num_classes=2)
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    losses = []
    for _ in range(50):
        loss = sum(shape_completion_loss(m(v, torch.tensor([1])), g).values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.2 * losses[0]
    with torch.no_grad():
        pred = m(v, torch.tensor([1])) > 0
    assert mask_iou(pred, g) > mask_iou(v > 0.5, g) + 0.15  # it completes the hidden part
