"""FCOS and Faster R-CNN detectors on FPN-like features: assignment, losses, decoding."""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
from torchvision.ops import box_iou

from instseg.models.detectors.faster_rcnn import FasterRCNN
from instseg.models.detectors.fcos import FCOS, _scale_ranges, fcos_match
from instseg.structures import Instances


def _features(b: int, c: int, hp: int, wp: int, strides: list[int]) -> OrderedDict:
    g = torch.Generator().manual_seed(0)
    return OrderedDict(
        (f"p{s.bit_length() - 1}", torch.randn(b, c, -(-hp // s), -(-wp // s), generator=g))
        for s in strides
    )


def _targets() -> list[Instances]:
    return [
        Instances(
            image_size=(64, 96),
            boxes=torch.tensor([[8.0, 8.0, 40.0, 48.0]]),
            labels=torch.tensor([2]),
        ),
        Instances(image_size=(48, 64), boxes=torch.zeros(0, 4), labels=torch.zeros(0).long()),
    ]


def test_fcos_match_hand_case():
    fcos = FCOS(in_channels=8, in_features=["p3"], strides=[8], num_classes=2, norm_groups=8)
    anchors, sizes = fcos._anchors({"p3": torch.zeros(1, 8, 4, 4)})
    assert sizes == [16] and anchors[0].tolist() == [0.0, 0.0, 8.0, 8.0]
    lower, upper = _scale_ranges([8], sizes, anchors)
    gt = torch.tensor([[0.0, 0.0, 16.0, 16.0], [8.0, 0.0, 32.0, 32.0]])
    m = fcos_match(anchors, gt, lower, upper, 1.5).view(4, 4)
    # points at 4, 12, 20, 28 (rows: y). Box 1's centre region (|d| < 12 around (20, 16))
    # keeps y in {12, 20} and x in {12, 20, 28}; (12, 12) is in both: the smaller box 0 wins
    assert m.tolist() == [[0, 0, -1, -1], [0, 0, 1, 1], [-1, 1, 1, 1], [-1, -1, -1, -1]]
    assert torch.all(fcos_match(anchors, gt[:0], lower, upper, 1.5) == -1)


def test_fcos_scale_ranges_per_level():
    anchors = torch.zeros(7, 4)
    lo, hi = _scale_ranges([8, 16, 32], [4, 2, 1], anchors)
    assert lo.tolist() == [0, 0, 0, 0, 64, 64, 128]
    assert hi.tolist()[:6] == [64, 64, 64, 64, 128, 128] and hi[-1] == float("inf")


def test_fcos_loss_and_predict():
    torch.manual_seed(0)
    strides = [8, 16, 32, 64, 128]
    fcos = FCOS(
        in_channels=16,
        in_features=[f"p{s.bit_length() - 1}" for s in strides],
        strides=strides,
        num_classes=3,
        num_convs=2,
        norm_groups=8,
        train_proposals=20,
    )
    feats = _features(2, 16, 64, 96, strides)
    losses, proposals = fcos.loss(feats, _targets(), [(64, 96), (48, 64)])
    assert set(losses) == {"loss_cls", "loss_box", "loss_ctr"}
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    assert fcos.head.classification_head.cls_logits.weight.grad is not None
    assert [p.shape[1] for p in proposals] == [4, 4] and all(len(p) <= 20 for p in proposals)
    assert not any(p.requires_grad for p in proposals)
    dets = fcos.predict(feats, [(64, 96), (40, 50)], score_thresh=0.05, max_detections=7)
    for d, (h, w) in zip(dets, [(64, 96), (40, 50)], strict=True):
        assert 0 < len(d) <= 7 and d.image_size == (h, w)
        assert float(d.boxes[:, 2].max()) <= w and float(d.boxes[:, 3].max()) <= h
        assert torch.all(d.scores[:-1] >= d.scores[1:]) and float(d.scores.min()) > 0.05
        assert d.labels.dtype == torch.long and int(d.labels.max()) < 3


def test_fcos_head_learns_a_box():
    torch.manual_seed(0)
    fcos = FCOS(
        in_channels=16,
        in_features=["p3", "p4"],
        strides=[8, 16],
        num_classes=2,
        num_convs=1,
        norm_groups=8,
    )
    feats = _features(1, 16, 64, 64, [8, 16])
    gt = torch.tensor([[16.0, 8.0, 48.0, 40.0]])
    target = [Instances(image_size=(64, 64), boxes=gt, labels=torch.tensor([1]))]
    opt = torch.optim.Adam(fcos.parameters(), lr=1e-2)
    first = None
    for _ in range(60):
        losses, _ = fcos.loss(feats, target, [(64, 64)])
        total = sum(losses.values())
        first = first if first is not None else total.item()
        opt.zero_grad()
        total.backward()
        opt.step()
    assert total.item() < 0.5 * first
    det = fcos.predict(feats, [(64, 64)], score_thresh=0.05, max_detections=1)[0]
    assert det.labels.tolist() == [1] and box_iou(det.boxes, gt).item() > 0.7


def test_faster_rcnn_loss_and_predict():
    torch.manual_seed(0)
    strides = [4, 8, 16, 32, 64]
    names = [f"p{s.bit_length() - 1}" for s in strides]
    det = FasterRCNN(
        in_channels=16,
        rpn_features=names,
        rpn_strides=strides,
        box_features=names[:-1],
        num_classes=3,
        representation_size=32,
        box_batch_size_per_image=64,
        anchor_sizes=(8, 16, 32, 64, 128),
    )
    assert det.size_divisibility == 64
    feats = _features(2, 16, 64, 128, strides)
    det.train()
    losses, proposals = det.loss(feats, _targets(), [(64, 96), (48, 64)])
    assert set(losses) == {"loss_rpn_obj", "loss_rpn_box", "loss_cls", "loss_box"}
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    assert det.rpn.head.conv[0][0].weight.grad is not None
    assert det.roi_heads.box_predictor.cls_score.weight.grad is not None
    assert float(proposals[1][:, 2].max()) <= 64 and float(proposals[1][:, 3].max()) <= 48
    det.eval()
    out = det.predict(feats, [(64, 96), (48, 64)], score_thresh=0.0, max_detections=5)
    assert [len(d) for d in out] == [5, 5]
    assert all(int(d.labels.min()) >= 0 and int(d.labels.max()) < 3 for d in out)


def test_fcos_rejects_bad_config():
    with pytest.raises(ValueError, match="norm_groups=32 must divide in_channels=48"):
        FCOS(in_channels=48, in_features=["p3"], strides=[8], num_classes=2)
    with pytest.raises(ValueError, match="differ in length"):
        FCOS(in_channels=32, in_features=["p3", "p4"], strides=[8], num_classes=2)
