"""The VOIN networks (paper Sect. 5.4, Figs. 5.6-5.7) and their torch-level composition.

- :class:`VOINNets` and the variant builders :data:`VOIN_VARIANTS` (``paper`` / ``small`` /
  ``small_wide``): the three learned networks, built untrained: (a)
  :class:`AmodalShapeCompletion` (Sect. 5.4.1), (b) :class:`FlowCompletionNet` (Sect. 5.4.2),
  (c) :class:`OcclusionAwareGenerator` (Sect. 5.4.3, occlusion-aware gated TSM).
- :class:`VOINModel`: the learned stages of one temporal window as tensor functions,
  ``shape_logits`` -> ``refine_flows`` -> ``generate``; any network may be absent.

The non-learned parts of a window (object canvas crop / paste, DIS flow and its initial hole
completion, flow-guided pixel propagation, OpenCV Telea) and the windowing over a video are the
pipeline's: :class:`instseg.inference.inpainter.Inpainter`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from instseg.models.inpainting.flow_completion import FlowCompletionNet
from instseg.models.inpainting.generator import GeneratorMode, OcclusionAwareGenerator
from instseg.models.inpainting.shape_completion import AmodalShapeCompletion

__all__ = [
    "generator_input_size",
    "VOINModel",
    "VOINNets",
    "voin_nets_paper",
    "voin_nets_small",
    "VOIN_VARIANTS",
]


@dataclass
class VOINNets:
    """The three learned networks of a VOIN variant (built, untrained)."""

    shape_net: AmodalShapeCompletion
    flow_net: FlowCompletionNet
    generator: OcclusionAwareGenerator


def voin_nets_paper(*, num_classes: int, generator_mode: GeneratorMode = "hole") -> VOINNets:
    """Paper-sized: 8-layer shape transformer (D 128, 4 heads, patches 8/16 on a 64 canvas),
    4-level flow U-Net (c 32), generator c 32 with dilations 2-16 and TSM radius 2
    (``generator_mode``: see :class:`OcclusionAwareGenerator`)."""
    return VOINNets(
        AmodalShapeCompletion(
            num_classes=num_classes,
            embed_dim=128,
            num_layers=8,
            num_heads=4,
            patch_sizes=(8, 16),
            decoder_dim=64,
        ),
        FlowCompletionNet(base_channels=32, depth=4),
        OcclusionAwareGenerator(
            base_channels=32, dilations=(2, 4, 8, 16), shift_steps=2, mode=generator_mode
        ),
    )


def voin_nets_small(*, num_classes: int, generator_mode: GeneratorMode = "hole") -> VOINNets:
    """CPU-sized (smoke runs, tests): 2-layer shape transformer (D 32, canvas 32 works),
    3-level flow U-Net (c 8), generator c 8 with dilations 2 and 4 (``generator_mode``: see
    :class:`OcclusionAwareGenerator`)."""
    return VOINNets(
        AmodalShapeCompletion(
            num_classes=num_classes,
            embed_dim=32,
            num_layers=2,
            num_heads=2,
            patch_sizes=(8, 16),
            decoder_dim=16,
        ),
        FlowCompletionNet(base_channels=8, depth=3),
        OcclusionAwareGenerator(
            base_channels=8, dilations=(2, 4), shift_steps=2, mode=generator_mode
        ),
    )


def voin_nets_small_wide(*, num_classes: int, generator_mode: GeneratorMode = "hole") -> VOINNets:
    """``small`` with a generator twice as wide and one more dilation: c 16, dilations 2, 4 and
    8 (the shape and flow networks are ``small``'s, so a ``small`` file's load into it; for
    issue 16's width experiment)."""
    nets = voin_nets_small(num_classes=num_classes, generator_mode=generator_mode)
    return VOINNets(
        nets.shape_net,
        nets.flow_net,
        OcclusionAwareGenerator(
            base_channels=16, dilations=(2, 4, 8), shift_steps=2, mode=generator_mode
        ),
    )


VOIN_VARIANTS = {
    "paper": voin_nets_paper,
    "small": voin_nets_small,
    "small_wide": voin_nets_small_wide,
}


class VOINModel(nn.Module):
    """The learned VOIN stages for one temporal window of T frames, tensors in, tensors out.

    Inputs may live on any device: they are moved to the networks' device for the network
    call and the outputs come back on the inputs' device. Its ``state_dict`` (keys
    ``shape_net.*``, ``flow_net.*``, ``generator.*``) is the VOIN weights file's ``model``.

    Args:
        shape_net / flow_net / generator: the networks; any may be None (the stage using it
            is then unavailable: :meth:`shape_logits` raises, the others are the caller's
            choice to skip).
    """

    def __init__(
        self,
        *,
        shape_net: AmodalShapeCompletion | None = None,
        flow_net: FlowCompletionNet | None = None,
        generator: OcclusionAwareGenerator | None = None,
    ) -> None:
        super().__init__()
        self.shape_net = shape_net
        self.flow_net = flow_net
        self.generator = generator

    @classmethod
    def from_nets(cls, nets: VOINNets) -> VOINModel:
        return cls(shape_net=nets.shape_net, flow_net=nets.flow_net, generator=nets.generator)

    @property
    def class_aware(self) -> bool:
        """True when the shape network embeds the object class (it then needs a label)."""
        return self.shape_net is not None and self.shape_net.num_classes > 0

    def _device(self) -> torch.device:
        p = next(self.parameters(), None)
        return torch.device("cpu") if p is None else p.device

    @torch.no_grad()
    def shape_logits(self, canvas: Tensor, label: int | None = None) -> Tensor:
        """(a) Amodal shape completion on the object canvas.

        Args:
            canvas: (T, S, S) float {0, 1} visible masks cropped to the object canvas
                (:func:`~instseg.models.inpainting.shape_completion.object_canvas`).
            label: the object's class id (required when :attr:`class_aware`, else ignored).
        Returns:
            (T, S, S) amodal mask logits (``> 0`` inside).
        """
        if self.shape_net is None:
            raise ValueError("VOIN: no shape network; pass amodal masks (or holes) instead")
        if self.class_aware and label is None:
            raise ValueError("VOIN: the shape network is class-aware; pass label=<class id>")
        dev = self._device()
        labels = torch.tensor([label], device=dev) if self.class_aware else None
        return self.shape_net(canvas[None, :, None].to(dev), labels)[0, :, 0].to(canvas.device)

    @torch.no_grad()
    def refine_flows(
        self, frames: Tensor, forward: Tensor, backward: Tensor, visible: Tensor, amodal: Tensor
    ) -> tuple[Tensor, Tensor]:
        """(b) Residual flow completion of every consecutive pair, one pair at a time.

        Args:
            frames: (T, 3, H, W) float RGB in [0, 1].
            forward / backward: (T-1, 2, H, W) initial flows ``t -> t+1`` / ``t+1 -> t``.
            visible / amodal: (T, 1, H, W) float {0, 1} object masks.
        Returns:
            the refined forward and backward flows, (T-1, 2, H, W) each.
        """
        if self.flow_net is None:
            raise ValueError("VOIN: no flow completion network")
        dev = self._device()
        img, vis, am = frames.to(dev), visible.to(dev), amodal.to(dev)
        out = []
        for flows, a, b in (
            (forward, slice(0, -1), slice(1, None)),
            (backward, slice(1, None), slice(0, -1)),
        ):
            fl = flows.to(dev)
            done = [
                self.flow_net(
                    img[a][i : i + 1],
                    img[b][i : i + 1],
                    fl[i : i + 1],
                    vis[a][i : i + 1],
                    am[a][i : i + 1],
                )
                for i in range(len(fl))
            ]
            out.append(torch.cat(done).to(flows.device))
        return out[0], out[1]

    @torch.no_grad()
    def generate(
        self, frames: Tensor, left: Tensor, holes: Tensor, amodal: Tensor, *, max_side: int
    ) -> Tensor:
        """(c) The occlusion-aware generator on a crop (the object's box).

        The crop is resized to :func:`generator_input_size` (``"hole"`` generator: downscaled
        when its longer side exceeds ``max_side``; ``"leftover"`` generator: longer side
        ``max_side``, its training scale), ``left`` max-pooled so no pixel to fill vanishes,
        run through the generator and brought back bilinearly: the output itself (``"hole"``)
        or, for the residual ``"leftover"`` generator, ``frames`` + the upsampled residual
        (``raw - input`` at the small scale), so a zero residual returns ``frames`` exactly.

        Args:
            frames: (T, 3, h, w) float RGB in [-1, 1]; ``"hole"``: values in ``left`` are
                ignored; ``"leftover"``: the propagated frames with ``left`` Telea-filled.
            left / holes / amodal: (T, 1, h, w) float {0, 1}: pixels to fill, the occluded
                part of the object and the amodal object mask.
        Returns:
            (T, 3, h, w) generated frames in [-1, 1] (use them inside ``left`` only).
        """
        if self.generator is None:
            raise ValueError("VOIN: no generator")
        ch, cw = frames.shape[-2:]
        residual = self.generator.residual
        th, tw = generator_input_size(ch, cw, max_side=max_side, exact=residual)
        img_s = F.interpolate(frames, size=(th, tw), mode="bilinear", align_corners=False)
        masks_s = [F.interpolate(mk, size=(th, tw), mode="nearest") for mk in (left, holes, amodal)]
        masks_s[0] = torch.maximum(masks_s[0], F.adaptive_max_pool2d(left, (th, tw)))
        dev = self._device()
        gen = self.generator(*(t[None].to(dev) for t in (img_s, *masks_s)))[0].to(frames.device)
        if residual:
            delta = F.interpolate(gen - img_s, size=(ch, cw), mode="bilinear", align_corners=False)
            return (frames + delta).clamp(-1, 1)
        return F.interpolate(gen, size=(ch, cw), mode="bilinear", align_corners=False)


def generator_input_size(h: int, w: int, *, max_side: int, exact: bool) -> tuple[int, int]:
    """The (height, width) a (h, w) crop is resized to for the generator: multiples of 4 (at
    least 4), the longer side ``max_side`` (``exact``: scaled up or down to it, the residual
    generator's training scale) or at most ``max_side`` (not ``exact``: only scaled down)."""
    scale = max_side / max(h, w)
    if not exact:
        scale = min(1.0, scale)
    return max(4, int(round(h * scale / 4)) * 4), max(4, int(round(w * scale / 4)) * 4)
