"""CPMask: the commonality-parsing mask head (survey ch. 4, Figs. 4.2-4.3, Eqs. 4.1-4.6).

A class-agnostic RoI mask head for partially supervised instance segmentation: it learns shape
commonalities (instance boundaries) and appearance commonalities (pixel affinities) on the
mask-annotated base classes so that it generalises to box-only novel classes. On RoI features
X (R, C, S, S), S = 14 by default::

    Boundary-Parsing Module F_B (Eq. 4.1):
        B = 4 x [conv3x3 + ReLU](X)                    (R, C, S, S)
        boundary = conv1x1(upsample(B))                 (R, 1, 2S, 2S) logits
    fusion + basic mask head G (Eq. 4.2):
        C = G(X + B),  G = 4 x [conv3x3 + ReLU]         (R, D, S, S)
    Non-local Affinity-Parsing unit (Eqs. 4.3-4.5), N = S * S pixels:
        A = softmax_{m,n}(z(theta(C_ij)) . z(phi(C_mn)) / sqrt(D'))   (R, N, N)
        C~ = A g(C)                                     (R, D, S, S)
    prediction (Eq. 4.6):
        mask = conv1x1(upsample(C~ + C))                (R, K, 2S, 2S) logits

Choices the paper leaves open (each is a constructor argument or documented default):

- **Which F_B features are fused (Eq. 4.2).** ``X + F_B(X)`` is an element-wise addition, so
  F_B(X) must have X's shape: we add the output of F_B's four convs, the S x S features before
  the upsampling (the upsampled 2S x 2S map or the 1-channel boundary logits cannot be added
  to X without resampling). This requires ``conv_dim == in_channels`` when ``boundary`` is on.
- **Upsampling layer.** A 2x transposed convolution + ReLU, the "upsampling layer" of the
  Mask R-CNN head (survey ch. 3.2.1) this head extends; F_B and the mask predictor have one each.
- **z-score (Eq. 4.3).** mu_ij and sigma_ij are indexed by the pixel, so each pixel's theta (and
  phi) embedding is standardised over its own D' channels (population variance + 1e-5), through
  :class:`NonLocalBlock` with ``zscore=True``. theta, phi and g are bias-free 1x1 convolutions
  (the "linear embedding functions"), D' = ``affinity_channels`` (default D).
- **Temperature.** f is the dot product; two z-scored D'-vectors have a dot product in
  [-D', D'], which would make the softmax nearly one-hot at any useful width, so by default it
  is scaled by 1 / sqrt(D') (``affinity_scaled``; False gives the literal unscaled product).
- **Softmax over m, n (Eq. 4.4).** Row-wise: ``A[r, i, :]`` sums to 1 over all pixels m.
- **Coordination (Eq. 4.5).** Exactly ``A g(C)``: no norm, ReLU or residual inside (the
  residual is the ``C~ + C`` of Eq. 4.6). The block's ``w_g`` convolution is g, applied by
  ``NonLocalBlock.aggregate``; its norm is ``nn.Identity`` so the head has no unused parameters.
  g starts at zero (as non-local blocks are initialised to start as the identity): at init
  ``C~ = 0`` and the mask branch sees C unchanged. With a random g, ``|C~|`` was 1.1-1.2 |C| and
  nearly constant over the RoI (a softmax average of all pixels), drowning C's spatial signal.
  g still learns from the first step (its gradient is ``A^T dC~ C^T``), and theta/phi from the
  affinity loss.
- **The "+" of Eq. 4.6.** ``C~ (+) C`` uses the same symbol as Eq. 4.2, where the text says
  "element-wise additions", so it is an addition (not a concatenation).
- **Ablation variants** (baseline / +boundary / +affinity / both) via ``boundary`` and
  ``affinity``. With neither, the head is the class-agnostic Mask R-CNN head (4 convs, deconv,
  1x1 conv). ``class_aware`` (one mask channel per class) exists only for the fully supervised
  "oracle" comparison; CPMask itself is class-agnostic.

Losses (:func:`commonality_loss`): segment BCE (Eq. 4.6) + boundary BCE (Eq. 4.1) + affinity L1
(Eq. 4.4), see :func:`affinity_loss` for its normalisation. Only RoIs with
``MaskTargets.has_mask`` contribute to any of them (partially supervised training: novel classes
give box losses only).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from instseg.models.heads.base import MaskHead, MaskTargets, select_class
from instseg.models.heads.contours import mask_contours
from instseg.models.heads.mask_rcnn import mask_rcnn_loss
from instseg.models.layers.blocks import conv_relu_stack, mask_predictor, upsample_relu
from instseg.models.layers.non_local import NonLocalBlock

__all__ = [
    "CommonalityMaskHead",
    "CommonalityLossWeights",
    "commonality_loss",
    "affinity_loss",
    "affinity_targets",
    "boundary_loss",
    "commonality_maps",
]


class CommonalityMaskHead(MaskHead):
    """CPMask mask head: ``forward`` (R, C, S, S) -> dict of logits / affinities.

    Args:
        in_channels: C of the pooled RoI features.
        num_classes: classes of the detector (only used when ``class_aware``).
        conv_dim: D, width of F_B and G (default ``in_channels``; must equal it with
            ``boundary`` because of the addition of Eq. 4.2).
        boundary: build the Boundary-Parsing Module (Eqs. 4.1-4.2).
        affinity: build the Non-local Affinity-Parsing unit (Eqs. 4.3-4.5).
        affinity_channels: D', width of the theta/phi embeddings (default D).
        affinity_scaled: scale the dot products by 1 / sqrt(D') before the softmax.
        class_aware: one mask channel per class (oracle baselines only; CPMask is agnostic).
        loss_weights: weights of the three loss terms.
        boundary_width: radius of :func:`mask_contours` for the boundary targets.
    """

    def __init__(
        self,
        *,
        in_channels: int,
        num_classes: int = 1,
        conv_dim: int | None = None,
        boundary: bool = True,
        affinity: bool = True,
        affinity_channels: int | None = None,
        affinity_scaled: bool = True,
        class_aware: bool = False,
        loss_weights: CommonalityLossWeights | None = None,
        boundary_width: int = 1,
    ) -> None:
        super().__init__()
        dim = in_channels if conv_dim is None else conv_dim
        if boundary and dim != in_channels:
            raise ValueError(
                f"Eq. 4.2 adds F_B(X) to X: conv_dim {dim} != in_channels {in_channels}"
            )
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.class_aware = class_aware
        self.loss_weights = loss_weights or CommonalityLossWeights()
        self.boundary_width = boundary_width
        self.boundary_convs: nn.Module | None = None
        self.boundary_upsample: nn.Module | None = None
        self.boundary_predictor: nn.Conv2d | None = None
        if boundary:
            self.boundary_convs = conv_relu_stack(in_channels, dim, 4)
            self.boundary_upsample = upsample_relu(dim, dim)
            self.boundary_predictor = mask_predictor(dim, 1)
        self.mask_convs = conv_relu_stack(in_channels, dim, 4)  # G
        self.affinity_unit: NonLocalBlock | None = None
        if affinity:
            self.affinity_unit = NonLocalBlock(
                channels=dim,
                inner_channels=affinity_channels,
                norm=nn.Identity,
                residual=False,
                scaled=affinity_scaled,
                zscore=True,
            )
            nn.init.zeros_(self.affinity_unit.w_g.weight)  # C~ = 0 at init (Eq. 4.6: C + 0)
        self.mask_upsample = upsample_relu(dim, dim)
        self.mask_predictor = mask_predictor(dim, num_classes if class_aware else 1)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        """x: (R, C, S, S) RoI features -> dict:

        - ``"mask"``: (R, K, 2S, 2S) mask logits (K = num_classes if class_aware else 1)
        - ``"boundary"``: (R, 1, 2S, 2S) boundary logits, when ``boundary``
        - ``"affinity"``: (R, S*S, S*S) row-stochastic affinity A (pixels in row-major order),
          when ``affinity``
        """
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"expected (R, {self.in_channels}, S, S) RoI features, got {tuple(x.shape)}"
            )
        out: dict[str, Tensor] = {}
        if self.boundary_convs is not None:
            b = self.boundary_convs(x)  # F_B features at S x S
            out["boundary"] = self.boundary_predictor(self.boundary_upsample(b))  # Eq. 4.1
            x = x + b  # Eq. 4.2: X (+) F_B(X)
        c = self.mask_convs(x)  # C = G(.)
        if self.affinity_unit is not None:
            a = self.affinity_unit.affinity(c)  # Eq. 4.3 + softmax of Eq. 4.4
            c_tilde = self.affinity_unit.aggregate(c, a)  # Eq. 4.5
            out["affinity"] = a
            c = c_tilde + c  # Eq. 4.6: C~ (+) C
        out["mask"] = self.mask_predictor(self.mask_upsample(c))
        return out

    def loss(self, outputs: dict[str, Tensor], targets: MaskTargets) -> dict[str, Tensor]:
        """-> :func:`commonality_loss` terms (``loss_mask``, ``loss_boundary``,
        ``loss_affinity``; the last two only when the head has those modules)."""
        return commonality_loss(
            outputs, targets, weights=self.loss_weights, boundary_width=self.boundary_width
        )

    def predict(self, outputs: dict[str, Tensor], labels: Tensor) -> Tensor:
        """-> (R, M, M) float32 foreground probabilities (class-agnostic: channel 0)."""
        return select_class(outputs["mask"], labels).float().sigmoid()


@dataclass(frozen=True)
class CommonalityLossWeights:
    """Multipliers of the three terms. The paper states Eqs. 4.1, 4.4 and 4.6 without weights,
    which we read as an unweighted sum (all 1.0)."""

    mask: float = 1.0
    boundary: float = 1.0
    affinity: float = 1.0


def commonality_loss(
    outputs: dict[str, Tensor],
    targets: MaskTargets,
    *,
    weights: CommonalityLossWeights | None = None,
    boundary_width: int = 1,
) -> dict[str, Tensor]:
    """CPMask losses; each term is over the RoIs with ``targets.has_mask`` only (all RoIs when
    it is None).

    Args:
        outputs: :meth:`CommonalityMaskHead.forward` output: ``"mask"`` (R, K, M, M) logits,
            optional ``"boundary"`` (R, 1, M, M) logits and ``"affinity"`` (R, N, N).
        targets: ``masks`` (R, M, M) in {0, 1}, ``labels`` (R,), ``has_mask`` bool (R,) or None.
        weights: term multipliers (default :class:`CommonalityLossWeights`).
        boundary_width: radius of the boundary band (:func:`mask_contours`).

    Returns:
        ``{"loss_mask"}`` (Eq. 4.6, mean BCE) plus ``"loss_boundary"`` (Eq. 4.1, mean BCE) and
        ``"loss_affinity"`` (Eq. 4.4, :func:`affinity_loss` on :func:`affinity_targets`) for the
        outputs present; weighted float32 scalars, zero but attached to the graph when no RoI
        is supervised.
    """
    w = weights or CommonalityLossWeights()
    if "mask" not in outputs:
        raise KeyError(f"commonality_loss needs outputs['mask'], got keys {sorted(outputs)}")
    keep = targets.has_mask
    if keep is None:
        keep = torch.ones(len(targets), dtype=torch.bool, device=targets.masks.device)
    keep = keep.to(torch.bool)
    losses = {"loss_mask": w.mask * mask_rcnn_loss(outputs["mask"], targets)}
    if "boundary" in outputs:
        losses["loss_boundary"] = w.boundary * boundary_loss(
            outputs["boundary"], targets.masks, has_mask=keep, width=boundary_width
        )
    if "affinity" in outputs:
        a = outputs["affinity"]
        if a.shape[0] != len(targets):
            raise ValueError(f"{a.shape[0]} affinity maps for {len(targets)} targets")
        fg = affinity_targets(targets.masks, num_pixels=a.shape[-1])
        losses["loss_affinity"] = w.affinity * affinity_loss(a[keep], fg[keep])
    return losses


def boundary_loss(
    logits: Tensor, masks: Tensor, *, has_mask: Tensor | None = None, width: int = 1
) -> Tensor:
    """Eq. 4.1: BCE between boundary logits and the boundary of the GT mask.

    logits: (R, 1, M, M); masks: (R, M, M) in {0, 1}; has_mask: bool (R,) or None. The target
    is :func:`mask_contours` (dilation XOR erosion, a 2 * ``width`` pixel band straddling the
    boundary; object edges cut by the RoI border are not boundaries). Mean over the supervised
    RoIs' pixels, float32; ``0 * logits.sum()`` when none is supervised.
    """
    if logits.ndim != 4 or logits.shape[1] != 1 or logits.shape[0] != masks.shape[0]:
        raise ValueError(
            f"boundary logits {tuple(logits.shape)} vs masks {tuple(masks.shape)}: "
            "expected (R, 1, M, M) and (R, M, M)"
        )
    if logits.shape[-2:] != masks.shape[-2:]:
        raise ValueError(f"boundary logits {tuple(logits.shape)} vs masks {tuple(masks.shape)}")
    x, m = logits[:, 0].float(), masks
    if has_mask is not None:
        keep = has_mask.to(torch.bool)
        x, m = x[keep], m[keep]
    if x.shape[0] == 0:
        return logits.sum() * 0.0
    return F.binary_cross_entropy_with_logits(x, mask_contours(m, width=width))


def affinity_targets(masks: Tensor, *, num_pixels: int) -> Tensor:
    """Foreground of each RoI on the affinity grid: masks (R, M, M) in {0, 1} -> bool (R, N).

    The grid is square, h = w = sqrt(N) (14 for 28x28 masks); each cell is foreground when at
    least half of the mask pixels it covers are (2x2 average >= 0.5 for 28 -> 14).
    """
    side = int(round(num_pixels**0.5))
    if side * side != num_pixels:
        raise ValueError(f"affinity over {num_pixels} pixels: expected a square RoI grid")
    pooled = F.adaptive_avg_pool2d(masks.float().unsqueeze(1), (side, side))
    return (pooled >= 0.5).flatten(1)


def affinity_loss(affinity: Tensor, fg: Tensor) -> Tensor:
    """Eq. 4.4: pull each foreground pixel's affinity mass onto the foreground.

    Args:
        affinity: (R, N, N) softmax-normalised affinities, ``affinity[r, i, m]`` = A_{i,m}.
        fg: bool (R, N): foreground pixels F_g (the rest is background B_g).

    For a foreground pixel i let ``s_fg(i) = sum_{m in F_g} A_{i,m}`` and
    ``s_bg(i) = sum_{m in B_g} A_{i,m}``; the loss of one RoI is

        mean_{i in F_g} ( |1 - s_fg(i)| + |0 - s_bg(i)| ),

    and the result is the mean over RoIs. Normalisation: Eq. 4.4 writes one sum over i and m,
    which for a perfect affinity equals |F_g| (not 1); we read the sums per row i (over m) and
    average over the foreground rows, so a perfect affinity (no mass on background pixels)
    gives exactly 0 and every RoI counts equally whatever its size. Because softmax rows sum to
    1, s_fg = 1 - s_bg and the two terms are equal: the loss is 2 * mean s_bg (both are
    computed anyway, so the function is also exact for un-normalised inputs). A uniform
    affinity gives 2 |B_g| / N.

    RoIs without foreground (no rows to supervise) or without background (the loss is
    identically 0 with zero gradient) are left out; with none left the result is
    ``0 * affinity.sum()`` (zero, attached to the graph). Float32 scalar.
    """
    if affinity.ndim != 3 or affinity.shape[1] != affinity.shape[2]:
        raise ValueError(f"affinity must be (R, N, N), got {tuple(affinity.shape)}")
    if fg.shape != affinity.shape[:2]:
        raise ValueError(f"fg {tuple(fg.shape)} vs affinity {tuple(affinity.shape)}")
    fg = fg.to(torch.bool)
    valid = fg.any(dim=1) & (~fg).any(dim=1)
    if not bool(valid.any()):
        return affinity.sum() * 0.0
    a, f = affinity[valid].float(), fg[valid].float()
    s_fg = torch.bmm(a, f.unsqueeze(2)).squeeze(2)  # (R', N)
    s_bg = torch.bmm(a, (1.0 - f).unsqueeze(2)).squeeze(2)
    rows = (1.0 - s_fg).abs() + s_bg.abs()
    per_roi = (rows * f).sum(dim=1) / f.sum(dim=1)
    return per_roi.mean()


def commonality_maps(
    head_outputs: dict[str, Tensor],
    index: int,
    *,
    pixel: tuple[int, int] | None = None,
) -> tuple[Tensor | None, Tensor | None]:
    """For the explain tool: what the CPMask head saw for RoI ``index``.

    Args:
        head_outputs: :meth:`CommonalityMaskHead.forward` outputs (or a predictor's
            ``Instances.extra`` holding them): ``"boundary"`` (R, 1, M, M) logits,
            ``"affinity"`` (R, N, N).
        index: the RoI / detection.
        pixel: (row, col) on the h x w affinity grid whose affinity row is shown (default: the
            grid centre).

    Returns:
        (boundary probabilities float32 (M, M) or None when the head has no boundary module,
        affinity of ``pixel`` to every pixel float32 (h, w), summing to 1, or None).
    """
    boundary = head_outputs.get("boundary")
    aff = head_outputs.get("affinity")
    b = boundary[index, 0].float().sigmoid() if boundary is not None else None
    if aff is None:
        return b, None
    n = aff.shape[-1]
    side = int(round(n**0.5))
    if side * side != n:
        raise ValueError(f"affinity over {n} pixels: expected a square RoI grid")
    row, col = pixel if pixel is not None else (side // 2, side // 2)
    if not (0 <= row < side and 0 <= col < side):
        raise ValueError(f"pixel {(row, col)} outside the {side}x{side} affinity grid")
    return b, aff[index, row * side + col].float().reshape(side, side)


# Builders (literal numbers; the zoo collects them). Each matches the zoo's mask-head factory
# signature ``(*, in_channels, num_classes, class_aware)``.


# -------------------------------------------------------------------- helpers
