"""CommonalityMaskHead (CPMask), its ablation variants and losses."""

from __future__ import annotations

import math
from functools import partial

import pytest
import torch
import torch.nn.functional as F

from instseg.models.heads import commonality as CP
from instseg.models.heads.base import MaskTargets
from instseg.models.heads.commonality import (
    CommonalityLossWeights,
    CommonalityMaskHead,
    affinity_loss,
    affinity_targets,
    boundary_loss,
    commonality_loss,
    commonality_maps,
)
from instseg.models.heads.contours import mask_contours
from instseg.models.layers.non_local import NonLocalBlock
from instseg.models.zoo import COMMONALITY_HEADS as CH

C = 8  # tiny heads: 8 channels, 7x7 RoIs -> 14x14 masks, 49-pixel affinities

BUILDERS = {
    CH["cpmask"]: {"mask", "boundary", "affinity"},
    CH["cpmask_boundary"]: {"mask", "boundary"},
    CH["cpmask_affinity"]: {"mask", "affinity"},
    partial(CP.CommonalityMaskHead, boundary=False, affinity=False): {"mask"},
}


def _targets(r: int = 3, m: int = 14, *, seed: int = 0, has_mask=None) -> MaskTargets:
    g = torch.Generator().manual_seed(seed)
    masks = torch.zeros(r, m, m)
    for i in range(r):  # a box-shaped object at a random place
        y0, x0 = (int(v) for v in torch.randint(0, m // 3, (2,), generator=g))
        masks[i, y0 : y0 + m // 2, x0 : x0 + m // 2 + 2] = 1
    return MaskTargets(masks=masks, labels=torch.zeros(r, dtype=torch.long), has_mask=has_mask)


# ------------------------------------------------------------------ affinity loss (Eq. 4.4)


def test_affinity_loss_is_zero_for_a_perfect_affinity():
    fg = torch.tensor([[1, 1, 0, 1, 0, 0], [0, 1, 1, 1, 1, 0]], dtype=torch.bool)
    a = torch.rand(2, 6, 6)
    for r in range(2):  # foreground rows: all mass on foreground pixels (any distribution)
        a[r][fg[r]] = a[r][fg[r]] * fg[r].float()
    a = a / a.sum(-1, keepdim=True)
    assert affinity_loss(a, fg).item() == pytest.approx(0.0, abs=1e-7)


def test_affinity_loss_uniform_and_hand_made_values():
    # uniform A = 1/N: per RoI |1 - |F|/N| + |B|/N = 2 |B| / N; mean over RoIs
    fg = torch.tensor([[1, 1, 0, 0], [1, 0, 0, 0]], dtype=torch.bool)
    uniform = torch.full((2, 4, 4), 0.25)
    assert affinity_loss(uniform, fg).item() == pytest.approx((2 * 2 / 4 + 2 * 3 / 4) / 2)
    # hand-made rows: row0 s_fg=.8, s_bg=.2 -> .4; row1 s_fg=.2, s_bg=.8 -> 1.6; mean 1.0
    a = torch.tensor([[[0.5, 0.3, 0.2], [0.1, 0.1, 0.8], [0.3, 0.3, 0.4]]])
    assert affinity_loss(a, torch.tensor([[True, True, False]])).item() == pytest.approx(1.0)
    # un-normalised rows: both terms are computed, not derived from each other
    a2 = torch.tensor([[[0.5, 0.0], [9.0, 9.0]]])
    assert affinity_loss(a2, torch.tensor([[True, False]])).item() == pytest.approx(0.5)


def test_affinity_loss_leaves_out_rois_without_foreground_or_background():
    fg = torch.tensor([[1, 0, 0, 1]], dtype=torch.bool)
    a = torch.softmax(torch.randn(1, 4, 4), -1)
    ref = affinity_loss(a, fg)
    all_fg, all_bg = torch.ones(1, 4, dtype=torch.bool), torch.zeros(1, 4, dtype=torch.bool)
    a3 = torch.softmax(torch.randn(3, 4, 4), -1)
    a3[1] = a[0]
    got = affinity_loss(a3, torch.cat([all_fg, fg, all_bg]))
    torch.testing.assert_close(got, ref)
    logits = torch.randn(2, 4, 4, requires_grad=True)
    none = affinity_loss(torch.softmax(logits, -1), torch.cat([all_fg, all_bg]))
    assert none.item() == 0.0
    none.backward()
    assert logits.grad is not None and (logits.grad == 0).all()


def test_affinity_loss_gradient_moves_mass_from_background_to_foreground():
    fg = torch.tensor([[1, 1, 0, 0, 1]], dtype=torch.bool)
    logits = torch.zeros(1, 5, 5, requires_grad=True)
    affinity_loss(torch.softmax(logits, -1), fg).backward()
    g = logits.grad[0]
    fg_rows = g[fg[0]]
    assert (fg_rows[:, ~fg[0]] > 0).all() and (fg_rows[:, fg[0]] < 0).all()  # descent: bg down
    assert (g[~fg[0]] == 0).all()  # background rows are not supervised


def test_affinity_targets_pool_28_to_14_at_half_coverage():
    m = torch.zeros(1, 28, 28)
    m[0, 0, 0] = 1  # 1 of 4 pixels of cell (0, 0): background
    m[0, 2:4, 2] = 1  # 2 of 4 pixels of cell (1, 1): foreground (>= 0.5)
    m[0, 10:20, 10:20] = 1  # cells 5..9 x 5..9
    fg = affinity_targets(m, num_pixels=196).view(14, 14)
    expected = torch.zeros(14, 14, dtype=torch.bool)
    expected[1, 1] = True
    expected[5:10, 5:10] = True
    assert torch.equal(fg, expected)
    with pytest.raises(ValueError, match="square"):
        affinity_targets(m, num_pixels=195)


# ------------------------------------------------------------------ boundary loss (Eq. 4.1)


def test_boundary_loss_is_bce_against_mask_contours_of_supervised_rois():
    t = _targets(3)
    logits = torch.randn(3, 1, 14, 14)
    keep = torch.tensor([True, False, True])
    got = boundary_loss(logits, t.masks, has_mask=keep)
    ref = F.binary_cross_entropy_with_logits(logits[keep, 0], mask_contours(t.masks[keep]))
    torch.testing.assert_close(got, ref)
    x = logits.clone().requires_grad_(True)
    zero = boundary_loss(x, t.masks, has_mask=torch.zeros(3, dtype=torch.bool))
    zero.backward()
    assert zero.item() == 0.0 and (x.grad == 0).all()
    with pytest.raises(ValueError):
        boundary_loss(logits, t.masks[:, :7, :7])


# ------------------------------------------------------------------ the head


@pytest.mark.parametrize("builder", list(BUILDERS), ids=lambda f: str(f.keywords or "default"))
def test_every_variant_shapes_keys_backward(builder):
    torch.manual_seed(0)
    head = builder(in_channels=C, num_classes=5)
    out = head(torch.randn(3, C, 7, 7))
    assert set(out) == BUILDERS[builder]
    assert out["mask"].shape == (3, 1, 14, 14)
    if "boundary" in out:
        assert out["boundary"].shape == (3, 1, 14, 14)
    if "affinity" in out:
        assert out["affinity"].shape == (3, 49, 49)
        torch.testing.assert_close(out["affinity"].sum(-1), torch.ones(3, 49))
    assert all(torch.isfinite(v).all() for v in out.values())
    losses = head.loss(out, _targets())
    assert set(losses) == {f"loss_{k}" for k in out}
    sum(losses.values()).backward()
    assert all(p.grad is not None for p in head.parameters())
    probs = head.predict(out, torch.tensor([3, 0, 1]))
    torch.testing.assert_close(probs, out["mask"][:, 0].sigmoid())


def test_forward_follows_eqs_4_2_to_4_6():
    """Recompute the full head by hand from its submodules."""
    torch.manual_seed(0)
    head = CH["cpmask"](in_channels=C)
    x = torch.randn(2, C, 7, 7)
    out = head(x)
    nl = head.affinity_unit
    assert isinstance(nl, NonLocalBlock) and nl.zscore
    b = head.boundary_convs(x)
    torch.testing.assert_close(out["boundary"], head.boundary_predictor(head.boundary_upsample(b)))
    c = head.mask_convs(x + b)  # Eq. 4.2
    cn = c / (c.pow(2).mean(dim=(1, 2, 3), keepdim=True) + 1e-5).sqrt()  # the block's RMS norm
    q = nl.theta(cn).flatten(2).transpose(1, 2)
    k = nl.phi(cn).flatten(2).transpose(1, 2)

    def z(t):  # per pixel over channels (Eq. 4.3)
        var = t.var(-1, unbiased=False, keepdim=True)
        return (t - t.mean(-1, keepdim=True)) / (var + 1e-5).sqrt()

    a = torch.softmax(z(q) @ z(k).transpose(1, 2) / math.sqrt(C), dim=-1)
    torch.testing.assert_close(out["affinity"], a)
    g = nl.w_g(c).flatten(2).transpose(1, 2)
    c_tilde = (a @ g).transpose(1, 2).reshape(c.shape)  # Eq. 4.5
    torch.testing.assert_close(out["mask"], head.mask_predictor(head.mask_upsample(c_tilde + c)))


def test_boundary_fusion_needs_matching_width_and_class_aware_mask_channels():
    with pytest.raises(ValueError, match="Eq. 4.2"):
        CommonalityMaskHead(in_channels=C, conv_dim=2 * C)
    head = CommonalityMaskHead(in_channels=C, conv_dim=2 * C, boundary=False)
    assert head(torch.randn(1, C, 7, 7))["mask"].shape == (1, 1, 14, 14)
    aware = CommonalityMaskHead(in_channels=C, num_classes=4, class_aware=True)
    out = aware(torch.randn(2, C, 7, 7))
    assert out["mask"].shape == (2, 4, 14, 14) and out["boundary"].shape == (2, 1, 14, 14)
    with pytest.raises(ValueError, match="RoI features"):
        aware(torch.randn(2, C + 1, 7, 7))


def test_only_rois_with_has_mask_contribute_to_any_loss():
    torch.manual_seed(0)
    head = CH["cpmask"](in_channels=C)
    x = torch.randn(3, C, 7, 7, requires_grad=True)
    keep = torch.tensor([True, False, True])
    t = _targets(3, has_mask=keep)
    losses = head.loss(head(x), t)
    sub = MaskTargets(masks=t.masks[keep], labels=t.labels[keep])
    ref = head.loss(head(x[keep]), sub)
    for name in ("loss_mask", "loss_boundary", "loss_affinity"):
        torch.testing.assert_close(losses[name], ref[name])
    sum(losses.values()).backward()
    assert (x.grad[1] == 0).all() and (x.grad[0] != 0).any()
    # no supervised RoI: every term is zero but still attached to the graph
    t0 = _targets(3, has_mask=torch.zeros(3, dtype=torch.bool))
    zeros = head.loss(head(x), t0)
    assert all(v.item() == 0.0 and v.requires_grad for v in zeros.values())


def test_loss_weights_scale_each_term():
    torch.manual_seed(0)
    head = CH["cpmask"](in_channels=C)
    out, t = head(torch.randn(2, C, 7, 7)), _targets(2)
    base = commonality_loss(out, t)
    w = CommonalityLossWeights(mask=2.0, boundary=0.5, affinity=3.0)
    scaled = commonality_loss(out, t, weights=w)
    for name, f in (("loss_mask", 2.0), ("loss_boundary", 0.5), ("loss_affinity", 3.0)):
        torch.testing.assert_close(scaled[name], f * base[name])


def test_seeded_golden_losses():
    torch.manual_seed(0)
    head = CH["cpmask"](in_channels=C)
    for pred in (head.mask_predictor, head.boundary_predictor):  # away from logit 0
        torch.nn.init.normal_(pred.weight, std=0.5)
    x = torch.randn(2, C, 7, 7)
    losses = head.loss(head(x), _targets(2, seed=1))
    got = {k: v.item() for k, v in losses.items()}
    assert got == pytest.approx(GOLDEN, abs=1e-4)


# loss_mask was 0.72975 before g (the coordination output) started at zero; loss_affinity was
# 1.20758 before the non-local block normalised its input by its RMS (z-score eps effect)
GOLDEN = {"loss_mask": 0.69517, "loss_boundary": 0.71514, "loss_affinity": 1.20760}


def test_tiny_overfit_loss_falls():
    torch.manual_seed(0)
    head = CH["cpmask"](in_channels=C)
    t = _targets(4, seed=2)
    # features that carry the mask: a noisy downsampled copy in every channel
    small = F.avg_pool2d(t.masks[:, None], 2)
    x = small.expand(-1, C, -1, -1) + 0.3 * torch.randn(4, C, 7, 7)
    opt = torch.optim.Adam(head.parameters(), lr=3e-3)
    history = []
    for _ in range(40):
        losses = head.loss(head(x), t)
        total = sum(losses.values())
        opt.zero_grad()
        total.backward()
        opt.step()
        history.append({k: v.item() for k, v in losses.items()})
    first, last = history[0], history[-1]
    assert sum(last.values()) < 0.5 * sum(first.values())
    for name in ("loss_mask", "loss_boundary", "loss_affinity"):
        assert last[name] < first[name], name


# ------------------------------------------------------------------ visualisation helper


def test_commonality_maps_boundary_and_affinity_row():
    torch.manual_seed(0)
    out = CH["cpmask"](in_channels=C)(torch.randn(2, C, 7, 7))
    b, a = commonality_maps(out, 1, pixel=(2, 5))
    torch.testing.assert_close(b, out["boundary"][1, 0].sigmoid())
    assert a.shape == (7, 7)
    torch.testing.assert_close(a.flatten(), out["affinity"][1, 2 * 7 + 5])
    assert a.sum().item() == pytest.approx(1.0, abs=1e-5)
    _, centre = commonality_maps(out, 0)
    torch.testing.assert_close(centre.flatten(), out["affinity"][0, 3 * 7 + 3])
    base = partial(CP.CommonalityMaskHead, boundary=False, affinity=False)(in_channels=C)(
        torch.randn(1, C, 7, 7)
    )
    assert commonality_maps(base, 0) == (None, None)
    with pytest.raises(ValueError, match="outside"):
        commonality_maps(out, 0, pixel=(7, 0))


# ------------------------------------------------------------------ initial state


@pytest.mark.parametrize("std", [1.0, 46.0])
def test_coordination_starts_at_zero_and_affinity_is_spread(std):
    """At init C~ = A g(C) is exactly 0 (so C~ + C = C: the mask branch starts as the baseline
    head's), and the affinity rows on RoI features of std 1 and of std 46 (a trained FPN's scale)
    have an entropy well above 0 and below uniform."""
    torch.manual_seed(0)
    head = CH["cpmask"](in_channels=64)
    x = torch.randn(3, 64, 14, 14) * std
    with torch.no_grad():
        c = head.mask_convs(x + head.boundary_convs(x))
        a = head.affinity_unit.affinity(c)
        c_tilde = head.affinity_unit.aggregate(c, a)
        out = head(x)
    assert c.abs().sum() > 0 and c_tilde.abs().max().item() == 0.0
    torch.testing.assert_close(out["mask"], head.mask_predictor(head.mask_upsample(c)))
    uniform = math.log(14 * 14)
    entropy = float(-(a.clamp_min(1e-12).log() * a).sum(-1).mean())
    assert 0.3 * uniform < entropy < 0.995 * uniform, entropy
    torch.testing.assert_close(out["affinity"], a)


def test_coordination_learns_from_the_first_step():
    torch.manual_seed(0)
    head = CH["cpmask_affinity"](in_channels=C)
    t = _targets(2)
    losses = head.loss(head(torch.randn(2, C, 7, 7)), t)
    sum(losses.values()).backward()
    nl = head.affinity_unit
    for p in (nl.w_g.weight, nl.theta.weight, nl.phi.weight):
        assert p.grad is not None and p.grad.abs().sum() > 0
