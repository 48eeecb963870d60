"""Propagation embedding: identity at start, differentiable prototype read, loss falls."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from instseg.models.video.propagation_embedding import (
    PropagationEmbedding,
    propagation_loss,
    propagation_read,
)


def _pair(seed: int = 0):
    """Two frames (C, h, w): background along channel 2, the object along channel 0 (+ a weak
    channel 1) in the first frame, drifting to channel 1 in the second."""
    g = torch.Generator().manual_seed(seed)
    c, h, w = 8, 10, 12
    mask = torch.zeros(h, w)
    mask[3:7, 4:9] = 1.0
    f0 = 0.3 * torch.randn(c, h, w, generator=g)
    f0[2] += 1.5 * (1 - mask)
    f0[0] += 1.5 * mask
    f0[1] += 0.5 * mask
    f1 = 0.3 * torch.randn(c, h, w, generator=g)
    f1[2] += 1.5 * (1 - mask)
    f1[0] += 0.4 * mask  # the object's channel 0 fades in the later frame
    f1[1] += 1.5 * mask  # while channel 1 (weak in frame 0) marks it
    return F.normalize(f0, dim=0), F.normalize(f1, dim=0), mask


def test_untrained_embedding_is_the_identity_on_unit_features() -> None:
    emb = PropagationEmbedding(channels=8, hidden=16)
    f0, _, _ = _pair()
    assert torch.allclose(emb(f0[None])[0], f0, atol=1e-6)
    with pytest.raises(ValueError, match="features"):
        emb(torch.zeros(1, 5, 4, 4))


def test_read_recovers_the_reference_mask_on_the_reference_frame() -> None:
    f0, _, mask = _pair()
    prob = propagation_read(f0, mask, f0, num_fg=4, num_bg=8, sigma=0.15)
    assert prob.shape == mask.shape
    assert ((prob > 0.5).float() == mask).float().mean() > 0.95


def test_training_the_embedding_lowers_the_propagation_loss() -> None:
    torch.manual_seed(0)
    f0, f1, mask = _pair()
    emb = PropagationEmbedding(channels=8, hidden=16)
    opt = torch.optim.Adam(emb.parameters(), lr=1e-2)

    def loss() -> torch.Tensor:
        e = emb(torch.stack([f0, f1]))
        return propagation_loss(propagation_read(e[0], mask, e[1], num_fg=4, num_bg=8), mask)

    start = loss().item()
    for _ in range(60):
        opt.zero_grad()
        value = loss()
        value.backward()
        opt.step()
    assert emb.g[0].weight.grad is not None and torch.isfinite(emb.g[0].weight.grad).all()
    assert loss().item() < 0.7 * start
