"""A learned embedding for semi-supervised propagation with instance prototypes.

The prototype mask propagator (:mod:`instseg.models.video.mask_propagation`) works on frozen
ImageNet features. :class:`PropagationEmbedding` maps those features (C, h, w) to a space where
an object's prototypes from one frame explain its pixels in a later frame better: a residual
1x1-conv MLP, ``f + g(f)``, L2-normalised, with ``g``'s last layer zero-initialised so the
untrained module is the identity (propagation is then exactly the training-free method). Training
(:mod:`instseg.recipes.propagation`) runs the differentiable GMM-EM fit on one frame's ground-truth
mask and the Eq. 5.5 read on a later frame, and minimises BCE + soft Dice against that frame's
mask (:func:`propagation_loss`).

Fine-tuning the backbone itself on our synthetic videos made propagation *worse* (PCAN's
backbone: 57.9 vs 67.2 J&F on the tuning sequences), so the backbone stays frozen.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from instseg.models.video.prototypes import label_prototypes, label_read

__all__ = ["PropagationEmbedding", "propagation_read", "propagation_loss"]


class PropagationEmbedding(nn.Module):
    """(B, C, h, w) unit features -> (B, C, h, w) unit features, ``normalize(f + g(f))``.

    Args:
        channels: C (152 for :class:`instseg.inference.mask_propagation.BackboneFeatures`).
        hidden: width of g's hidden layer.
    """

    def __init__(self, *, channels: int = 152, hidden: int = 256) -> None:
        super().__init__()
        self.channels = channels
        self.g = nn.Sequential(
            nn.Conv2d(channels, hidden, 1), nn.ReLU(inplace=True), nn.Conv2d(hidden, channels, 1)
        )
        nn.init.zeros_(self.g[2].weight)
        nn.init.zeros_(self.g[2].bias)

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 4 or x.shape[1] != self.channels:
            raise ValueError(f"expected (B, {self.channels}, h, w) features, got {tuple(x.shape)}")
        return F.normalize(x + self.g(x), dim=1)


def propagation_read(
    ref: Tensor,
    ref_mask: Tensor,
    query: Tensor,
    *,
    num_fg: int = 32,
    num_bg: int = 64,
    sigma: float = 0.15,
    em_iters: int = 3,
) -> Tensor:
    """Differentiable prototype read: fit fg / bg key prototypes on ``ref`` (C, h, w) weighted
    by ``ref_mask`` (h, w) coverage in [0, 1] (values = the soft label, as in the propagator),
    read ``query`` (C, h', w') -> (h', w') foreground probability."""
    keys = ref.flatten(1).t()[None]  # (1, N, C)
    cover = ref_mask.flatten()[None]
    em = {"iters": em_iters, "sigma": sigma}
    fg = label_prototypes(keys, cover, cover, num_prototypes=num_fg, **em)
    bg = label_prototypes(keys, 1 - cover, cover, num_prototypes=num_bg, **em)
    mu, val = torch.cat([fg[0], bg[0]], 1), torch.cat([fg[1], bg[1]], 1)
    prob = label_read(query.flatten(1).t()[None], mu, val, sigma=sigma)  # (1, N')
    return prob[0].reshape(query.shape[-2:])


def propagation_loss(prob: Tensor, target: Tensor) -> Tensor:
    """BCE + soft Dice between a read (h, w) probability and the target coverage (h, w)."""
    p = prob.clamp(1e-4, 1 - 1e-4)
    bce = F.binary_cross_entropy(p, target)
    dice = 1 - (2 * (p * target).sum() + 1) / (p.sum() + target.sum() + 1)
    return bce + dice
