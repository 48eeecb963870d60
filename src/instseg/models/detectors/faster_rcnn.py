"""Faster R-CNN: RPN + RoI box head, from torchvision parts (survey ch. 3.2.1, two-stage).

torchvision's ``RegionProposalNetwork`` (anchors, RPNHead, proposal filtering, loss) and
``RoIHeads`` (proposal sampling, box coder) with ``MultiScaleRoIAlign`` + ``TwoMLPHead`` +
``FastRCNNPredictor`` and ``fastrcnn_loss``. We call their pieces directly instead of their
``forward`` so that the modes are explicit (``loss`` / ``predict``), decoding runs in float32
under bf16 autocast, and labels are our 0..K-1 (torchvision's are 1..K with 0 = background).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.roi_heads import RoIHeads, fastrcnn_loss
from torchvision.models.detection.rpn import (
    RegionProposalNetwork,
    RPNHead,
    concat_box_prediction_layers,
)
from torchvision.ops import MultiScaleRoIAlign
from torchvision.ops import boxes as box_ops

from instseg.structures import Instances

__all__ = ["FasterRCNN"]


class FasterRCNN(nn.Module):
    """Two-stage detector on FPN levels.

    - ``loss(features, targets, image_sizes)`` -> (losses ``{"loss_rpn_obj", "loss_rpn_box",
      "loss_cls", "loss_box"}``, proposals: B x float32 (P_i, 4) detached RPN proposals)
    - ``predict(features, image_sizes, score_thresh=, max_detections=)`` -> B x
      :class:`Instances` (boxes, scores, labels 0..K-1)

    ``features``: OrderedDict ``{name: (B, C, H_l, W_l)}`` from the FPN whose padded input size
    is a multiple of ``size_divisibility``; ``image_sizes``: B x valid (h, w).

    Args:
        in_channels: FPN width.
        rpn_features: FPN levels for the RPN, one anchor size each (e.g. p2..p6).
        box_features: FPN levels the box head pools from (e.g. p2..p5).
        anchor_sizes: one size per RPN level; aspect ratios (0.5, 1, 2) at every level.
        representation_size: width of the two-FC box head (1024 classic).
    """

    def __init__(
        self,
        *,
        in_channels: int,
        rpn_features: Sequence[str],
        rpn_strides: Sequence[int],
        box_features: Sequence[str],
        num_classes: int,
        anchor_sizes: Sequence[int] = (32, 64, 128, 256, 512),
        representation_size: int = 1024,
        rpn_pre_nms_top_n_train: int = 2000,
        rpn_pre_nms_top_n_test: int = 1000,
        rpn_post_nms_top_n_train: int = 2000,
        rpn_post_nms_top_n_test: int = 1000,
        box_batch_size_per_image: int = 512,
        nms_thresh: float = 0.5,
    ) -> None:
        super().__init__()
        if len(anchor_sizes) != len(rpn_features):
            raise ValueError(
                f"need one anchor size per RPN level: {anchor_sizes} vs {rpn_features}"
            )
        self.rpn_features = list(rpn_features)
        self.rpn_strides = [int(s) for s in rpn_strides]
        self.size_divisibility = int(max(rpn_strides))
        self.num_classes = num_classes
        self.nms_thresh = nms_thresh
        anchors = AnchorGenerator(
            tuple((int(s),) for s in anchor_sizes), ((0.5, 1.0, 2.0),) * len(anchor_sizes)
        )
        self.rpn = RegionProposalNetwork(
            anchors,
            RPNHead(in_channels, anchors.num_anchors_per_location()[0]),
            fg_iou_thresh=0.7,
            bg_iou_thresh=0.3,
            batch_size_per_image=256,
            positive_fraction=0.5,
            pre_nms_top_n={"training": rpn_pre_nms_top_n_train, "testing": rpn_pre_nms_top_n_test},
            post_nms_top_n={
                "training": rpn_post_nms_top_n_train,
                "testing": rpn_post_nms_top_n_test,
            },
            nms_thresh=0.7,
        )
        pool = MultiScaleRoIAlign(featmap_names=list(box_features), output_size=7, sampling_ratio=2)
        self.roi_heads = RoIHeads(
            box_roi_pool=pool,
            box_head=TwoMLPHead(in_channels * 7 * 7, representation_size),
            box_predictor=FastRCNNPredictor(representation_size, num_classes + 1),
            fg_iou_thresh=0.5,
            bg_iou_thresh=0.5,
            batch_size_per_image=box_batch_size_per_image,
            positive_fraction=0.25,
            bbox_reg_weights=None,
            score_thresh=0.05,
            nms_thresh=nms_thresh,
            detections_per_img=100,
        )

    def loss(
        self,
        features: Mapping[str, Tensor],
        targets: Sequence[Instances],
        image_sizes: Sequence[tuple[int, int]],
    ) -> tuple[dict[str, Tensor], list[Tensor]]:
        tv_targets = [{"boxes": t.boxes.float(), "labels": t.labels.long() + 1} for t in targets]
        proposals, rpn_losses = self._rpn(features, image_sizes, tv_targets)
        rh = self.roi_heads
        rois, _, labels, reg_targets = rh.select_training_samples(list(proposals), tv_targets)
        cls, reg = self._box_head(features, rois)
        loss_cls, loss_box = fastrcnn_loss(cls, reg, labels, reg_targets)
        losses = {**rpn_losses, "loss_cls": loss_cls, "loss_box": loss_box}
        return losses, proposals

    @torch.no_grad()
    def predict(
        self,
        features: Mapping[str, Tensor],
        image_sizes: Sequence[tuple[int, int]],
        *,
        score_thresh: float = 0.05,
        max_detections: int = 100,
    ) -> list[Instances]:
        proposals, _ = self._rpn(features, image_sizes, None)
        cls, reg = self._box_head(features, proposals)
        boxes = self.roi_heads.box_coder.decode(reg, proposals)  # (R, K+1, 4)
        probs = F.softmax(cls, -1)
        out = []
        for b, p, (h, w) in zip(
            boxes.split([len(q) for q in proposals]),
            probs.split([len(q) for q in proposals]),
            image_sizes,
            strict=True,
        ):
            b = box_ops.clip_boxes_to_image(b[:, 1:], (h, w)).reshape(-1, 4)
            labels = torch.arange(self.num_classes, device=p.device).repeat(p.shape[0])
            p = p[:, 1:].reshape(-1)
            keep = torch.nonzero(p > score_thresh).squeeze(1)
            b, p, labels = b[keep], p[keep], labels[keep]
            keep = box_ops.remove_small_boxes(b, 1e-2)
            b, p, labels = b[keep], p[keep], labels[keep]
            keep = box_ops.batched_nms(b, p, labels, self.nms_thresh)[:max_detections]
            out.append(
                Instances(image_size=(h, w), boxes=b[keep], labels=labels[keep], scores=p[keep])
            )
        return out

    # ---------------------------------------------------------------- helpers

    def _rpn(
        self,
        features: Mapping[str, Tensor],
        image_sizes: Sequence[tuple[int, int]],
        targets: list[dict[str, Tensor]] | None,
    ) -> tuple[list[Tensor], dict[str, Tensor]]:
        """torchvision ``RegionProposalNetwork.forward`` with float32 decoding and an explicit
        loss switch (``targets`` given). -> (B x (P_i, 4) detached proposals, losses)."""
        rpn = self.rpn
        feats = [features[n] for n in self.rpn_features]
        b = feats[0].shape[0]
        hp, wp = self._padded_size(features)
        shapes_only = [torch.empty((0, *f.shape[-2:]), device=f.device) for f in feats]
        anchors = rpn.anchor_generator(
            ImageList(torch.empty((b, 0, hp, wp)), list(image_sizes)), shapes_only
        )
        objectness, deltas = rpn.head(feats)
        per_level = [o[0].numel() for o in objectness]
        objectness, deltas = concat_box_prediction_layers(objectness, deltas)
        objectness, deltas = objectness.float(), deltas.float()
        proposals = rpn.box_coder.decode(deltas.detach(), anchors).view(b, -1, 4)
        boxes, _ = rpn.filter_proposals(proposals, objectness, list(image_sizes), per_level)
        losses: dict[str, Tensor] = {}
        if targets is not None:
            labels, matched = rpn.assign_targets_to_anchors(anchors, targets)
            reg_targets = rpn.box_coder.encode(matched, anchors)
            obj, box = rpn.compute_loss(objectness, deltas, labels, reg_targets)
            losses = {"loss_rpn_obj": obj, "loss_rpn_box": box}
        return [x.detach() for x in boxes], losses

    def _box_head(
        self, features: Mapping[str, Tensor], rois: list[Tensor]
    ) -> tuple[Tensor, Tensor]:
        """-> float32 class logits (R, K+1) and box deltas (R, (K+1) * 4)."""
        rh = self.roi_heads
        x = rh.box_roi_pool(features, rois, [self._padded_size(features)] * len(rois))
        cls, reg = rh.box_predictor(rh.box_head(x))
        return cls.float(), reg.float()

    def _padded_size(self, features: Mapping[str, Tensor]) -> tuple[int, int]:
        """Padded input (Hp, Wp), from the finest RPN level and its stride."""
        f, s = features[self.rpn_features[0]], self.rpn_strides[0]
        return int(f.shape[-2]) * s, int(f.shape[-1]) * s
