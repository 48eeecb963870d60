"""FCOS: fully convolutional one-stage, anchor-free detector (survey ch. 3.2.1, "FCOS detector").

A thin module around torchvision's FCOS parts: the towers are torchvision's
``FCOSClassificationHead`` / ``FCOSRegressionHead`` (GroupNorm, configurable depth; the loss is
``FCOSHead.compute_loss``: sigmoid focal + GIoU + centre-ness BCE). What is ours: the point
generator (one point per cell at ``(i + 0.5) * stride``, strides known from the FPN, so padded
sizes need not be multiples of 128), the centre-sampling assignment, and the batched top-k +
NMS decoding which masks out points in the padding of each image.

The fast default is a *slim* head (2 convs per tower at the FPN width, e.g. 64-96 channels): the
classic 4 x 256 head costs as much as a ResNet-50 on a CPU.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from functools import partial

import torch
from torch import Tensor, nn
from torchvision.models.detection import _utils as det_utils
from torchvision.models.detection.fcos import (
    FCOSClassificationHead,
    FCOSHead,
    FCOSRegressionHead,
)
from torchvision.ops import boxes as box_ops

from instseg.structures import Instances

__all__ = ["FCOS", "FCOSTowers", "fcos_match"]


class FCOS(nn.Module):
    """FCOS detector on FPN levels ``in_features`` (e.g. p3..p7).

    - ``loss(features, targets, image_sizes)`` -> (losses ``{"loss_cls", "loss_box",
      "loss_ctr"}``, proposals: B x float32 (P_i, 4) detached top-scoring boxes for RoI training)
    - ``predict(features, image_sizes, score_thresh=, max_detections=)`` -> B x
      :class:`Instances` with boxes (N, 4) xyxy, scores (N,), labels (N,) in 0..K-1.

    ``features``: the FPN's OrderedDict ``{name: (B, C, H_l, W_l)}``; ``image_sizes``: B x (h, w)
    valid sizes inside the padded batch.
    """

    #: padded batch size must be a multiple of this (points are placed by known strides)
    size_divisibility: int = 32

    def __init__(
        self,
        *,
        in_channels: int,
        in_features: Sequence[str],
        strides: Sequence[int],
        num_classes: int,
        num_convs: int = 4,
        norm_groups: int = 32,
        prior_prob: float = 0.01,
        center_sampling_radius: float = 1.5,
        nms_thresh: float = 0.6,
        topk_candidates: int = 1000,
        train_proposals: int = 100,
    ) -> None:
        super().__init__()
        if len(in_features) != len(strides):
            raise ValueError(f"in_features {in_features} and strides {strides} differ in length")
        self.in_features = list(in_features)
        self.strides = [int(s) for s in strides]
        self.num_classes = num_classes
        self.head = FCOSTowers(
            in_channels=in_channels,
            num_classes=num_classes,
            num_convs=num_convs,
            norm_groups=norm_groups,
            prior_prob=prior_prob,
        )
        self.center_sampling_radius = center_sampling_radius
        self.nms_thresh = nms_thresh
        self.topk_candidates = topk_candidates
        self.train_proposals = train_proposals

    def forward(self, features: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """-> float32 ``{"cls_logits": (B, P, K), "bbox_regression": (B, P, 4) in stride units,
        "bbox_ctrness": (B, P, 1)}`` over all P points of all levels, finest level first."""
        out = self.head([features[n] for n in self.in_features])
        return {k: v.float() for k, v in out.items()}

    def loss(
        self,
        features: Mapping[str, Tensor],
        targets: Sequence[Instances],
        image_sizes: Sequence[tuple[int, int]],
    ) -> tuple[dict[str, Tensor], list[Tensor]]:
        out = self(features)
        anchors, sizes = self._anchors(features)
        lower, upper = _scale_ranges(self.strides, sizes, anchors)
        matched, tv_targets = [], []
        for t in targets:
            boxes = t.boxes.to(anchors.device, torch.float32)
            matched.append(fcos_match(anchors, boxes, lower, upper, self.center_sampling_radius))
            tv_targets.append({"boxes": boxes, "labels": t.labels.to(anchors.device)})
        raw = self.head.compute_loss(tv_targets, out, [anchors] * len(targets), matched)
        losses = {
            "loss_cls": raw["classification"],
            "loss_box": raw["bbox_regression"],
            "loss_ctr": raw["bbox_ctrness"],
        }
        with torch.no_grad():
            dets = self._decode(
                {k: v.detach() for k, v in out.items()},
                anchors,
                sizes,
                image_sizes,
                score_thresh=0.0,
                topk=self.train_proposals,
                max_detections=self.train_proposals,
            )
        return losses, [d.boxes for d in dets]

    @torch.no_grad()
    def predict(
        self,
        features: Mapping[str, Tensor],
        image_sizes: Sequence[tuple[int, int]],
        *,
        score_thresh: float = 0.05,
        max_detections: int = 100,
    ) -> list[Instances]:
        out = self(features)
        anchors, sizes = self._anchors(features)
        return self._decode(
            out,
            anchors,
            sizes,
            image_sizes,
            score_thresh=score_thresh,
            topk=self.topk_candidates,
            max_detections=max_detections,
        )

    # ---------------------------------------------------------------- helpers

    def _anchors(self, features: Mapping[str, Tensor]) -> tuple[Tensor, list[int]]:
        """-> (P, 4) float32 stride-sized boxes centred on each point, and points per level."""
        out, sizes = [], []
        for name, s in zip(self.in_features, self.strides, strict=True):
            h, w = (int(v) for v in features[name].shape[-2:])  # plain ints: traceable
            dev = features[name].device
            ys = (torch.arange(h, device=dev, dtype=torch.float32) + 0.5) * s
            xs = (torch.arange(w, device=dev, dtype=torch.float32) + 0.5) * s
            cy, cx = torch.meshgrid(ys, xs, indexing="ij")
            c = torch.stack([cx.reshape(-1), cy.reshape(-1)], dim=1)
            out.append(torch.cat([c - s / 2, c + s / 2], dim=1))
            sizes.append(h * w)
        return torch.cat(out), sizes

    def _decode(
        self,
        out: dict[str, Tensor],
        anchors: Tensor,
        sizes: list[int],
        image_sizes: Sequence[tuple[int, int]],
        *,
        score_thresh: float,
        topk: int,
        max_detections: int,
    ) -> list[Instances]:
        centers = (anchors[:, :2] + anchors[:, 2:]) / 2
        k = self.num_classes
        results = []
        for i, (h, w) in enumerate(image_sizes):
            valid = (centers[:, 0] < w) & (centers[:, 1] < h)
            # score^2 = sigmoid(cls) * sigmoid(ctr); points in the padding get 0
            ctr = out["bbox_ctrness"][i, :, 0].sigmoid() * valid
            cls = out["cls_logits"][i].sigmoid()
            boxes, scores, labels = [], [], []
            for start, n in zip(_starts(sizes), sizes, strict=True):
                sq = (cls[start : start + n] * ctr[start : start + n, None]).flatten()
                sq, cand = sq.topk(min(topk, sq.numel()))
                ok = sq > score_thresh**2
                sq, cand = sq[ok], cand[ok]
                pts = start + torch.div(cand, k, rounding_mode="floor")
                sc = torch.sqrt(sq)
                b = self.head.box_coder.decode(out["bbox_regression"][i][pts], anchors[pts])
                boxes.append(box_ops.clip_boxes_to_image(b, (h, w)))
                scores.append(sc)
                labels.append(cand % k)
            b, s, lab = torch.cat(boxes), torch.cat(scores), torch.cat(labels)
            keep = box_ops.remove_small_boxes(b, 1e-2)
            b, s, lab = b[keep], s[keep], lab[keep]
            keep = box_ops.batched_nms(b, s, lab, self.nms_thresh)[:max_detections]
            results.append(
                Instances(image_size=(h, w), boxes=b[keep], labels=lab[keep], scores=s[keep])
            )
        return results


class FCOSTowers(FCOSHead):
    """torchvision's ``FCOSHead`` (same forward and ``compute_loss``) with configurable tower
    depth and GroupNorm groups, for slim heads. Input: list of (B, C, H_l, W_l)."""

    def __init__(
        self,
        *,
        in_channels: int,
        num_classes: int,
        num_convs: int,
        norm_groups: int,
        prior_prob: float,
    ) -> None:
        # FCOSHead.__init__ hard-codes GroupNorm(32) and prior 0.01; build the same members here.
        nn.Module.__init__(self)
        if in_channels % norm_groups:
            raise ValueError(f"norm_groups={norm_groups} must divide in_channels={in_channels}")
        norm = partial(nn.GroupNorm, norm_groups)
        self.box_coder = det_utils.BoxLinearCoder(normalize_by_size=True)
        self.classification_head = FCOSClassificationHead(
            in_channels, 1, num_classes, num_convs, prior_probability=prior_prob, norm_layer=norm
        )
        self.regression_head = FCOSRegressionHead(in_channels, 1, num_convs, norm_layer=norm)


def fcos_match(
    anchors: Tensor, gt_boxes: Tensor, lower: Tensor, upper: Tensor, radius: float
) -> Tensor:
    """FCOS assignment with centre sampling.

    A point (centre of its stride-sized ``anchors`` row (P, 4)) is positive for a GT box (M, 4)
    when it lies inside the box, within ``radius * stride`` of the box centre, and its largest
    l/t/r/b distance is in (lower, upper] of its level. Ties go to the smallest GT box.
    Returns int64 (P,): matched GT index or -1 (background).
    """
    if gt_boxes.numel() == 0:
        return torch.full((anchors.shape[0],), -1, dtype=torch.long, device=anchors.device)
    pts = (anchors[:, :2] + anchors[:, 2:]) / 2
    stride = anchors[:, 2] - anchors[:, 0]
    gt_ctr = (gt_boxes[:, :2] + gt_boxes[:, 2:]) / 2
    near = (pts[:, None] - gt_ctr[None]).abs().amax(dim=2) < radius * stride[:, None]
    x, y = pts[:, 0:1], pts[:, 1:2]
    ltrb = torch.stack(
        [x - gt_boxes[:, 0], y - gt_boxes[:, 1], gt_boxes[:, 2] - x, gt_boxes[:, 3] - y], dim=2
    )
    reach = ltrb.amax(dim=2)
    ok = near & (ltrb.amin(dim=2) > 0) & (reach > lower[:, None]) & (reach <= upper[:, None])
    area = (gt_boxes[:, 2] - gt_boxes[:, 0]) * (gt_boxes[:, 3] - gt_boxes[:, 1])
    cost = torch.where(ok, area[None].expand_as(ok), torch.full_like(reach, math.inf))
    best, idx = cost.min(dim=1)
    idx[torch.isinf(best)] = -1
    return idx


def _scale_ranges(strides: list[int], sizes: list[int], anchors: Tensor) -> tuple[Tensor, Tensor]:
    """Per point (P,) size range (4 * stride, 8 * stride]; 0 below the first level, inf above
    the last (FCOS: 0-64-128-256-512-inf for P3-P7)."""
    lo, hi = [], []
    for j, (s, n) in enumerate(zip(strides, sizes, strict=True)):
        lo.append(torch.full((n,), 0.0 if j == 0 else 4.0 * s))
        hi.append(torch.full((n,), math.inf if j == len(strides) - 1 else 8.0 * s))
    return torch.cat(lo).to(anchors.device), torch.cat(hi).to(anchors.device)


def _starts(sizes: list[int]) -> list[int]:
    out, acc = [], 0
    for n in sizes:
        out.append(acc)
        acc += n
    return out
