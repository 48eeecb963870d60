"""Temporal shift (exact channel moves, zero padding, gradients), gated conv and the
occlusion-aware gated TSM conv."""

from __future__ import annotations

import pytest
import torch

from instseg.models.layers.gated_tsm import GatedConv2d, GatedTSMConv, temporal_shift


def _clip(b=2, t=4, c=16, h=3, w=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, t, c, h, w, generator=g)


def test_shift_moves_exactly_the_configured_channels_by_one_frame():
    x = _clip()
    out = temporal_shift(x, fold_div=8)  # fold = 2: channels 0-1 forward, 2-3 backward
    assert out.shape == x.shape
    torch.testing.assert_close(out[:, 1:, 0:2], x[:, :-1, 0:2])
    torch.testing.assert_close(out[:, :-1, 2:4], x[:, 1:, 2:4])
    assert (out[:, 0, 0:2] == 0).all() and (out[:, -1, 2:4] == 0).all()
    torch.testing.assert_close(out[:, :, 4:], x[:, :, 4:])
    # exactly 4 channels differ from the input
    changed = (out != x).flatten(3).any(-1).any(0).any(0)
    assert changed.nonzero().flatten().tolist() == [0, 1, 2, 3]


def test_shift_radius_two_and_fraction():
    x = _clip(t=5, c=12)
    out = temporal_shift(x, fold_div=6, shift_steps=2)  # fold 2, groups f1 b1 f2 b2
    torch.testing.assert_close(out[:, 2:, 4:6], x[:, :-2, 4:6])
    torch.testing.assert_close(out[:, :-2, 6:8], x[:, 2:, 6:8])
    assert (out[:, :2, 4:6] == 0).all() and (out[:, -2:, 6:8] == 0).all()
    torch.testing.assert_close(out[:, :, 8:], x[:, :, 8:])
    with pytest.raises(ValueError, match="exceed"):
        temporal_shift(x, fold_div=2, shift_steps=2)
    torch.testing.assert_close(temporal_shift(x, fold_div=8, shift_steps=0), x)


def test_shift_gradient_is_the_reverse_shift():
    x = _clip(t=3).requires_grad_(True)
    w = torch.randn_like(x)
    (temporal_shift(x, fold_div=8) * w).sum().backward()
    g = x.grad
    torch.testing.assert_close(g[:, :-1, 0:2], w[:, 1:, 0:2])
    assert (g[:, -1, 0:2] == 0).all()  # the last frame's forward channels fall off the clip
    torch.testing.assert_close(g[:, 1:, 2:4], w[:, :-1, 2:4])
    torch.testing.assert_close(g[:, :, 4:], w[:, :, 4:])


def test_gated_conv_gate_and_shapes():
    torch.manual_seed(0)
    conv = GatedConv2d(in_channels=3, out_channels=5, kernel_size=3, stride=2)
    x = torch.randn(2, 3, 9, 8)
    y = conv(x)
    assert y.shape == (2, 5, 5, 4) and (y >= 0).all()
    closed = conv(x, gate_bias=torch.full((2, 5, 5, 4), -1e4))
    assert closed.abs().max() < 1e-6
    opened = conv(x, gate_bias=torch.full((2, 5, 5, 4), 1e4))
    torch.testing.assert_close(opened, torch.relu(conv.feature(x)))
    with pytest.raises(ValueError, match="odd"):
        GatedConv2d(in_channels=3, out_channels=5, kernel_size=4)


def test_gated_tsm_conv_mixes_time_and_uses_guide():
    torch.manual_seed(0)
    layer = GatedTSMConv(in_channels=8, out_channels=6, stride=2, fold_div=4, guide_channels=2)
    x = torch.randn(1, 3, 8, 10, 10, requires_grad=True)
    guide = (torch.rand(1, 3, 2, 40, 40) > 0.5).float()  # any resolution
    y = layer(x, guide)
    assert y.shape == (1, 3, 6, 5, 5)
    y.square().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in layer.guide.parameters())
    # frame 0 influences frame 1 only through the shift
    x2 = x.detach().clone()
    x2[:, 0] += 1.0
    with torch.no_grad():
        assert not torch.allclose(layer(x2, guide)[:, 1], y[:, 1])
        assert torch.allclose(layer(x2, guide)[:, 2], y[:, 2])  # radius 1
        assert not torch.allclose(layer(x, 1 - guide), y)
        no_shift = GatedTSMConv(in_channels=8, out_channels=6, shift_steps=0)
        assert torch.allclose(no_shift(x2)[:, 1], no_shift(x.detach())[:, 1])
    with pytest.raises(ValueError, match="guide"):
        layer(x)
