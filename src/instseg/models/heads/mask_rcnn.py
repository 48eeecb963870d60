"""Baseline Mask R-CNN mask head (survey ch. 3.2.1, "RoI mask head"): a small FCN on RoI
features, with its loss and inference as pure functions beside it.

(R, C, 14, 14) -> 4 x [conv3x3 + ReLU] -> deconv 2x + ReLU -> conv1x1 -> (R, K, 28, 28) logits,
K = num_classes (class-aware) or 1 (class-agnostic).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from instseg.models.heads.base import MaskHead, MaskTargets, select_class

__all__ = ["MaskRCNNHead", "mask_rcnn_loss", "mask_rcnn_inference"]


class MaskRCNNHead(MaskHead):
    """forward: (R, in_channels, S, S) -> ``{"mask": (R, K, 2S, 2S) logits}``.

    Args:
        in_channels: RoI feature channels (the FPN width).
        num_classes: number of object classes.
        conv_dims: width of the FCN convs (256 classic; the FPN width for slim models).
        num_convs: number of 3x3 convs before the 2x deconvolution.
        class_aware: one mask per class (K = num_classes) or a single class-agnostic one.
    """

    def __init__(
        self,
        *,
        in_channels: int,
        num_classes: int,
        conv_dims: int = 256,
        num_convs: int = 4,
        class_aware: bool = False,
    ) -> None:
        super().__init__()
        self.class_aware = class_aware
        self.num_classes = num_classes
        layers: list[nn.Module] = []
        c = in_channels
        for _ in range(num_convs):
            layers += [nn.Conv2d(c, conv_dims, 3, padding=1), nn.ReLU(inplace=True)]
            c = conv_dims
        self.convs = nn.Sequential(*layers)
        self.deconv = nn.ConvTranspose2d(c, conv_dims, 2, stride=2)
        self.predictor = nn.Conv2d(conv_dims, num_classes if class_aware else 1, 1)
        for m in [*self.convs, self.deconv]:
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
        nn.init.normal_(self.predictor.weight, std=0.001)
        nn.init.zeros_(self.predictor.bias)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        x = F.relu(self.deconv(self.convs(x)))
        return {"mask": self.predictor(x)}

    def loss(self, outputs: dict[str, Tensor], targets: MaskTargets) -> dict[str, Tensor]:
        """-> ``{"loss_mask": scalar}``."""
        return {"loss_mask": mask_rcnn_loss(outputs["mask"], targets)}

    def predict(self, outputs: dict[str, Tensor], labels: Tensor) -> Tensor:
        """-> (R, M, M) float32 foreground probabilities of each RoI's class."""
        return mask_rcnn_inference(outputs["mask"], labels)


def mask_rcnn_loss(logits: Tensor, targets: MaskTargets) -> Tensor:
    """Per-pixel binary cross-entropy on each RoI's target-class channel.

    logits: (R, K, M, M); targets.masks: (R, M, M) in [0, 1]; targets.labels: int64 (R,);
    targets.has_mask: optional bool (R,) — RoIs with False (e.g. novel classes in partially
    supervised training) are left out. Mean over the remaining RoIs' pixels, in float32. With no
    supervised RoI the loss is ``0 * logits.sum()``: zero but connected to the graph.
    """
    if logits.shape[0] != len(targets):
        raise ValueError(f"{logits.shape[0]} mask logits for {len(targets)} targets")
    if targets.masks.shape[-2:] != logits.shape[-2:]:
        raise ValueError(
            f"target masks {tuple(targets.masks.shape)} vs logits {tuple(logits.shape)}"
        )
    x = select_class(logits, targets.labels).float()
    gt = targets.masks.to(x.dtype)
    if targets.has_mask is not None:
        keep = targets.has_mask.to(torch.bool)
        x, gt = x[keep], gt[keep]
    if x.shape[0] == 0:
        return logits.sum() * 0.0
    return F.binary_cross_entropy_with_logits(x, gt, reduction="mean")


def mask_rcnn_inference(logits: Tensor, labels: Tensor) -> Tensor:
    """(R, K, M, M) logits, (R,) predicted labels -> (R, M, M) float32 probabilities."""
    return select_class(logits, labels).float().sigmoid()
