"""Contract tests for every zoo variant: loss, backward, predict, autocast + channels_last."""

from __future__ import annotations

import pytest
import torch

from instseg.data.occlusion import compute_occluder_masks
from instseg.models.backbones.efficientnet import FrozenBNConv2d
from instseg.models.segmenter import InstanceSegmenter
from instseg.models.zoo import MODELS, build_model
from instseg.structures import Instances
from instseg.structures.batch import Batch, collate_images
from instseg.utils.precision import autocast

SMALL = dict(num_classes=3, pretrained=False, max_detections=6, train_mask_roi_batch=6)


def tiny_batch() -> Batch:
    """2 images of 128x160 and 96x128 with 3 and 2 instances (ellipses and rectangles)."""
    g = torch.Generator().manual_seed(0)
    sizes = [(128, 160), (96, 128)]
    images, sizes = collate_images([torch.rand(3, h, w, generator=g) * 255 for h, w in sizes], 32)
    targets = []
    for (h, w), n in zip(sizes, [3, 2], strict=True):
        yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
        masks, boxes = [], []
        for j in range(n):
            cx, cy, rx, ry = 30 + 35 * j, 30 + 20 * j, 20 + 4 * j, 14 + 3 * j
            m = ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1
            masks.append(m)
            boxes.append([cx - rx, cy - ry, cx + rx + 1, cy + ry + 1])
        masks_t, boxes_t = torch.stack(masks), torch.tensor(boxes, dtype=torch.float32)
        targets.append(
            Instances(
                image_size=(h, w),
                boxes=boxes_t,
                labels=torch.tensor([0, 2, 1][:n]),
                masks=masks_t,
                occluder_masks=compute_occluder_masks(masks_t, boxes_t),  # as datasets give
            )
        )
    return Batch(images=images, image_sizes=sizes, targets=targets)


def _check_predictions(out: list[Instances], batch: Batch) -> None:
    assert len(out) == len(batch)
    for r, (h, w) in zip(out, batch.image_sizes, strict=True):
        n = len(r)
        assert 0 < n <= 6 and r.image_size == (h, w)
        assert r.masks is not None and r.masks.shape == (n, h, w) and r.masks.dtype == torch.bool
        assert r.boxes.dtype == torch.float32 and torch.isfinite(r.boxes).all()
        assert r.scores is not None and torch.isfinite(r.scores).all()
        assert float(r.boxes[:, 2].max()) <= w and float(r.boxes[:, 3].max()) <= h
        assert int(r.labels.min()) >= 0 and int(r.labels.max()) < 3


# every registered variant (4 detectors x 14 heads)
CONTRACT_MODELS = sorted(MODELS)


def _contract(name: str, *, amp: str, channels_last: bool) -> None:
    """Loss terms (scalar, float32, finite), gradients reaching backbone, FPN and every mask
    head parameter, then predictions of the right shapes, under ``amp`` (and NHWC)."""
    torch.manual_seed(0)
    model = build_model(name, **SMALL)
    assert isinstance(model, InstanceSegmenter)
    batch = tiny_batch()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        batch.images = batch.images.contiguous(memory_format=torch.channels_last)
    model.train()
    with autocast(amp, "cpu"):
        losses = model.loss(batch)
    assert "loss_mask" in losses and "loss_cls" in losses and "loss_box" in losses
    for k, v in losses.items():
        assert v.ndim == 0 and v.dtype == torch.float32 and torch.isfinite(v), k
    sum(losses.values()).backward()
    body = model.backbone.bottom_up
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in body.parameters())
    assert any(
        p.grad is not None and p.grad.abs().sum() > 0 for p in model.backbone.fpn.parameters()
    )
    head_grads = [p.grad for p in model.mask_head.parameters()]
    assert all(g is not None for g in head_grads) and any(g.abs().sum() > 0 for g in head_grads)
    model.eval()
    with autocast(amp, "cpu"):
        out = model.predict(batch)
    _check_predictions(out, batch)


@pytest.mark.parametrize("name", CONTRACT_MODELS)
def test_contract_in_resolved_precision_channels_last(name):
    """Every variant as it runs on this CPU: channels_last, amp=auto (bf16 where native)."""
    _contract(name, amp="auto", channels_last=True)


@pytest.mark.parametrize("name", ["effl0_fcos_maskrcnn", "r50_frcnn_bcnet"])
def test_contract_fp32_contiguous(name):
    """The plain layout in fp32 (GPUs, and the inference path with channels_last=False)."""
    _contract(name, amp="none", channels_last=False)


def test_forced_bf16_autocast_channels_last():
    """bf16 on any CPU, on one model (emulated bf16 is 10-65x slower on CPUs without it)."""
    _contract("effl0_fcos_bcnet", amp="bf16", channels_last=True)


def test_pretrained_fast_default_builds_frozen_and_predicts():
    model = build_model("effl0_fcos_maskrcnn", num_classes=3, max_detections=6).eval()
    stem = model.backbone.bottom_up.body.conv_stem
    assert isinstance(stem, FrozenBNConv2d) and not stem.weight.requires_grad
    assert model.backbone.out_channels == 64
    assert model.backbone.names == ["p2", "p3", "p4", "p5", "p6", "p7"]
    assert model.detector.in_features == ["p3", "p4", "p5", "p6", "p7"]  # FCOS on P3-P7
    assert model.mask_roi_pool.featmap_names == ["p2", "p3", "p4", "p5"]  # masks from P2-P5
    body = model.backbone.bottom_up.body
    frozen = [all(not p.requires_grad for p in blk.parameters()) for blk in body.blocks]
    assert frozen[:2] == [True, True] and not any(frozen[2:])  # strides <= 4 frozen
    batch = tiny_batch()
    _check_predictions(model.predict(batch), batch)


def test_build_model_errors():
    with pytest.raises(
        KeyError, match=r"unknown model 'maskrcnn_r101'; valid names: .*effl0_fcos_maskrcnn"
    ):
        build_model("maskrcnn_r101", num_classes=3)
    with pytest.raises(ValueError, match="weights='/path/to/resnet50.pth'"):
        build_model("r50_fcos_maskrcnn", num_classes=3)
    with pytest.raises(TypeError):
        build_model("effl0_fcos_maskrcnn", num_classes=3, pretrained=False, no_such_option=1)


def test_class_aware_masks_and_head_factory():
    calls = {}

    def factory(**kw):
        from instseg.models.heads.mask_rcnn import MaskRCNNHead

        calls.update(kw)
        return MaskRCNNHead(conv_dims=8, num_convs=1, **kw)

    model = build_model(
        "effl0_fcos_maskrcnn",
        num_classes=3,
        pretrained=False,
        mask_head=factory,
        class_aware_masks=True,
        max_detections=4,
    )
    assert calls == {"in_channels": 64, "num_classes": 3, "class_aware": True}
    out = model.eval().predict(tiny_batch(), return_head_outputs=True)
    assert out[0].mask_logits.shape[1:] == (3, 28, 28)
