"""Instance-level prototypes (fg/bg GMM-EM, Eq. 5.8 momentum) and the TSM."""

from __future__ import annotations

import pytest
import torch

from instseg.models.video.instance_prototypes import (
    InstancePrototypeAttention,
    InstancePrototypes,
    TemporalSegmentationModule,
    tsm_loss,
    update_instance_prototypes,
)


def _scene(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """2 RoIs (C=8, 10x10): object pixels have feature +a, background -a (+ noise)."""
    g = torch.Generator().manual_seed(seed)
    masks = torch.zeros(2, 10, 10)
    masks[0, 2:7, 3:8] = 1
    masks[1, 4:10, 0:5] = 1
    a = torch.randn(8, generator=g)
    feats = torch.where(masks[:, None] > 0, a[None, :, None, None], -a[None, :, None, None])
    return feats + 0.05 * torch.randn(2, 8, 10, 10, generator=g), masks


def _module(**kw: object) -> InstancePrototypeAttention:
    torch.manual_seed(0)
    return InstancePrototypeAttention(in_channels=8, key_channels=6, num_fg=3, num_bg=4, **kw)


def test_fit_shapes_and_fg_bg_separation() -> None:
    feats, masks = _scene()
    m = _module(sigma=0.2)
    p = m.fit(feats, masks)
    assert p.fg_keys.shape == (2, 3, 6) and p.bg_keys.shape == (2, 4, 6)
    assert p.fg_values.shape == (2, 3, 8) and p.bg_values.shape == (2, 4, 8)
    attn = m.attend(feats, p)
    assert attn.fg.shape == (2, 8, 10, 10) and attn.fg_prob.shape == (2, 1, 10, 10)
    prob = attn.fg_prob[:, 0]
    assert prob[masks > 0].min() > 0.9 and prob[masks == 0].max() < 0.1
    # foreground read-out reconstructs the object's value feature
    v = m.value(feats)
    inside = masks[0] > 0
    assert torch.allclose(attn.fg[0][:, inside].mean(1), v[0][:, inside].mean(1), atol=0.05)


def test_gradients_flow_through_fit_attend_and_tsm() -> None:
    feats, masks = _scene()
    feats.requires_grad_(True)
    m = _module()
    tsm = TemporalSegmentationModule(in_channels=8, hidden=16)
    torch.nn.init.normal_(tsm.out.weight, std=0.1)
    initial = torch.zeros(2, 1, 20, 20)
    logits = tsm(feats, initial, m.attend(feats, m.fit(feats, masks)))
    assert logits.shape == (2, 1, 20, 20)
    tsm_loss(logits, torch.ones(2, 20, 20)).backward()
    for t in (feats, m.key.weight, m.value.weight, tsm.body[0].weight):
        assert t.grad is not None and t.grad.abs().sum() > 0


def test_tsm_starts_as_identity_and_learns() -> None:
    feats, masks = _scene()
    m = _module()
    tsm = TemporalSegmentationModule(in_channels=8, hidden=16)
    attn = m.attend(feats, m.fit(feats, masks))
    initial = torch.randn(2, 1, 10, 10)
    assert torch.allclose(tsm(feats, initial, attn), initial)
    target = masks  # initial is noise; TSM must learn the mask from the attention maps
    opt = torch.optim.Adam(list(tsm.parameters()) + list(m.parameters()), lr=1e-2)
    first = None
    for _ in range(30):
        attn = m.attend(feats, m.fit(feats, masks))
        loss = tsm_loss(tsm(feats, initial, attn), target)
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.5 * first


def test_update_modes() -> None:
    prev = InstancePrototypes(*(torch.zeros(1, 2, 3) for _ in range(4)))
    cur = InstancePrototypes(*(torch.ones(1, 2, 3) for _ in range(4)))
    assert update_instance_prototypes(None, cur, mode="initial") is cur
    assert update_instance_prototypes(prev, cur, mode="off") is cur
    assert update_instance_prototypes(prev, cur, mode="initial") is prev
    mixed = update_instance_prototypes(prev, cur, mode="momentum", momentum=0.2)
    assert all(torch.allclose(t, torch.full((1, 2, 3), 0.2)) for t in mixed._tensors())
    # repeated momentum updates converge geometrically towards the new appearance
    acc = prev
    for _ in range(10):
        acc = update_instance_prototypes(acc, cur, mode="momentum", momentum=0.2)
    assert torch.allclose(acc.fg_keys, torch.full((1, 2, 3), 1 - 0.8**10))
    with pytest.raises(ValueError, match="mode"):
        update_instance_prototypes(prev, cur, mode="ema")  # type: ignore[arg-type]


def test_fit_from_previous_keeps_component_identity() -> None:
    feats, masks = _scene()
    m = _module()
    p0 = m.fit(feats, masks)
    p1 = m.fit(feats, masks, init=p0)  # same frame, initialised from p0: components stay put
    assert torch.allclose(p1.fg_keys, p0.fg_keys, atol=0.05)
    both = InstancePrototypes.cat([p0[0], p0[1]])
    assert torch.equal(both.bg_values, p0.bg_values) and len(both) == 2


def test_empty_mask_is_finite() -> None:
    feats, _ = _scene()
    m = _module()
    p = m.fit(feats, torch.zeros(2, 10, 10))
    attn = m.attend(feats, p)
    assert all(torch.isfinite(t).all() for t in (*p._tensors(), attn.fg, attn.bg, attn.fg_prob))
    with pytest.raises(ValueError, match="do not match"):
        m.fit(feats, torch.zeros(2, 5, 5))
