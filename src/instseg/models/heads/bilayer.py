"""BCNet: the occlusion-aware bilayer GCN mask head (survey ch. 3, Fig. 3.4, Eqs. 3.1-3.8).

Two graph layers run on each RoI feature X_roi (R, C, S, S), S = 14 by default::

    layer 1 (occluder):  X_roi -> conv3x3 xA -> GCN (Z^0, Eq. 3.6) -> conv3x3 xB (W_f^0)
                           -> deconv 2x -> 1x1 convs -> occluder mask / contour logits (2S x 2S)
    guidance (Eq. 3.5):  X_f = layer1 features + X_roi
    layer 2 (occludee):  X_f -> conv3x3 xA -> GCN (Z^1, Eq. 3.4) -> conv3x3 xB
                           -> deconv 2x -> 1x1 convs -> occludee mask / contour logits (2S x 2S)

A = ``convs_before_gcn``, B = ``convs_after_gcn``. The defaults (2, 2) follow the original
release (4 convs per layer with the non-local block after the second one), which also matches
the parameter deltas in survey Table 3.3 (a bilayer FCN adds about four 3x3 convs; GCN adds
non-local blocks on top of the convs). The prose of Sect. 3.2.2 ("one 3x3 conv, one GCN, one
FCN layer") is ``convs_before_gcn=1, convs_after_gcn=1``. Unlike the release (one deconv per
output), mask and contour of a layer share one deconv as in the paper's description.

Ablation flags (survey Tables 3.1-3.3):

- ``occluder_targets``: which layer-1 outputs are predicted and supervised: ``"none"``
  (Table 3.1 baseline: layer 1 exists but has no explicit target), ``"mask"``, ``"contour"``,
  ``"both"``.
- ``guidance``: add layer-1 features to X_roi before layer 2 (Table 3.2); False leaves layer 2
  on X_roi alone, so layer 1 cannot influence the occludee outputs (with no occluder target
  either, layer 1 would be dead weight and is not built).
- ``block``: ``"gcn"`` (a :class:`NonLocalBlock` after the first convs) or ``"fcn"`` (plain conv
  layers only; the non-local block is left out) (Table 3.3).
- ``bilayer``: False builds the single-layer variant (occludee layer only) (Table 3.3).
- ``occludee_contour``: predict and supervise the occludee contour (Table 3.2).

Losses (:func:`bilayer_loss`) are BCE on logits for every output present, with contour targets
derived on the fly from the projected masks (:func:`mask_contours`). Occludee terms are averaged
over the mask-supervised RoIs; occluder terms only over those whose occluder target is not empty
(37-59% of the RoIs have none: averaging over them taught layer 1 mostly "no occluder"), as the
original release does. The weights (:class:`BilayerLossWeights`) are the release's effective ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from instseg.models.heads.base import MaskHead, MaskTargets, select_class
from instseg.models.heads.contours import mask_contours
from instseg.models.layers.blocks import conv_relu_stack, upsample_relu
from instseg.models.layers.non_local import NonLocalBlock

__all__ = [
    "BilayerMaskHead",
    "BilayerLossWeights",
    "bilayer_loss",
    "bilayer_inference",
]

OccluderTargets = Literal["none", "mask", "contour", "both"]
Block = Literal["gcn", "fcn"]


class BilayerMaskHead(MaskHead):
    """Bilayer occluder/occludee mask head.

    Args:
        in_channels: C of the pooled RoI features.
        num_classes: classes of the detector (used only when ``class_aware``).
        conv_dim: channels inside the head (default ``in_channels``; must equal it when the
            guidance addition of Eq. 3.5 is on).
        convs_before_gcn / convs_after_gcn: 3x3 conv + ReLU layers before / after the GCN in
            each layer.
        occluder_targets, guidance, block, bilayer, occludee_contour: see the module docstring.
        class_aware: one occludee mask/contour channel per class (occluder outputs are always
            class-agnostic: the occluder's class is not the RoI's class).
        loss_weights: weights of the four BCE terms.
    """

    needs_occluder = True

    def __init__(
        self,
        *,
        in_channels: int,
        num_classes: int = 1,
        conv_dim: int | None = None,
        convs_before_gcn: int = 2,
        convs_after_gcn: int = 2,
        occluder_targets: OccluderTargets = "both",
        guidance: bool = True,
        block: Block = "gcn",
        bilayer: bool = True,
        occludee_contour: bool = True,
        class_aware: bool = False,
        loss_weights: BilayerLossWeights | None = None,
    ) -> None:
        super().__init__()
        dim = in_channels if conv_dim is None else conv_dim
        if occluder_targets not in ("none", "mask", "contour", "both"):
            raise ValueError(
                f"occluder_targets must be none/mask/contour/both, got {occluder_targets!r}"
            )
        if block not in ("gcn", "fcn"):
            raise ValueError(f"block must be 'gcn' or 'fcn', got {block!r}")
        if bilayer and guidance and dim != in_channels:
            raise ValueError(
                f"guidance adds layer-1 features to X_roi: conv_dim {dim} != "
                f"in_channels {in_channels}"
            )
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.class_aware = class_aware
        self.bilayer = bilayer
        self.guidance = bilayer and guidance
        self.occluder_targets = occluder_targets if bilayer else "none"
        self.needs_occluder = self.occluder_targets != "none"
        self.loss_weights = loss_weights or BilayerLossWeights()

        def graph_layer(outputs: tuple[str, ...], out_channels: int) -> GraphLayer:
            return GraphLayer(
                in_channels=in_channels,
                conv_dim=dim,
                before=convs_before_gcn,
                after=convs_after_gcn,
                block=block,
                outputs=outputs,
                out_channels=out_channels,
            )

        self.occluder: GraphLayer | None = None
        if bilayer and (self.guidance or self.occluder_targets != "none"):
            occ_outputs = {
                "none": (), "mask": ("occluder_mask",), "contour": ("occluder_contour",),
                "both": ("occluder_mask", "occluder_contour"),
            }[self.occluder_targets]  # fmt: skip
            self.occluder = graph_layer(occ_outputs, 1)
        k = num_classes if class_aware else 1
        self.occludee = graph_layer(("mask", "contour") if occludee_contour else ("mask",), k)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        """x: (R, C, S, S) RoI features -> dict of logits, each (R, K, 2S, 2S):

        - ``"mask"``: occludee mask (K = num_classes if class_aware else 1)
        - ``"contour"``: occludee contour (same K), when ``occludee_contour``
        - ``"occluder_mask"`` / ``"occluder_contour"``: K = 1, when in ``occluder_targets``
        """
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"expected (R, {self.in_channels}, S, S) RoI features, got {tuple(x.shape)}"
            )
        out: dict[str, Tensor] = {}
        if self.occluder is not None:
            occ_features, occ_logits = self.occluder(x)
            out.update(occ_logits)
            if self.guidance:
                x = occ_features + x  # Eq. 3.5: X_f = Z^0 W_f^0 + X_roi
        _, logits = self.occludee(x)
        out.update(logits)
        return out

    def loss(self, outputs: dict[str, Tensor], targets: MaskTargets) -> dict[str, Tensor]:
        """-> :func:`bilayer_loss` terms (``loss_mask``, ``loss_contour``, ...)."""
        return bilayer_loss(outputs, targets, weights=self.loss_weights)

    def predict(self, outputs: dict[str, Tensor], labels: Tensor) -> Tensor:
        """-> (R, M, M) float32 occludee mask probabilities of each RoI's class."""
        return select_class(outputs["mask"], labels).float().sigmoid()


class GraphLayer(nn.Module):
    """One layer of the bilayer head: convs -> GCN (or nothing) -> convs -> deconv -> 1x1 convs.

    ``forward`` returns (features (R, D, S, S) before the upsampling, {name: (R, K, 2S, 2S)}).
    """

    def __init__(
        self,
        *,
        in_channels: int,
        conv_dim: int,
        before: int,
        after: int,
        block: Block,
        outputs: tuple[str, ...],
        out_channels: int,
    ) -> None:
        super().__init__()
        self.pre = conv_relu_stack(in_channels, conv_dim, before)
        d = conv_dim if before > 0 else in_channels
        self.gcn: nn.Module = NonLocalBlock(channels=d) if block == "gcn" else nn.Identity()
        self.post = conv_relu_stack(d, conv_dim, after)
        d = conv_dim if after > 0 else d
        self.upsample: nn.Module | None = None
        if outputs:
            self.upsample = upsample_relu(d, conv_dim)
        self.predictors = nn.ModuleDict({n: nn.Conv2d(conv_dim, out_channels, 1) for n in outputs})
        for p in self.predictors.values():
            nn.init.normal_(p.weight, std=0.001)
            nn.init.zeros_(p.bias)

    def forward(self, x: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        features = self.post(self.gcn(self.pre(x)))
        if self.upsample is None:
            return features, {}
        up = self.upsample(features)
        return features, {name: pred(up) for name, pred in self.predictors.items()}


@dataclass(frozen=True)
class BilayerLossWeights:
    """Weights of the BCE terms (each a mean over its RoIs' pixels).

    The survey states Eqs. 3.7-3.8 without weights. The defaults are the effective weights of
    the original BCNet release (lkeab/BCNet): its FCOS wrapper scales ``loss_mask`` by 1,
    ``loss_mask_bo`` (occluder mask) by 0.25 and both boundary losses by 0.5, and each boundary
    loss is ``JointLoss(BceLoss(), BceLoss())``, the sum of two identical BCEs (2 x BCE): both
    contour terms weigh 0.5 x 2 = 1.0, the occludee mask 1.0, the occluder mask 0.25.
    """

    mask: float = 1.0
    occluder_mask: float = 0.25
    contour: float = 1.0
    occluder_contour: float = 1.0


def bilayer_loss(
    outputs: dict[str, Tensor],
    targets: MaskTargets,
    *,
    weights: BilayerLossWeights | None = None,
    contour_width: int = 1,
) -> dict[str, Tensor]:
    """BCE losses of the bilayer head (Eqs. 3.7-3.8 for the occluder, the same for the occludee).

    Args:
        outputs: :meth:`BilayerMaskHead.forward` logits, each (R, K, M, M).
        targets: ``masks`` (R, M, M) occludee targets, ``labels`` (R,) (class-aware heads),
            ``occluder`` (R, M, M) (required when occluder logits are present), ``has_mask``
            (R,) bool or None (None: every RoI is supervised).
        weights: multipliers of the four terms.
        contour_width: radius of :func:`mask_contours` for the contour targets.

    Returns:
        ``{"loss_mask", "loss_contour", "loss_occluder_mask", "loss_occluder_contour"}`` (only
        the terms whose logits are present), each a weighted scalar mean over its RoIs' pixels:
        the supervised RoIs for the occludee terms, the supervised RoIs with a non-empty occluder
        target for the occluder terms (the original release's rule; it also appends a copy of
        the first RoIs, which we do not); zero (still attached to the graph) when a term has no
        RoI.
    """
    w = weights or BilayerLossWeights()
    if "mask" not in outputs:
        raise KeyError(f"bilayer_loss needs outputs['mask'], got keys {sorted(outputs)}")
    keep = targets.has_mask
    if keep is None:
        keep = torch.ones(len(targets), dtype=torch.bool, device=targets.masks.device)
    keep = keep.to(torch.bool)
    occludee = targets.masks.float()
    occluder, keep_occ = None, keep
    if "occluder_mask" in outputs or "occluder_contour" in outputs:
        if targets.occluder is None:
            raise ValueError(
                "bilayer_loss: the head predicts occluders but targets.occluder is None"
            )
        occluder = targets.occluder.float()
        keep_occ = keep & (occluder > 0.5).flatten(1).any(dim=1)  # RoIs that have an occluder
    terms = {
        "mask": (occludee, keep, w.mask, False),
        "contour": (occludee, keep, w.contour, True),
        "occluder_mask": (occluder, keep_occ, w.occluder_mask, False),
        "occluder_contour": (occluder, keep_occ, w.occluder_contour, True),
    }
    losses: dict[str, Tensor] = {}
    for name, (target, rows, weight, is_contour) in terms.items():
        if name not in outputs:
            continue
        if outputs[name].shape[0] != len(targets):
            raise ValueError(
                f"bilayer_loss: {outputs[name].shape[0]} {name} logits for {len(targets)} targets"
            )
        logits = select_class(outputs[name][rows], targets.labels[rows]).float()  # (R', M, M)
        target = None if target is None else target[rows]
        if target is None or logits.shape != target.shape:
            shape = None if target is None else tuple(target.shape)
            raise ValueError(
                f"bilayer_loss: {name} logits {tuple(logits.shape)} vs targets {shape}"
            )
        if logits.shape[0] == 0:
            losses[f"loss_{name}"] = outputs[name].sum() * 0.0
            continue
        if is_contour:
            target = mask_contours(target, width=contour_width)
        losses[f"loss_{name}"] = weight * F.binary_cross_entropy_with_logits(logits, target)
    return losses


def bilayer_inference(outputs: dict[str, Tensor], labels: Tensor) -> dict[str, Tensor]:
    """Logits -> probabilities (R, M, M) for every output present (occludee channels picked by
    ``labels`` (R,) when class-aware); for visualising both layers as in survey Fig. 3.7."""
    return {name: select_class(x, labels).float().sigmoid() for name, x in outputs.items()}
