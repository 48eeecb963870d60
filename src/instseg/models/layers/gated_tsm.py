"""Gated convolution, temporal shift (TSM) and the occlusion-aware gated TSM conv of VOIN.

Paper Sect. 5.4.3, Eqs. 5.11-5.13, for a clip feature ``I`` (B, T, C, H, W)::

    Gate_occ(t) = W_g * I_t + f_bar(M_occ_t, M_hat_t)          (5.11)
    S_t         = W_f * TSM(I_{t-n}, ..., I_t, ..., I_{t+n})    (5.12)
    Out_t       = sigmoid(Gate_occ(t)) * phi(S_t)               (5.13), phi = ReLU

- :func:`temporal_shift` is the TSM of Lin et al. generalised to a temporal radius ``n``
  (``shift_steps``): for every step ``k = 1..n`` one group of ``C // fold_div`` channels is
  shifted ``k`` frames forward in time (``out[t] = x[t - k]``) and one group ``k`` frames
  backward (``out[t] = x[t + k]``), with zeros where the source frame is outside the clip; the
  remaining channels are untouched. ``n = 1`` is the original TSM ("a larger temporal receptive
  field n than the original setting" is the paper's change; the generator uses ``n = 2``).
- :class:`GatedConv2d` is the gated convolution of DeepFill v2 (``phi(W_f x) * sigmoid(W_g x)``)
  with an optional additive gate bias (the ``f_bar`` term).
- :class:`GatedTSMConv` applies both per frame: ``W_f`` sees the shifted clip, ``W_g`` the
  unshifted one (as Eqs. 5.11-5.12 write it), and, with ``guide_channels > 0``, a small conv
  stack ``f_bar`` of the guide masks (occlusion mask and amodal mask), resized to the layer's
  input resolution by area interpolation, is added to the gate logits.

Choices where the paper is silent: ``f_bar`` = conv3x3 (stride of the layer) -> ReLU -> conv3x3
with ``guide_hidden`` channels; no normalisation layers (as DeepFill v2 / LGTSM); kernels must
be odd so that "same" padding keeps every layer's output at ``ceil(H / stride)``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["temporal_shift", "GatedConv2d", "GatedTSMConv"]


def temporal_shift(x: Tensor, *, fold_div: int = 8, shift_steps: int = 1) -> Tensor:
    """Shift channel groups of a clip in time, zero padded (see module docstring).

    Args:
        x: (B, T, C, H, W) (any trailing dims after C work).
        fold_div: each shifted group holds ``C // fold_div`` channels.
        shift_steps: temporal radius n; groups ``2k-2`` / ``2k-1`` (k = 1..n) move ``k`` frames
            forward / backward. Needs ``2 * n * (C // fold_div) <= C``.
    Returns:
        Tensor of the same shape. Channel layout: ``[fwd_1, bwd_1, fwd_2, bwd_2, ..., rest]``.
    """
    if x.ndim < 3:
        raise ValueError(f"temporal_shift expects (B, T, C, ...), got {tuple(x.shape)}")
    if fold_div < 1 or shift_steps < 0:
        raise ValueError(
            f"fold_div must be >= 1 and shift_steps >= 0, got {fold_div}, {shift_steps}"
        )
    t_len, c = x.shape[1], x.shape[2]
    fold = c // fold_div
    if 2 * shift_steps * fold > c:
        raise ValueError(
            f"temporal_shift: {2 * shift_steps} groups of {fold} channels exceed C={c}"
        )
    if fold == 0 or shift_steps == 0:
        return x
    out = torch.zeros_like(x)
    for k in range(1, shift_steps + 1):
        f0, b0 = (2 * k - 2) * fold, (2 * k - 1) * fold
        if k < t_len:
            out[:, k:, f0 : f0 + fold] = x[:, :-k, f0 : f0 + fold]  # forward: out[t] = x[t - k]
            out[:, :-k, b0 : b0 + fold] = x[:, k:, b0 : b0 + fold]  # backward: out[t] = x[t + k]
    rest = 2 * shift_steps * fold
    out[:, :, rest:] = x[:, :, rest:]
    return out


class GatedConv2d(nn.Module):
    """``phi(W_f x) * sigmoid(W_g x + gate_bias)`` on (N, C_in, H, W) -> (N, C_out, H', W').

    Args:
        in_channels / out_channels: C_in / C_out.
        kernel_size: odd; padding is ``dilation * (kernel_size - 1) // 2``.
        stride / dilation: as in :class:`torch.nn.Conv2d`.
        activation: ``phi``, a module class called with no argument (default ReLU, Eq. 5.13);
            None for identity (output layers).
    """

    def __init__(
        self,
        *,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        dilation: int = 1,
        activation: Callable[[], nn.Module] | None = nn.ReLU,
    ) -> None:
        super().__init__()
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd, got {kernel_size}")
        pad = dilation * (kernel_size - 1) // 2
        self.feature = nn.Conv2d(in_channels, out_channels, kernel_size, stride, pad, dilation)
        self.gate = nn.Conv2d(in_channels, out_channels, kernel_size, stride, pad, dilation)
        self.act = activation() if activation is not None else nn.Identity()

    def forward(
        self, x: Tensor, *, feature_input: Tensor | None = None, gate_bias: Tensor | None = None
    ) -> Tensor:
        """x: (N, C_in, H, W) -> (N, C_out, H', W').

        ``feature_input`` (same shape as x) replaces x for the feature branch (the TSM-shifted
        input); ``gate_bias`` (N, C_out, H', W') is added to the gate logits.
        """
        g = self.gate(x)
        if gate_bias is not None:
            g = g + gate_bias
        f = self.feature(x if feature_input is None else feature_input)
        return self.act(f) * torch.sigmoid(g)


class GatedTSMConv(nn.Module):
    """Occlusion-aware gated TSM convolution (Eqs. 5.11-5.13) on clips.

    Args:
        in_channels / out_channels / kernel_size / stride / dilation / activation: see
            :class:`GatedConv2d`.
        fold_div / shift_steps: see :func:`temporal_shift` (``shift_steps = 0`` disables TSM).
        guide_channels: channels of the guide masks (2: occlusion + amodal); 0 = plain gating.
        guide_hidden: width of ``f_bar``.
    """

    def __init__(
        self,
        *,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        dilation: int = 1,
        fold_div: int = 8,
        shift_steps: int = 1,
        guide_channels: int = 0,
        guide_hidden: int = 16,
        activation: Callable[[], nn.Module] | None = nn.ReLU,
    ) -> None:
        super().__init__()
        self.fold_div = fold_div
        self.shift_steps = shift_steps
        self.conv = GatedConv2d(
            in_channels=in_channels,
            out_channels=out_channels,
            kernel_size=kernel_size,
            stride=stride,
            dilation=dilation,
            activation=activation,
        )
        self.guide: nn.Module | None = None
        if guide_channels > 0:
            self.guide = nn.Sequential(
                nn.Conv2d(guide_channels, guide_hidden, 3, stride, 1),
                nn.ReLU(),
                nn.Conv2d(guide_hidden, out_channels, 3, 1, 1),
            )

    def forward(self, x: Tensor, guide: Tensor | None = None) -> Tensor:
        """x: (B, T, C_in, H, W); guide: (B, T, G, H_g, W_g) masks in [0, 1] (any size, resized
        to (H, W)) or None -> (B, T, C_out, ceil(H / stride), ceil(W / stride))."""
        if x.ndim != 5:
            raise ValueError(f"GatedTSMConv expects (B, T, C, H, W), got {tuple(x.shape)}")
        b, t = x.shape[:2]
        shifted = temporal_shift(x, fold_div=self.fold_div, shift_steps=self.shift_steps)
        bias = None
        if self.guide is not None:
            if guide is None:
                raise ValueError("this GatedTSMConv is occlusion-aware: pass the guide masks")
            g = _resize(guide.flatten(0, 1).to(x.dtype), x.shape[-2:])
            bias = self.guide(g)
        y = self.conv(x.flatten(0, 1), feature_input=shifted.flatten(0, 1), gate_bias=bias)
        return y.unflatten(0, (b, t))


def _resize(m: Tensor, hw: torch.Size) -> Tensor:
    """Masks (N, G, h, w) -> (N, G, H, W): area average when shrinking, nearest when growing."""
    if m.shape[-2:] == hw:
        return m
    if m.shape[-2] >= hw[0] and m.shape[-1] >= hw[1]:
        return F.adaptive_avg_pool2d(m, hw)
    return F.interpolate(m, size=tuple(hw), mode="nearest")
