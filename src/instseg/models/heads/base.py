"""The pluggable RoI mask head interface.

A mask head maps RoI features to mask logits and owns its loss and inference as pure functions
beside it. Detectors (FCOS, Faster R-CNN) produce boxes; the :class:`InstanceSegmenter` pools
(R, C, 14, 14) features with RoIAlign, projects the ground truth onto each RoI's 28x28 grid
(:class:`MaskTargets`), and calls the head. BCNet (bilayer) and CPMask (commonality) heads sit
beside the baseline and implement the same three methods.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

__all__ = ["MaskTargets", "MaskHead"]


@dataclass
class MaskTargets:
    """Ground truth projected onto R positive RoIs (all float in [0, 1] unless noted).

    - ``masks``: (R, M, M) visible (modal) mask of the matched GT instance inside the RoI
    - ``labels``: int64 (R,) class of the matched GT instance
    - ``occluder``: (R, M, M) or None: union of the instances occluding it, inside the RoI
    - ``amodal``: (R, M, M) or None: amodal mask inside the RoI (when the data has it)
    - ``has_mask``: bool (R,): whether this RoI receives mask supervision (False for novel
      classes in partially-supervised training)
    """

    masks: Tensor
    labels: Tensor
    occluder: Tensor | None = None
    amodal: Tensor | None = None
    has_mask: Tensor | None = None

    def __len__(self) -> int:
        return int(self.masks.shape[0])


class MaskHead(nn.Module):
    """Interface: ``forward`` (features -> dict of logits), ``loss`` and ``predict``.

    Subclasses set the class attributes below so the segmenter knows what targets to build.
    """

    #: the head wants ``MaskTargets.occluder`` (BCNet)
    needs_occluder: bool = False
    #: the head predicts one mask per class (False: class-agnostic, one channel)
    class_aware: bool = False

    def forward(self, x: Tensor) -> dict[str, Tensor]:  # pragma: no cover - interface
        """x: (R, C, S, S) pooled RoI features -> dict with at least ``"mask"``:
        (R, K, 2S, 2S) logits (K = num_classes if class_aware else 1)."""
        raise NotImplementedError

    def loss(self, outputs: dict[str, Tensor], targets: MaskTargets) -> dict[str, Tensor]:
        raise NotImplementedError  # pragma: no cover - interface

    def predict(self, outputs: dict[str, Tensor], labels: Tensor) -> Tensor:
        """-> (R, M, M) foreground probabilities for each RoI's predicted class."""
        return select_class(outputs["mask"], labels).sigmoid()


def select_class(logits: Tensor, labels: Tensor) -> Tensor:
    """(R, K, M, M) logits, (R,) labels -> (R, M, M): the channel of each RoI's class
    (channel 0 when K == 1, i.e. class-agnostic)."""
    if logits.shape[1] == 1:
        return logits[:, 0]
    idx = torch.arange(logits.shape[0], device=logits.device)
    return logits[idx, labels]
