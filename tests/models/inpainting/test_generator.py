"""Occlusion-aware gated TSM generator: shapes, composition, gating guidance, overfitting."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from instseg.models.inpainting.discriminators import reconstruction_losses
from instseg.models.inpainting.generator import OcclusionAwareGenerator, compose
from instseg.models.layers.gated_tsm import GatedTSMConv


def _inputs(b=1, t=3, h=16, w=20, seed=0):
    g = torch.Generator().manual_seed(seed)
    frames = torch.rand(b, t, 3, h, w, generator=g) * 2 - 1
    amodal = torch.zeros(b, t, 1, h, w)
    amodal[..., 4:12, 5:15] = 1
    hole = torch.zeros_like(amodal)
    hole[..., 6:10, 8:13] = 1
    return frames, hole, hole.clone(), amodal


def _tiny(**kw) -> OcclusionAwareGenerator:
    torch.manual_seed(0)
    return OcclusionAwareGenerator(base_channels=8, dilations=(2, 4), **kw)


def test_shapes_range_and_composition():
    gen = _tiny()
    frames, hole, occ, amodal = _inputs()
    raw = gen(frames, hole, occ, amodal)
    assert raw.shape == frames.shape and raw.abs().max() <= 1
    out = gen.inpaint(frames, hole, occ, amodal)
    keep = hole.expand_as(frames) == 0
    assert torch.equal(out[keep], frames[keep])
    torch.testing.assert_close(out[~keep], raw[~keep])
    torch.testing.assert_close(compose(raw, frames, hole), out)
    # every conv except the output one is a gated TSM conv with shift radius 2
    gtsm = [m for m in gen.modules() if isinstance(m, GatedTSMConv)]
    assert len(gtsm) == 5 + 2 + 4 and all(m.shift_steps == 2 for m in gtsm)


def test_hole_content_is_ignored_and_gates_follow_the_masks():
    gen = _tiny()
    frames, hole, occ, amodal = _inputs()
    with torch.no_grad():
        ref = gen(frames, hole, occ, amodal)
        frames2 = torch.where(hole.bool(), torch.randn_like(frames), frames)
        torch.testing.assert_close(gen(frames2, hole, occ, amodal), ref)
        amodal2 = amodal.clone()
        amodal2[..., 2:4, :] = 1
        assert not torch.allclose(gen(frames, hole, occ, amodal2), ref)
        plain = _tiny(occlusion_aware=False)
        assert torch.equal(plain(frames, hole, occ, amodal), plain(frames, hole, occ, amodal2))


def test_bad_inputs():
    gen = _tiny()
    frames, hole, occ, amodal = _inputs(h=18)
    with pytest.raises(ValueError, match="divisible by 4"):
        gen(frames, hole, occ, amodal)
    frames, hole, occ, amodal = _inputs()
    with pytest.raises(ValueError, match="amodal"):
        gen(frames, hole, occ, amodal[:, :2])


def test_overfits_one_clip():
    torch.manual_seed(0)
    gen = OcclusionAwareGenerator(base_channels=16, dilations=(2, 4))
    g = torch.Generator().manual_seed(0)
    smooth = torch.rand(3, 3, 3, 3, generator=g)
    frames = F.interpolate(smooth, size=(12, 12), mode="bilinear")[None] * 2 - 1
    hole = torch.zeros(1, 3, 1, 12, 12)
    hole[..., 4:8, 3:9] = 1
    amodal = torch.zeros_like(hole)
    amodal[..., 2:10, 2:10] = 1
    opt = torch.optim.Adam(gen.parameters(), lr=3e-3)
    losses = []
    for _ in range(80):
        out = gen.inpaint(frames, hole, hole, amodal)
        loss = reconstruction_losses(out, frames, hole)["l1_hole"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
