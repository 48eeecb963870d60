"""Occlusion-aware gated TSM generator of VOIN (paper Sect. 5.4.3, Fig. 5.7, Eqs. 5.11-5.13).

It fills the hole pixels that flow-guided propagation could not reach. Every convolution of the
encoder / dilated middle / decoder is a :class:`GatedTSMConv` whose gate is guided by the
occlusion mask ``M_occ`` and the amodal (complete) object mask ``M_hat`` (Eq. 5.11)::

    input  [X * (1 - hole), hole]                         (B, T, 4, H, W), X in [-1, 1]
    enc    GTSM 5x5 c   -> GTSM 3x3/2 2c -> GTSM 3x3 2c -> GTSM 3x3/2 4c -> GTSM 3x3 4c
    middle GTSM 3x3 4c, dilation 2, 4, 8, 16 (each residual: x + block(x))
    dec    up x2, GTSM 3x3 2c, GTSM 3x3 2c, up x2, GTSM 3x3 c, GTSM 3x3 c/2, conv 3x3 -> 3, tanh
    output Y_tilde = hole * Y + (1 - hole) * X            (:func:`compose`)

Choices where the paper is silent (documented): the widths above (LGTSM-like, ``c`` = 32 by
default), nearest-neighbour upsampling, residual dilated middle blocks (the paper uses the
"residual TSM"), temporal radius ``n = 2`` (the paper only says larger than TSM's 1), the last
layer a plain conv + tanh (no gating, no shift). ``hole`` is the set of pixels to generate (the
propagation leftovers); ``M_occ`` is the whole occluded part of the object (holes before
propagation). H and W must be multiples of 4
(:meth:`~instseg.models.inpainting.voin.VOINModel.generate` resizes the crop).

Two modes (``mode``; a weights file records it as ``model.generator_mode``):

- ``"hole"`` (the paper's): input ``[X * (1 - hole), hole]``, raw output the tanh image above;
  the hole pixels are generated from scratch.
- ``"leftover"`` (issue 16): input ``[X, hole, M_occ]`` (B, T, 5, H, W) where ``X`` are the
  *propagated* frames with the leftovers ``hole`` already filled by OpenCV Telea (what the
  non-learned pipeline outputs); raw output ``X + M_occ * R``, ``R`` the last conv's output (no
  tanh): a correction inside the occluded region only (the leftovers, where it is used, and the
  propagated pixels, where the valid L1 on the raw output trains it against propagation
  errors), none on the known pixels (a valid L1 there, whose gradient never vanishes, drove
  every feature to zero in training). The last conv is zero-initialised, so the untrained
  generator returns ``X`` exactly (composed: propagation + Telea); it learns a correction of
  Telea from the propagated context.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from instseg.models.layers.gated_tsm import GatedTSMConv

__all__ = ["GENERATOR_MODES", "GeneratorMode", "OcclusionAwareGenerator", "compose"]

GeneratorMode = Literal["hole", "leftover"]
GENERATOR_MODES: tuple[str, ...] = ("hole", "leftover")


class OcclusionAwareGenerator(nn.Module):
    """Gated TSM encoder-decoder (see module docstring).

    Args:
        base_channels: ``c``.
        dilations: dilation of each middle block.
        fold_div / shift_steps: TSM channel fraction and temporal radius n.
        occlusion_aware: guide every gate with ``[M_occ, M_hat]`` (False = plain gated TSM,
            for the ablation).
        guide_hidden: width of each gate-guiding ``f_bar``.
        mode: ``"hole"`` (generate the hole from scratch) or ``"leftover"`` (residual on
            Telea-filled propagated frames, zero-initialised last layer; module docstring).
        activation: ``phi`` of every gated conv; None: ReLU (``"hole"``, Eq. 5.13) or ELU
            (``"leftover"``, as DeepFill v2: with ReLU, L1 training from the zero-initialised
            output drove every feature below zero, where no gradient reaches it again).
    """

    def __init__(
        self,
        *,
        base_channels: int = 32,
        dilations: tuple[int, ...] = (2, 4, 8, 16),
        fold_div: int = 8,
        shift_steps: int = 2,
        occlusion_aware: bool = True,
        guide_hidden: int = 16,
        mode: GeneratorMode = "hole",
        activation: Callable[[], nn.Module] | None = None,
    ) -> None:
        super().__init__()
        c = base_channels
        if c < 4 or c % 2:
            raise ValueError(f"base_channels must be an even number >= 4, got {c}")
        if mode not in GENERATOR_MODES:
            raise ValueError(f"mode must be one of {GENERATOR_MODES}, got {mode!r}")
        self.mode = mode
        self.occlusion_aware = occlusion_aware
        g = 2 if occlusion_aware else 0
        if activation is None:
            activation = nn.ELU if mode == "leftover" else nn.ReLU

        def block(cin: int, cout: int, k: int = 3, s: int = 1, d: int = 1) -> GatedTSMConv:
            return GatedTSMConv(
                in_channels=cin,
                out_channels=cout,
                kernel_size=k,
                stride=s,
                dilation=d,
                fold_div=fold_div,
                shift_steps=shift_steps,
                guide_channels=g,
                guide_hidden=guide_hidden,
                activation=activation,
            )

        self.encoder = nn.ModuleList(
            [
                block(5 if mode == "leftover" else 4, c, 5),
                block(c, 2 * c, s=2),
                block(2 * c, 2 * c),
                block(2 * c, 4 * c, s=2),
                block(4 * c, 4 * c),
            ]
        )
        self.middle = nn.ModuleList([block(4 * c, 4 * c, d=d) for d in dilations])
        self.decoder = nn.ModuleList(
            [
                block(4 * c, 2 * c),
                block(2 * c, 2 * c),
                block(2 * c, c),
                block(c, c // 2),
            ]
        )
        self.upsample_before = (0, 2)  # decoder blocks preceded by x2 upsampling
        self.out = nn.Conv2d(c // 2, 3, 3, 1, 1)
        if mode == "leftover":  # untrained: raw output == input (propagation + Telea)
            nn.init.zeros_(self.out.weight)
            nn.init.zeros_(self.out.bias)

    @property
    def residual(self) -> bool:
        """True in ``"leftover"`` mode (raw output = input frames + learned residual)."""
        return self.mode == "leftover"

    def forward(self, frames: Tensor, hole: Tensor, occluded: Tensor, amodal: Tensor) -> Tensor:
        """Raw generator output (use :func:`compose` or :meth:`inpaint` for the final frames).

        Args:
            frames: (B, T, 3, H, W) float in [-1, 1]; ``"hole"`` mode: values inside ``hole``
                are ignored; ``"leftover"`` mode: the propagated frames with ``hole`` filled by
                Telea (used everywhere).
            hole: (B, T, 1, H, W) {0, 1} float/bool, pixels to generate (the leftovers).
            occluded: (B, T, 1, H, W) ``M_occ``, the occluded object region.
            amodal: (B, T, 1, H, W) ``M_hat``, the complete object mask.
        Returns:
            (B, T, 3, H, W) float: in [-1, 1] (``"hole"``), ``frames + occluded * R``
            (``"leftover"``, unbounded; equal to ``frames`` while the last layer is zero).
        """
        _check(frames, hole, occluded, amodal)
        hole = hole.to(frames.dtype)
        if self.residual:
            x = torch.cat([frames, hole, occluded.to(frames.dtype)], dim=2)
        else:
            x = torch.cat([frames * (1 - hole), hole], dim=2)
        guide = (
            torch.cat([occluded, amodal], dim=2).to(frames.dtype) if self.occlusion_aware else None
        )
        for layer in self.encoder:
            x = layer(x, guide)
        for layer in self.middle:
            x = x + layer(x, guide)
        for i, layer in enumerate(self.decoder):
            if i in self.upsample_before:
                x = F.interpolate(x.flatten(0, 1), scale_factor=2.0, mode="nearest")
                x = x.unflatten(0, frames.shape[:2])
            x = layer(x, guide)
        y = self.out(x.flatten(0, 1)).unflatten(0, frames.shape[:2])
        if self.residual:  # corrections only where the object was occluded
            return frames + occluded.to(frames.dtype) * y
        return torch.tanh(y)

    def inpaint(self, frames: Tensor, hole: Tensor, occluded: Tensor, amodal: Tensor) -> Tensor:
        """:meth:`forward` then :func:`compose`: (B, T, 3, H, W) in [-1, 1], known pixels kept."""
        return compose(self(frames, hole, occluded, amodal), frames, hole)


def compose(generated: Tensor, frames: Tensor, hole: Tensor) -> Tensor:
    """``hole * generated + (1 - hole) * frames``; (B, T, 3, H, W) x2, hole (B, T, 1, H, W)."""
    hole = hole.to(generated.dtype)
    return hole * generated + (1 - hole) * frames


def _check(frames: Tensor, hole: Tensor, occluded: Tensor, amodal: Tensor) -> None:
    if frames.ndim != 5 or frames.shape[2] != 3:
        raise ValueError(f"frames must be (B, T, 3, H, W), got {tuple(frames.shape)}")
    b, t, _, h, w = frames.shape
    if h % 4 or w % 4:
        raise ValueError(f"generator needs H and W divisible by 4, got {(h, w)}")
    for name, m in (("hole", hole), ("occluded", occluded), ("amodal", amodal)):
        if tuple(m.shape) != (b, t, 1, h, w):
            raise ValueError(f"{name} must be {(b, t, 1, h, w)}, got {tuple(m.shape)}")
