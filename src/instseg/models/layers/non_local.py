"""Non-local operator as a graph convolution (survey Eqs. 3.1-3.3), shared by BCNet and CPMask.

Each pixel of a (C, H, W) feature map is a graph node (N = H * W nodes, K = C features).
The adjacency comes from embedded dot-product similarity (Eqs. 3.2-3.3)::

    A = softmax_j(theta(x_i)^T phi(x_j) * s)              (B, N, N), rows sum to 1
    Z = sigma(A X W_g) + X                                  (Eq. 3.1), sigma = norm + ReLU

``theta`` and ``phi`` are 1x1 convolutions to ``inner_channels``; ``W_g`` is a 1x1 convolution
``C -> C`` (K' = K as in the paper). ``s`` is ``1 / sqrt(inner_channels)`` when ``scaled`` (the
original BCNet release scales its dot products; Eq. 3.3 does not) and 1 otherwise.

**Scale (``normalize``, default on).** The equations are not invariant to the scale of X: the
logits grow with |X|^2 and sigma's layer norm outputs O(1) whatever |X| is. RoI features of the
shipped FPN have std ~46 (per-pixel L2 ~360); there the literal block (BCNet's first graph layer
at init) is inert: every affinity row is one-hot (entropy 0.01, uniform 5.28) and the branch adds
1.6% of |X|; on the same features divided by their std the rows have entropy 4.9 and the branch
is 75% of |X|. So the block runs on ``X^ = X / r`` with ``r`` the root mean square of X over each
map (C, H, W), a scalar per RoI, and scales its branch back (measured the same way: entropy 4.8
and branch 68% of |X| at std 46 and at std 1)::

    Z = r * (sigma(A(X^) X^ W_g) + X^) = r * sigma(A(X^) X^ W_g) + X

A depends only on the direction of X (invariant to its scale) and Z is equivariant
(Z(aX) = a Z(X), a > 0): at any feature scale the block starts as it does at std 1. For X of
unit RMS (r = 1) this is exactly Eq. 3.1. ``normalize=False`` gives the literal equations.

CPMask's affinity-parsing unit (Eqs. 4.2-4.3) uses the same block with ``zscore=True``: each
node's theta/phi embedding is z-score normalised over its channels before the dot product, and
it supervises :meth:`NonLocalBlock.affinity` directly.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["NonLocalBlock", "LayerNorm2d"]


class NonLocalBlock(nn.Module):
    """Graph convolution over all pixels of a feature map (one GCN layer of BCNet).

    Args:
        channels: C, input and output channels.
        inner_channels: channels of the theta/phi embeddings (default ``channels``).
        norm: layer class applied to ``A X W_g`` before the ReLU, called as ``norm(channels)``
            on (B, C, H, W) tensors (default :class:`LayerNorm2d`, the paper's layer norm).
        residual: add the input back (Eq. 3.1); False returns ``sigma(A X W_g)`` only.
        scaled: multiply the similarities by ``1 / sqrt(inner_channels)`` before the softmax.
        zscore: z-score normalise each node's theta and phi embedding (CPMask Eq. 4.3).
        eps: added to the variance in the z-score (and to the mean square in ``normalize``).
        normalize: run on X / RMS(X) and scale the branch back (see the module docstring):
            affinity invariant, output equivariant to the scale of X.
    """

    def __init__(
        self,
        *,
        channels: int,
        inner_channels: int | None = None,
        norm: Callable[[int], nn.Module] | None = None,
        residual: bool = True,
        scaled: bool = True,
        zscore: bool = False,
        eps: float = 1e-5,
        normalize: bool = True,
    ) -> None:
        super().__init__()
        inner = channels if inner_channels is None else inner_channels
        if channels <= 0 or inner <= 0:
            raise ValueError(
                f"channels and inner_channels must be positive, got {channels}, {inner}"
            )
        self.channels = channels
        self.inner_channels = inner
        self.residual = residual
        self.zscore = zscore
        self.eps = eps
        self.normalize = normalize
        self.scale = 1.0 / math.sqrt(inner) if scaled else 1.0
        self.theta = nn.Conv2d(channels, inner, kernel_size=1, bias=False)
        self.phi = nn.Conv2d(channels, inner, kernel_size=1, bias=False)
        self.w_g = nn.Conv2d(channels, channels, kernel_size=1, bias=False)
        self.norm = (norm or LayerNorm2d)(channels)
        for conv in (self.theta, self.phi, self.w_g):
            nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, C, H, W) -> Z: (B, C, H, W) (Eq. 3.1)."""
        return self.forward_with_affinity(x)[0]

    def forward_with_affinity(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """x: (B, C, H, W) -> (Z (B, C, H, W), A (B, N, N) with N = H * W).

        For callers that also supervise the affinity (CPMask) without computing it twice.
        """
        a = self.affinity(x)
        if not self.normalize:
            z = F.relu(self.norm(self.aggregate(x, a)))
            return (z + x if self.residual else z), a
        r = self.input_scale(x)
        z = F.relu(self.norm(self.aggregate(x / r, a))) * r  # r * sigma(A X^ W_g)
        return (z + x if self.residual else z), a

    def input_scale(self, x: Tensor) -> Tensor:
        """x: (B, C, H, W) -> r: (B, 1, 1, 1) in x's dtype, the root mean square of each map
        (computed in float32; ``sqrt(eps)`` for an all-zero map)."""
        ms = x.float().pow(2).mean(dim=(1, 2, 3), keepdim=True)
        return ms.add(self.eps).sqrt().to(x.dtype)

    def aggregate(self, x: Tensor, a: Tensor) -> Tensor:
        """x: (B, C, H, W), A: (B, N, N) -> A X W_g as (B, C, H, W) in x's dtype: every node's
        affinity-weighted sum of the others' transformed features (before norm and residual;
        CPMask's Eq. 4.5 uses it as is)."""
        b, c, h, w = x.shape
        g = self.w_g(x).flatten(2).transpose(1, 2)  # (B, N, C): X W_g
        y = torch.bmm(a, g.to(a.dtype)).transpose(1, 2).reshape(b, c, h, w)
        return y.to(x.dtype)

    def affinity(self, x: Tensor) -> Tensor:
        """x: (B, C, H, W) -> A: (B, N, N) float, N = H * W, row-stochastic (Eq. 3.2).

        ``A[b, i, j]`` is the weight node i gives node j (nodes in row-major pixel order).
        """
        return torch.softmax(self.affinity_logits(x), dim=-1)

    def affinity_logits(self, x: Tensor) -> Tensor:
        """x: (B, C, H, W) -> F: (B, N, N), the scaled similarities before the softmax (Eq. 3.3),
        of ``x / RMS(x)`` when ``normalize``."""
        if x.ndim != 4 or x.shape[1] != self.channels:
            raise ValueError(f"expected (B, {self.channels}, H, W), got {tuple(x.shape)}")
        if self.normalize:
            x = x / self.input_scale(x)
        q = self.theta(x).flatten(2).transpose(1, 2)  # (B, N, C')
        k = self.phi(x).flatten(2)  # (B, C', N)
        if self.zscore:
            q = _zscore(q, dim=2, eps=self.eps)
            k = _zscore(k, dim=1, eps=self.eps)
        return torch.bmm(q, k) * self.scale

    def matmul_flops(self, num_nodes: int) -> int:
        """Multiply-accumulates of the two batched matmuls for one map of ``num_nodes`` pixels
        (theta^T phi and A (X W_g)); conv layers are counted by module hooks, these are not."""
        return num_nodes * num_nodes * (self.inner_channels + self.channels)


class LayerNorm2d(nn.Module):
    """Layer norm over the channels of each pixel (graph node): (B, C, H, W) -> same shape."""

    def __init__(self, channels: int, *, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        c = (int(self.weight.shape[0]),)  # a constant: traceable for ONNX
        y = F.layer_norm(x.permute(0, 2, 3, 1), c, self.weight, self.bias, self.eps)
        return y.permute(0, 3, 1, 2)


def _zscore(t: Tensor, *, dim: int, eps: float) -> Tensor:
    """Standardise ``t`` along ``dim``: ``(t - mean) / sqrt(var + eps)`` (population var)."""
    mean = t.mean(dim=dim, keepdim=True)
    std = t.var(dim=dim, keepdim=True, unbiased=False).add(eps).sqrt()
    return (t - mean) / std
