"""Occlusion-aware flow completion of VOIN (paper Sect. 5.4.2, Fig. 5.6(b)).

A U-Net (encoder-decoder with skip connections) takes the two neighbouring frames, the initial
(corrupted, e.g. DIS) flow between them, and the visible and amodal object masks of the source
frame, and predicts the flow *residual* ``phi(x) = O - O_bar`` (residual learning). The residual
is applied inside the amodal object only::

    x = [I_a, I_b, O_bar / s, M_vis_a, M_amodal_a]           (N, 10, H, W)
    O = O_bar + M_amodal_a * s * phi(x)                       (N, 2, H, W)

``s`` (``flow_scale``) keeps the network's numbers near 1. Flows follow
:mod:`instseg.models.inpainting.flow` (``(dx, dy)`` pixels, ``O[a->b]`` defined on frame a).

Losses (pure functions, all take an optional (N, 1, H, W) region mask, typically the amodal
mask): :func:`flow_l1_loss` (regression), :func:`flow_gradient_loss` (first-order gradient
matching: L1 between the finite differences of prediction and ground truth — it keeps motion
boundaries sharp and the flow piecewise smooth), :func:`flow_smoothness_loss` (unsupervised
first-order smoothness inside the region, optional), :func:`laplacian_pyramid_loss` (Lap1 of
Bojanowski et al.: ``sum_j 2^{2j} |L^j(O) - L^j(O_gt)|_1 / N_0``, i.e. the mean L1 of every
level with equal weight) and :func:`flow_warping_loss` (photometric: frame b warped back with
the predicted flow must match frame a inside the region, using :func:`flow.warp`);
:func:`flow_completion_losses` returns them all. The metric is
:func:`instseg.evaluation.inpainting.flow_epe`.

Choices where the paper is silent: widths ``c, 2c, 4c, 8c`` (4 levels), LeakyReLU 0.1, stride-2
convs down and bilinear up (also in the Laplacian pyramid: 5x5 binomial blur, subsample,
bilinear re-expansion), replicate padding of the input to a multiple of ``2^(depth-1)``, the last
conv zero-initialised (an untrained net returns the initial flow), the mask region.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from instseg.models.inpainting.flow import warp

__all__ = [
    "FlowCompletionNet",
    "flow_l1_loss",
    "flow_gradient_loss",
    "flow_smoothness_loss",
    "laplacian_pyramid_loss",
    "flow_warping_loss",
    "flow_completion_losses",
]


class FlowCompletionNet(nn.Module):
    """Residual flow completion U-Net.

    Args:
        base_channels: c (level widths ``c * 2**i``).
        depth: number of resolution levels (>= 2).
        flow_scale: s, flows are divided by it on input and the residual multiplied by it.
    """

    def __init__(
        self, *, base_channels: int = 32, depth: int = 4, flow_scale: float = 10.0
    ) -> None:
        super().__init__()
        if depth < 2:
            raise ValueError(f"depth must be >= 2, got {depth}")
        self.depth = depth
        self.flow_scale = flow_scale
        widths = [base_channels * 2**i for i in range(depth)]
        self.stem = _block(10, widths[0])
        self.down = nn.ModuleList(
            [
                nn.Sequential(
                    nn.Conv2d(widths[i], widths[i + 1], 3, 2, 1),
                    _act(),
                    _block(widths[i + 1], widths[i + 1]),
                )
                for i in range(depth - 1)
            ]
        )
        self.up = nn.ModuleList(
            [_block(widths[i + 1] + widths[i], widths[i]) for i in reversed(range(depth - 1))]
        )
        self.head = nn.Conv2d(widths[0], 2, 3, 1, 1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(
        self, frame_a: Tensor, frame_b: Tensor, flow: Tensor, visible: Tensor, amodal: Tensor
    ) -> Tensor:
        """Completed flow ``a -> b``.

        Args:
            frame_a / frame_b: (N, 3, H, W) float in [0, 1].
            flow: (N, 2, H, W) initial flow ``a -> b`` in pixels.
            visible / amodal: (N, 1, H, W) {0, 1} masks of frame a.
        Returns:
            (N, 2, H, W): ``flow + amodal * residual``.
        """
        res = self.residual(frame_a, frame_b, flow, visible, amodal)
        return flow + amodal.to(flow.dtype) * res

    def residual(
        self, frame_a: Tensor, frame_b: Tensor, flow: Tensor, visible: Tensor, amodal: Tensor
    ) -> Tensor:
        """The residual ``s * phi(x)`` (N, 2, H, W), before the amodal masking."""
        n, _, h, w = frame_a.shape
        for name, t, c in (
            ("frame_b", frame_b, 3),
            ("flow", flow, 2),
            ("visible", visible, 1),
            ("amodal", amodal, 1),
        ):
            if tuple(t.shape) != (n, c, h, w):
                raise ValueError(f"{name} must be {(n, c, h, w)}, got {tuple(t.shape)}")
        x = torch.cat(
            [
                frame_a,
                frame_b,
                flow / self.flow_scale,
                visible.to(flow.dtype),
                amodal.to(flow.dtype),
            ],
            dim=1,
        )
        m = 2 ** (self.depth - 1)
        x = F.pad(x, (0, (-w) % m, 0, (-h) % m), mode="replicate")
        skips = [self.stem(x)]
        for down in self.down:
            skips.append(down(skips[-1]))
        y = skips.pop()
        for up in self.up:
            skip = skips.pop()
            y = F.interpolate(y, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            y = up(torch.cat([y, skip], dim=1))
        return self.head(y)[..., :h, :w] * self.flow_scale


# ------------------------------------------------------------------------------------- losses
def flow_l1_loss(pred: Tensor, gt: Tensor, mask: Tensor | None = None) -> Tensor:
    """Mean ``|pred - gt|`` over both flow channels (and ``mask`` pixels); (N, 2, H, W)."""
    return _masked_mean((pred - gt).abs(), mask)


def flow_gradient_loss(pred: Tensor, gt: Tensor, mask: Tensor | None = None) -> Tensor:
    """L1 between forward differences of ``pred`` and ``gt`` along x and y (gradient
    matching); a difference counts only where both its pixels are in ``mask``."""
    loss = pred.new_zeros(())
    for d in (-1, -2):
        dp, dg = _diff(pred, d), _diff(gt, d)
        loss = loss + _masked_mean((dp - dg).abs(), _pair_mask(mask, d))
    return loss


def flow_smoothness_loss(pred: Tensor, mask: Tensor | None = None) -> Tensor:
    """First-order smoothness ``mean |grad pred|`` over pixel pairs inside ``mask``."""
    loss = pred.new_zeros(())
    for d in (-1, -2):
        loss = loss + _masked_mean(_diff(pred, d).abs(), _pair_mask(mask, d))
    return loss


def laplacian_pyramid_loss(pred: Tensor, gt: Tensor, *, levels: int = 4) -> Tensor:
    """Lap1 loss: mean L1 of each Laplacian-pyramid level (5x5 binomial kernel), summed.

    (N, C, H, W) x2 -> scalar. Levels stop early when the map gets smaller than 2 pixels.
    """
    loss = pred.new_zeros(())
    for lp, lg in zip(
        _laplacian_pyramid(pred, levels), _laplacian_pyramid(gt, levels), strict=True
    ):
        loss = loss + (lp - lg).abs().mean()
    return loss


def flow_warping_loss(
    flow: Tensor, frame_a: Tensor, frame_b: Tensor, mask: Tensor | None = None
) -> Tensor:
    """Photometric loss ``|frame_a - warp(frame_b, flow)|`` over ``mask`` pixels whose target
    lies inside frame b. flow (N, 2, H, W) ``a -> b``; frames (N, C, H, W)."""
    warped = warp(frame_b, flow)
    inside = warp(torch.ones_like(frame_b[:, :1]), flow) > 0.999
    region = inside.to(flow.dtype) if mask is None else inside.to(flow.dtype) * mask
    return _masked_mean((frame_a - warped).abs(), region)


def flow_completion_losses(
    pred: Tensor,
    gt: Tensor,
    *,
    mask: Tensor | None = None,
    frame_a: Tensor | None = None,
    frame_b: Tensor | None = None,
    pyramid_levels: int = 4,
) -> dict[str, Tensor]:
    """All flow terms (unweighted): ``l1``, ``gradient``, ``laplacian`` and, with both frames,
    ``warping``. The Laplacian term sees flows multiplied by ``mask`` (when given)."""
    m = None if mask is None else mask.to(pred.dtype)
    out = {"l1": flow_l1_loss(pred, gt, m), "gradient": flow_gradient_loss(pred, gt, m)}
    lp, lg = (pred, gt) if m is None else (pred * m, gt * m)
    out["laplacian"] = laplacian_pyramid_loss(lp, lg, levels=pyramid_levels)
    if frame_a is not None and frame_b is not None:
        out["warping"] = flow_warping_loss(pred, frame_a, frame_b, m)
    return out


# ------------------------------------------------------------------------------------ helpers
def _act() -> nn.Module:
    return nn.LeakyReLU(0.1)


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, 1, 1), _act(), nn.Conv2d(cout, cout, 3, 1, 1), _act()
    )


def _masked_mean(x: Tensor, mask: Tensor | None) -> Tensor:
    """Mean of ``x`` (N, C, H, W) over pixels where ``mask`` (N, 1, H, W) is set (0 if none)."""
    if mask is None:
        return x.mean()
    m = mask.to(x.dtype).expand_as(x)
    return (x * m).sum() / m.sum().clamp_min(1.0)


def _diff(x: Tensor, dim: int) -> Tensor:
    return x.narrow(dim, 1, x.shape[dim] - 1) - x.narrow(dim, 0, x.shape[dim] - 1)


def _pair_mask(mask: Tensor | None, dim: int) -> Tensor | None:
    if mask is None:
        return None
    n = mask.shape[dim] - 1
    return mask.narrow(dim, 1, n) * mask.narrow(dim, 0, n)


def _gauss(x: Tensor) -> Tensor:
    k1 = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0], dtype=x.dtype, device=x.device) / 16
    k = (k1[:, None] * k1[None, :]).expand(x.shape[1], 1, 5, 5)
    return F.conv2d(F.pad(x, (2, 2, 2, 2), mode="replicate"), k, groups=x.shape[1])


def _laplacian_pyramid(x: Tensor, levels: int) -> list[Tensor]:
    out = []
    cur = x
    for _ in range(levels - 1):
        if min(cur.shape[-2:]) < 2:
            break
        down = _gauss(cur)[..., ::2, ::2]
        up = F.interpolate(down, size=cur.shape[-2:], mode="bilinear", align_corners=False)
        out.append(cur - up)
        cur = down
    out.append(cur)
    return out
