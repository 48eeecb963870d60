"""NonLocalBlock (survey Eqs. 3.1-3.3; CPMask Eq. 4.3 z-score variant)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from instseg.models.layers.non_local import LayerNorm2d, NonLocalBlock


def _block(**kw) -> NonLocalBlock:
    torch.manual_seed(0)
    return NonLocalBlock(channels=8, **kw)


def _reference(block: NonLocalBlock, x: torch.Tensor, *, zscore: bool = False) -> torch.Tensor:
    """Eqs. 3.1-3.3 written out with einsum on the conv weights, on X / RMS(X) with the branch
    scaled back by RMS(X) (the block's ``normalize``; r = 1 is the literal Eq. 3.1)."""
    b, c, h, w = x.shape
    r = (x.pow(2).mean(dim=(1, 2, 3), keepdim=True) + block.eps).sqrt() if block.normalize else 1
    nodes = (x / r).flatten(2).transpose(1, 2)  # (B, N, C)
    q = nodes @ block.theta.weight[:, :, 0, 0].T
    k = nodes @ block.phi.weight[:, :, 0, 0].T
    if zscore:
        q = (q - q.mean(-1, keepdim=True)) / (q.var(-1, unbiased=False, keepdim=True) + 1e-5).sqrt()
        k = (k - k.mean(-1, keepdim=True)) / (k.var(-1, unbiased=False, keepdim=True) + 1e-5).sqrt()
    a = torch.softmax(torch.einsum("bic,bjc->bij", q, k) * block.scale, dim=-1)
    g = nodes @ block.w_g.weight[:, :, 0, 0].T
    y = torch.einsum("bij,bjc->bic", a, g)
    z = F.relu(F.layer_norm(y, (c,), block.norm.weight, block.norm.bias, block.norm.eps))
    return z.transpose(1, 2).reshape(b, c, h, w) * r + x


def test_shapes_and_affinity_rows_sum_to_one():
    block = _block(inner_channels=4)
    x = torch.randn(2, 8, 5, 6)
    z, a = block.forward_with_affinity(x)
    assert z.shape == x.shape
    assert a.shape == (2, 30, 30)
    torch.testing.assert_close(a.sum(-1), torch.ones(2, 30))
    assert (a >= 0).all()
    torch.testing.assert_close(block.affinity(x), a)
    torch.testing.assert_close(block(x), z)


def test_matches_equations_3_1_to_3_3():
    block = _block()
    with torch.no_grad():  # non-trivial norm affine so the check covers it
        block.norm.weight.uniform_(0.5, 1.5)
        block.norm.bias.uniform_(-0.2, 0.2)
    x = torch.randn(2, 8, 4, 3)
    torch.testing.assert_close(block(x), _reference(block, x), rtol=1e-4, atol=1e-5)
    assert block.scale == pytest.approx(1 / math.sqrt(8))
    literal = _block(normalize=False)  # the literal Eq. 3.1, same weights
    literal.load_state_dict(block.state_dict())
    torch.testing.assert_close(literal(x * 3), _reference(literal, x * 3), rtol=1e-4, atol=1e-5)
    # with X of unit RMS the normalised block is exactly Eq. 3.1
    unit = x / x.pow(2).mean(dim=(1, 2, 3), keepdim=True).sqrt()
    torch.testing.assert_close(block(unit), literal(unit), rtol=1e-4, atol=1e-4)


def test_unscaled_logits_are_plain_dot_products():
    block = _block(scaled=False, inner_channels=3, normalize=False)
    x = torch.randn(1, 8, 2, 2)
    nodes = x.flatten(2).transpose(1, 2)
    q = nodes @ block.theta.weight[:, :, 0, 0].T
    k = nodes @ block.phi.weight[:, :, 0, 0].T
    torch.testing.assert_close(block.affinity_logits(x), q @ k.transpose(1, 2))


def test_residual_identity_when_w_g_is_zero():
    block = _block()
    with torch.no_grad():
        block.w_g.weight.zero_()
    x = torch.randn(3, 8, 4, 4)
    assert torch.equal(block(x), x)
    no_res = _block(residual=False)
    with torch.no_grad():
        no_res.w_g.weight.zero_()
    assert torch.equal(no_res(x), torch.zeros_like(x))


def test_gradient_reaches_every_parameter_and_the_input():
    block = _block(inner_channels=4)
    x = torch.randn(2, 8, 4, 4, requires_grad=True)
    (block(x) * torch.randn(2, 8, 4, 4)).sum().backward()
    for name, p in block.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_zscore_matches_reference_and_is_scale_invariant():
    block = _block(zscore=True)
    x = torch.randn(2, 8, 3, 3)
    torch.testing.assert_close(block(x), _reference(block, x, zscore=True), rtol=1e-4, atol=1e-5)
    a = block.affinity(x)
    with torch.no_grad():  # z-scored embeddings ignore a positive rescaling of theta/phi
        block.theta.weight.mul_(7.0)
        block.phi.weight.mul_(0.3)
    torch.testing.assert_close(block.affinity(x), a, rtol=0, atol=5e-4)  # up to eps
    plain = _block()
    with torch.no_grad():
        before = plain.affinity(x)
        plain.theta.weight.mul_(7.0)
    assert not torch.allclose(plain.affinity(x), before, atol=1e-3)


def test_layer_norm_2d_normalises_each_pixel_over_channels():
    norm = LayerNorm2d(6)
    y = norm(torch.randn(2, 6, 3, 4) * 5 + 3)
    torch.testing.assert_close(y.mean(1), torch.zeros(2, 3, 4), atol=1e-5, rtol=0)
    torch.testing.assert_close(y.var(1, unbiased=False), torch.ones(2, 3, 4), atol=1e-3, rtol=0)


def test_empty_batch_and_bad_input():
    block = _block()
    assert block(torch.zeros(0, 8, 4, 4)).shape == (0, 8, 4, 4)
    with pytest.raises(ValueError, match="expected"):
        block(torch.zeros(1, 5, 4, 4))
    with pytest.raises(ValueError, match="positive"):
        NonLocalBlock(channels=0)


def test_custom_norm_class_and_flops():
    block = NonLocalBlock(channels=8, inner_channels=2, norm=lambda c: torch.nn.GroupNorm(1, c))
    assert isinstance(block.norm, torch.nn.GroupNorm)
    assert block(torch.randn(1, 8, 2, 2)).shape == (1, 8, 2, 2)
    assert block.matmul_flops(196) == 196 * 196 * (2 + 8)


def test_aggregate_is_a_times_x_w_g():
    """The public A X W_g step (CPMask's Eq. 4.5 reads it) equals the explicit product."""
    block = _block()
    x = torch.randn(2, 8, 4, 3)
    a = block.affinity(x)
    g = F.conv2d(x, block.w_g.weight).flatten(2).transpose(1, 2)  # (B, N, C)
    want = torch.bmm(a, g).transpose(1, 2).reshape(2, 8, 4, 3)
    torch.testing.assert_close(block.aggregate(x, a), want)


def _entropy(a: torch.Tensor) -> float:
    a = a.detach()
    return float(-(a.clamp_min(1e-12).log() * a).sum(-1).mean())


def _branch_ratio(z: torch.Tensor, x: torch.Tensor) -> float:
    """|Z - X| / |X| per map, averaged: how much the GCN branch adds to its input."""
    z, x = z.detach(), x.detach()
    return float(((z - x).flatten(1).norm(dim=1) / x.flatten(1).norm(dim=1)).mean())


@pytest.mark.parametrize("std", [1.0, 46.0])
def test_not_inert_at_realistic_feature_scale(std):
    """At init, on 14x14 RoI maps of std 1 and of std 46 (what a trained FPN gives: the plain
    equations had one-hot rows, entropy 0.01 of 5.28, and a branch of 1.6% of |X| there), the
    affinity rows are spread (entropy well above 0, below uniform) and the branch matters."""
    torch.manual_seed(0)
    block = NonLocalBlock(channels=64)
    x = torch.randn(4, 64, 14, 14) * std
    z, a = block.forward_with_affinity(x)
    uniform = math.log(14 * 14)
    assert 0.3 * uniform < _entropy(a) < 0.99 * uniform
    assert 0.05 < _branch_ratio(z, x) < 2.0
    # invariant affinity, equivariant output: the same block at both scales
    z1, a1 = block.forward_with_affinity(x / std)
    torch.testing.assert_close(a, a1, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(z, z1 * std, rtol=1e-4, atol=1e-4 * std)


def test_literal_equations_are_inert_at_std_46():
    """What the test above guards against (normalize=False, the literal Eq. 3.1-3.3)."""
    torch.manual_seed(0)
    block = NonLocalBlock(channels=64, normalize=False)
    x = torch.randn(4, 64, 14, 14) * 46
    z, a = block.forward_with_affinity(x)
    assert _entropy(a) < 0.1 and _branch_ratio(z, x) < 0.05


def test_all_zero_map_is_finite():
    block = _block()
    z, a = block.forward_with_affinity(torch.zeros(2, 8, 3, 3))
    assert torch.isfinite(z).all() and torch.isfinite(a).all()
    torch.testing.assert_close(a.sum(-1), torch.ones(2, 9))
