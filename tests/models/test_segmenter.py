"""InstanceSegmenter: RoI sampling, GT projection, pasting, targets for pluggable heads."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import pytest
import torch

from instseg.models.heads.base import MaskTargets
from instseg.models.heads.mask_rcnn import MaskRCNNHead
from instseg.models.segmenter import paste_masks, project_masks, sample_mask_rois
from instseg.models.zoo import effl0_fcos_maskrcnn
from instseg.structures import Instances
from instseg.structures.batch import Batch, collate_images


def tiny_batch(with_extras: bool = False) -> Batch:
    """2 images (64x80, 48x64) with 2 and 1 rectangular instances."""
    g = torch.Generator().manual_seed(0)
    ims = [torch.rand(3, 64, 80, generator=g) * 255, torch.rand(3, 48, 64, generator=g) * 255]
    images, sizes = collate_images(ims, 32)
    targets = []
    for (h, w), rects in zip(
        sizes, [[(4, 6, 40, 30), (20, 16, 60, 50)], [(10, 8, 50, 40)]], strict=True
    ):
        masks = torch.zeros(len(rects), h, w, dtype=torch.bool)
        for j, (x0, y0, x1, y1) in enumerate(rects):
            masks[j, y0:y1, x0:x1] = True
        t = Instances(
            image_size=(h, w),
            boxes=torch.tensor(rects, dtype=torch.float32),
            labels=torch.arange(len(rects)) % 2,
            masks=masks,
        )
        if with_extras:
            t.amodal_masks = masks.clone()
            t.depth = torch.arange(len(rects))
            t.has_mask = torch.tensor([True, False][: len(rects)])
        targets.append(t)
    return Batch(images=images, image_sizes=sizes, targets=targets)


class RecordingHead(MaskRCNNHead):
    """Baseline head that asks for occluder targets and remembers what it was given."""

    needs_occluder = True

    def loss(self, outputs, targets: MaskTargets):
        self.seen = targets
        return super().loss(outputs, targets)


def test_project_masks_crops_and_resizes():
    bitmap = torch.zeros(2, 32, 32, dtype=torch.bool)
    bitmap[1, 4:12, 8:24] = True
    boxes = torch.tensor([[8.0, 4.0, 24.0, 12.0], [0.0, 4.0, 32.0, 12.0]])
    out = project_masks(bitmap, boxes, torch.tensor([1, 1]), 4)
    assert out.shape == (2, 4, 4) and out.dtype == torch.float32
    assert torch.all(out[0] == 1)
    assert out[1].tolist() == [[0.0, 1.0, 1.0, 0.0]] * 4
    assert project_masks(bitmap, boxes[:0], torch.zeros(0).long(), 4).shape == (0, 4, 4)


def test_paste_masks_fills_box_and_round_trips():
    probs = torch.ones(2, 28, 28)
    boxes = torch.tensor([[2.0, 3.0, 10.0, 7.0], [-5.0, -5.0, 0.0, 0.0]])
    out = paste_masks(probs, boxes, (12, 16), threshold=0.5)
    expect = torch.zeros(12, 16, dtype=torch.bool)
    expect[3:7, 2:10] = True
    assert out.shape == (2, 12, 16) and torch.equal(out[0], expect) and not out[1].any()
    # a disc projected onto its box and pasted back is (nearly) itself
    yy, xx = torch.meshgrid(torch.arange(40), torch.arange(50), indexing="ij")
    disc = ((yy - 20) ** 2 + (xx - 25) ** 2) < 150
    box = torch.tensor([[13.0, 8.0, 38.0, 33.0]])
    back = paste_masks(
        project_masks(disc[None], box, torch.tensor([0]), 28), box, (40, 50), threshold=0.5
    )[0]
    iou = (back & disc).sum() / (back | disc).sum()
    assert iou > 0.95


def test_sample_mask_rois_gt_first_then_positive_proposals():
    gt = torch.tensor([[0.0, 0.0, 10.0, 10.0], [20.0, 20.0, 40.0, 40.0]])
    props = torch.tensor([[21.0, 21.0, 40.0, 40.0], [0.0, 0.0, 30.0, 30.0], [1.0, 0.0, 10.0, 10.0]])
    boxes, idx = sample_mask_rois(props, gt, iou_thresh=0.5, max_rois=10)
    assert torch.equal(boxes[:2], gt) and idx[:2].tolist() == [0, 1]
    assert sorted(zip(idx[2:].tolist(), boxes[2:, 0].tolist(), strict=True)) == [
        (0, 1.0),
        (1, 21.0),
    ]
    boxes, idx = sample_mask_rois(props, gt, iou_thresh=0.5, max_rois=3)
    assert len(boxes) == 3 and idx[:2].tolist() == [0, 1]
    boxes, idx = sample_mask_rois(props, gt, iou_thresh=0.5, max_rois=1)
    assert len(boxes) == 1 and torch.equal(boxes[0], gt[idx[0]])
    boxes, idx = sample_mask_rois(props, gt[:0], iou_thresh=0.5, max_rois=4)
    assert boxes.shape == (0, 4) and idx.numel() == 0


def test_targets_for_occluder_head_amodal_and_has_mask():
    torch.manual_seed(0)
    model = effl0_fcos_maskrcnn(num_classes=2, pretrained=False, mask_head=RecordingHead)
    batch = tiny_batch(with_extras=True)
    t0 = batch.targets[0]
    with pytest.raises(ValueError, match="RecordingHead learns occluders.*occluder_masks"):
        model.loss(batch)  # the model never computes occluder targets itself
    batch.targets[0] = t0.replace(occluder_masks=t0.masks.flip(0))  # "the other instance"
    batch.targets[1].occluder_masks = torch.zeros_like(batch.targets[1].masks)
    losses = model.loss(batch)
    assert torch.isfinite(losses["loss_mask"])
    t = model.mask_head.seen
    assert t.occluder is not None and t.amodal is not None and t.has_mask is not None
    assert t.masks.shape == t.occluder.shape == t.amodal.shape == (len(t), 28, 28)
    # the GT boxes come first: image 0's instance 0 is fully its own mask and has_mask=True
    assert torch.all(t.masks[0] == 1) and bool(t.has_mask[0]) and not bool(t.has_mask[1])
    assert torch.equal(t.amodal[:2], t.masks[:2])
    assert float(t.occluder[0].sum()) > 0  # instance 1 overlaps instance 0's box


def test_boxes_only_targets_give_no_mask_supervision():
    torch.manual_seed(0)
    model = effl0_fcos_maskrcnn(num_classes=2, pretrained=False)
    batch = tiny_batch()
    batch.targets = [t.replace(masks=None) for t in batch.targets]
    losses = model.loss(batch)
    assert losses["loss_mask"].item() == 0.0 and losses["loss_mask"].requires_grad


def test_predict_fixed_num_and_head_outputs():
    torch.manual_seed(0)
    model = effl0_fcos_maskrcnn(
        num_classes=2, pretrained=False, fixed_num_detections=5, score_thresh=0.99
    ).eval()
    out = model.predict(tiny_batch(), return_head_outputs=True)
    assert [len(r) for r in out] == [5, 5]
    for r, (h, w) in zip(out, [(64, 80), (48, 64)], strict=True):
        assert r.masks.shape == (5, h, w) and r.masks.dtype == torch.bool
        assert r.mask_logits.shape == (5, 1, 28, 28) and "mask" not in r.extra
        assert r.scores.dtype == torch.float32


def test_mask_out_size_mismatch_is_reported():
    model = effl0_fcos_maskrcnn(
        num_classes=2,
        pretrained=False,
        mask_out_size=14,
        mask_head=partial(MaskRCNNHead, conv_dims=8),
    )
    with pytest.raises(ValueError, match="mask head outputs 28x28, segmenter expects 14"):
        model.loss(tiny_batch())


def test_segmenter_overfits_one_batch():
    torch.manual_seed(0)
    model = effl0_fcos_maskrcnn(num_classes=2, pretrained=False, train_mask_roi_batch=8)
    batch = tiny_batch()
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    totals = []
    for _ in range(25):
        losses = model.loss(batch)
        total = sum(losses.values())
        opt.zero_grad()
        total.backward()
        opt.step()
        totals.append(total.item())
    assert totals[-1] < 0.6 * totals[0]


def test_images_without_instances_and_bad_targets():
    torch.manual_seed(0)
    model = effl0_fcos_maskrcnn(num_classes=2, pretrained=False)
    batch = tiny_batch()
    batch.targets = [
        Instances(
            image_size=s,
            boxes=torch.zeros(0, 4),
            labels=torch.zeros(0).long(),
            masks=torch.zeros(0, *s, dtype=torch.bool),
        )
        for s in batch.image_sizes
    ]
    losses = model.loss(batch)
    assert losses["loss_mask"].item() == 0.0 and losses["loss_box"].item() == 0.0
    sum(losses.values()).backward()
    batch = tiny_batch()
    batch.file_names = ["a.jpg", "b.jpg"]
    batch.targets[0].labels[0] = 2
    with pytest.raises(ValueError, match=r"a\.jpg: labels \[2, 1\] outside 0..1"):
        model.loss(batch)
    batch = tiny_batch()
    batch.targets[1].masks = batch.targets[1].masks[:, :40]
    with pytest.raises(ValueError, match=r"batch image 1: masks are \(40, 64\), image size"):
        model.loss(batch)


def test_mask_features_are_pooled_aligned_by_default_legacy_selectable():
    """New models pool the mask-head features with aligned=True, as the targets are projected;
    roi_aligned=False (or ModelConfig.roi_aligned=False) keeps torchvision's legacy pooling."""
    from instseg.models.build import ModelConfig, build_model_from_config
    from instseg.models.layers.roi_align import FPNRoIAlign

    model = effl0_fcos_maskrcnn(num_classes=2, pretrained=False)
    pool = model.mask_roi_pool
    assert isinstance(pool, FPNRoIAlign) and pool.aligned and model.roi_aligned
    assert pool.featmap_names == ["p2", "p3", "p4", "p5"] and pool.strides == [4, 8, 16, 32]
    legacy = effl0_fcos_maskrcnn(num_classes=2, pretrained=False, roi_aligned=False)
    assert not legacy.mask_roi_pool.aligned
    assert ModelConfig().roi_aligned
    cfg = ModelConfig(pretrained=False, roi_aligned=False)
    assert not build_model_from_config(cfg, num_classes=2).mask_roi_pool.aligned
    with pytest.raises(ValueError, match="not in the FPN levels"):
        effl0_fcos_maskrcnn(num_classes=2, pretrained=False, mask_in_features=["p9"])


SHIPPED = Path(__file__).resolve().parents[2] / "src" / "instseg" / "weights" / "demo_image.pt"


@pytest.mark.skipif(not SHIPPED.is_file(), reason="no shipped image model")
def test_shipped_model_keeps_the_pooling_it_was_trained_with():
    """demo_image.pt predates aligned pooling (its meta has no roi_aligned): it is rebuilt with
    the legacy pooling, so its outputs do not change."""
    from instseg.config import from_dict
    from instseg.engine.weights import read_weights_file
    from instseg.models.build import ModelConfig, build_model_from_config

    _, meta = read_weights_file(SHIPPED, task="image")
    assert meta.model["roi_aligned"] is False
    cfg = from_dict(ModelConfig, meta.model)
    model = build_model_from_config(cfg, num_classes=meta.num_classes)
    assert not model.mask_roi_pool.aligned
