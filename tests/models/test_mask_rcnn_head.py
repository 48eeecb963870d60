"""Baseline Mask R-CNN head: shapes, golden loss values, has_mask masking, a tiny overfit."""

from __future__ import annotations

import math

import pytest
import torch

from instseg.models.heads.base import MaskTargets
from instseg.models.heads.mask_rcnn import MaskRCNNHead, mask_rcnn_inference, mask_rcnn_loss


def _fixed_inputs() -> tuple[torch.Tensor, MaskTargets]:
    logits = torch.linspace(-3, 3, 3 * 2 * 4 * 4).view(3, 2, 4, 4)
    masks = (torch.arange(3 * 16) % 3 == 0).float().view(3, 4, 4)
    return logits, MaskTargets(masks=masks, labels=torch.tensor([1, 0, 1]))


def _bce(x: torch.Tensor, z: torch.Tensor) -> float:
    """Reference: numerically stable BCE-with-logits, averaged, written out by hand."""
    vals = [
        max(a, 0.0) - a * b + math.log1p(math.exp(-abs(a)))
        for a, b in zip(x.flatten().tolist(), z.flatten().tolist(), strict=True)
    ]
    return sum(vals) / len(vals)


@pytest.mark.parametrize(("class_aware", "k"), [(True, 5), (False, 1)])
def test_head_shapes(class_aware, k):
    torch.manual_seed(0)
    head = MaskRCNNHead(in_channels=8, num_classes=5, conv_dims=16, class_aware=class_aware)
    assert head.class_aware is class_aware
    with torch.no_grad():
        out = head(torch.randn(7, 8, 14, 14))
    assert set(out) == {"mask"} and out["mask"].shape == (7, k, 28, 28)
    probs = head.predict(out, torch.tensor([0, 1, 2, 3, 4, 0, 1]))
    assert probs.shape == (7, 28, 28) and probs.dtype == torch.float32
    assert float(probs.min()) >= 0 and float(probs.max()) <= 1


def test_loss_golden_values():
    logits, t = _fixed_inputs()
    loss = mask_rcnn_loss(logits, t)
    assert loss.item() == pytest.approx(1.0766032934188843, rel=1e-6)
    picked = logits[torch.arange(3), t.labels]
    assert loss.item() == pytest.approx(_bce(picked, t.masks), rel=1e-6)
    # class-agnostic: channel 0 whatever the label
    assert mask_rcnn_loss(logits[:, :1], t).item() == pytest.approx(0.971340000629425, rel=1e-6)


def test_loss_ignores_other_class_channels():
    logits, t = _fixed_inputs()
    other = logits.clone()
    other[torch.arange(3), 1 - t.labels] += 10.0
    assert mask_rcnn_loss(other, t).item() == pytest.approx(mask_rcnn_loss(logits, t).item())


def test_has_mask_excludes_rois_and_keeps_graph_when_none():
    logits, t = _fixed_inputs()
    t.has_mask = torch.tensor([True, False, True])
    loss = mask_rcnn_loss(logits, t)
    assert loss.item() == pytest.approx(1.2998970746994019, rel=1e-6)
    sub = MaskTargets(masks=t.masks[[0, 2]], labels=t.labels[[0, 2]])
    assert loss.item() == pytest.approx(mask_rcnn_loss(logits[[0, 2]], sub).item(), rel=1e-6)

    x = logits.clone().requires_grad_(True)
    t.has_mask = torch.zeros(3, dtype=torch.bool)
    zero = mask_rcnn_loss(x, t)
    assert zero.item() == 0.0
    zero.backward()
    assert x.grad is not None and torch.all(x.grad == 0)


def test_loss_rejects_mismatched_targets():
    logits, t = _fixed_inputs()
    with pytest.raises(ValueError, match="3 mask logits for 2 targets"):
        mask_rcnn_loss(logits, MaskTargets(masks=t.masks[:2], labels=t.labels[:2]))


def test_inference_picks_label_channel():
    logits, t = _fixed_inputs()
    probs = mask_rcnn_inference(logits, t.labels)
    torch.testing.assert_close(probs, logits[torch.arange(3), t.labels].sigmoid())


def test_head_overfits_tiny_problem():
    torch.manual_seed(0)
    head = MaskRCNNHead(in_channels=4, num_classes=2, conv_dims=8, num_convs=2, class_aware=True)
    x = torch.randn(4, 4, 14, 14)
    yy, xx = torch.meshgrid(torch.arange(28), torch.arange(28), indexing="ij")
    disc = ((yy - 14) ** 2 + (xx - 14) ** 2 < 80).float()
    masks = torch.stack([disc, 1 - disc, disc, (xx < 14).float()])
    t = MaskTargets(masks=masks, labels=torch.tensor([0, 1, 1, 0]))
    opt = torch.optim.Adam(head.parameters(), lr=1e-2)
    losses = []
    for _ in range(40):
        loss = head.loss(head(x), t)["loss_mask"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
