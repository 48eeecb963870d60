"""The residual leftover generator (issue 16): its zero-initialised last layer makes the untrained
network return its input (propagation + Telea) exactly, at the network and at the crop level."""

from __future__ import annotations

import pytest
import torch

from instseg.models.inpainting.generator import OcclusionAwareGenerator
from instseg.models.inpainting.voin import VOIN_VARIANTS, VOINModel, generator_input_size


def _inputs(b=1, t=3, h=24, w=32):
    g = torch.Generator().manual_seed(0)
    frames = torch.rand(b, t, 3, h, w, generator=g) * 2 - 1
    hole = torch.zeros(b, t, 1, h, w)
    hole[..., 6:14, 8:20] = 1
    occluded = torch.zeros_like(hole)
    occluded[..., 4:16, 6:24] = 1
    amodal = torch.zeros_like(hole)
    amodal[..., 2:20, 4:28] = 1
    return frames, hole, occluded, amodal


def test_untrained_leftover_generator_returns_its_input_exactly():
    torch.manual_seed(0)
    gen = OcclusionAwareGenerator(base_channels=8, dilations=(2,), mode="leftover")
    assert gen.residual
    x = _inputs()
    assert torch.equal(gen(*x), x[0])  # raw output == Telea-filled propagated frames
    assert torch.equal(gen.inpaint(*x), x[0])
    assert not torch.equal(OcclusionAwareGenerator(base_channels=8, dilations=(2,))(*x), x[0])


def test_leftover_generator_reads_frames_inside_the_hole_and_the_occlusion_mask():
    """Its input is [X, leftover, M_occ]: X inside the leftover (Telea's fill) and the occlusion
    mask change the output once the last layer is not zero."""
    torch.manual_seed(0)
    gen = OcclusionAwareGenerator(base_channels=8, dilations=(2,), mode="leftover")
    torch.nn.init.normal_(gen.out.weight, std=0.1)
    frames, hole, occ, amodal = _inputs()
    base = gen(frames, hole, occ, amodal)
    other = frames.clone()
    other[..., 8:12, 10:18] = 0.5  # inside the leftover
    assert not torch.allclose(gen(other, hole, occ, amodal), base)
    assert not torch.allclose(gen(frames, hole, torch.zeros_like(occ), amodal), base)
    # corrections only inside the occluded region: known pixels pass through unchanged
    assert torch.equal(base * (1 - occ), frames * (1 - occ))
    assert not torch.equal(base * occ, frames * occ)
    assert isinstance(gen.encoder[0].conv.act, torch.nn.ELU)
    assert isinstance(OcclusionAwareGenerator(base_channels=8).encoder[0].conv.act, torch.nn.ReLU)


def test_voin_model_generate_is_identity_when_untrained():
    """At the crop level too (resize to the trained scale, residual upsampled back): the
    untrained leftover generator leaves the full-resolution crop unchanged."""
    torch.manual_seed(0)
    nets = VOIN_VARIANTS["small"](num_classes=1, generator_mode="leftover")
    model = VOINModel.from_nets(nets).eval()
    frames, hole, occ, amodal = (a[0] for a in _inputs(h=50, w=70))
    out = model.generate(frames, hole, occ, amodal, max_side=16)
    assert torch.equal(out, frames)


def test_generator_input_size():
    assert generator_input_size(50, 70, max_side=96, exact=True) == (68, 96)  # scaled up
    assert generator_input_size(50, 70, max_side=96, exact=False) == (48, 72)  # only down
    assert generator_input_size(500, 700, max_side=64, exact=False) == (44, 64)


def test_bad_mode():
    with pytest.raises(ValueError, match="mode"):
        OcclusionAwareGenerator(base_channels=8, mode="residual")  # type: ignore[arg-type]
