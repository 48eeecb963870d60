"""VOIN inference pipeline (paper Sect. 5.4, Figs. 5.6-5.7): shape completion -> flow
completion -> flow-guided propagation -> occlusion-aware generator.

:class:`VOIN` is a plain object holding the built (trained) networks and the options; it keeps
no per-video state between calls. A video is processed in overlapping temporal windows of
``window`` frames (``overlap`` shared), so memory is bounded by the window, not the video
length; each output frame comes from the window in which it is most central. Per window:

1. amodal masks: given by the caller, or :class:`AmodalShapeCompletion` on the visible masks
   (canvas crop, paste back, ``logit > 0``, united with the visible mask);
   ``holes = amodal & ~visible`` (the occluded part of the object, what is filled).
2. ``use_flow`` (the "Use flow?" column of Table 5.8): DIS flows of the input frames
   (:func:`flow.clip_flows`); inside the holes (and a band of the visible object along them)
   they show the occluder's motion, so with ``fill_flow`` they are first replaced by the
   object's own visible flow (:func:`flow.fill_clip_flows`, normalised convolution), then
   refined inside the amodal mask by the residual :class:`FlowCompletionNet` when one is given;
   then :func:`propagation.propagate` inside the amodal mask with the forward-backward cycle
   check (5 px).
3. The pixels still missing go to :class:`OcclusionAwareGenerator` (``use_generator``), run on
   the object's box (union over the window, plus ``generator_margin``), padded to a multiple
   of 4 and downscaled when its longer side exceeds ``generator_max_side``. Without a generator
   they are filled per frame with OpenCV Telea and flagged in ``VOINResult.fallback``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from instseg.models.inpainting.baselines import inpaint_opencv
from instseg.models.inpainting.flow import Preset, clip_flows, fill_clip_flows
from instseg.models.inpainting.flow_completion import FlowCompletionNet
from instseg.models.inpainting.generator import OcclusionAwareGenerator
from instseg.models.inpainting.propagation import propagate
from instseg.models.inpainting.shape_completion import (
    AmodalShapeCompletion,
    object_canvas,
    paste_canvas,
)
from instseg.utils.progress import progress

__all__ = [
    "VOIN",
    "VOINResult",
    "VOINNets",
    "temporal_windows",
    "voin_nets_paper",
    "voin_nets_small",
    "VOIN_VARIANTS",
]


@dataclass
class VOINResult:
    """``frames`` (T, H, W, 3) uint8, the completed video; masks (T, H, W) bool: ``amodal``
    (used / predicted), ``holes`` (= amodal & ~visible), ``propagated`` (filled by flow-guided
    propagation), ``generated`` (filled by the generator), ``fallback`` (filled by Telea)."""

    frames: np.ndarray
    amodal: np.ndarray
    holes: np.ndarray
    propagated: np.ndarray
    generated: np.ndarray
    fallback: np.ndarray


@dataclass
class VOINNets:
    """The three learned networks of a VOIN variant (built, untrained)."""

    shape_net: AmodalShapeCompletion
    flow_net: FlowCompletionNet
    generator: OcclusionAwareGenerator


def voin_nets_paper(*, num_classes: int) -> VOINNets:
    """Paper-sized: 8-layer shape transformer (D 128, 4 heads, patches 8/16 on a 64 canvas),
    4-level flow U-Net (c 32), generator c 32 with dilations 2-16 and TSM radius 2."""
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
        OcclusionAwareGenerator(base_channels=32, dilations=(2, 4, 8, 16), shift_steps=2),
    )


def voin_nets_small(*, num_classes: int) -> VOINNets:
    """CPU-sized (smoke runs, tests): 2-layer shape transformer (D 32, canvas 32 works),
    3-level flow U-Net (c 8), generator c 8 with dilations 2 and 4."""
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
        OcclusionAwareGenerator(base_channels=8, dilations=(2, 4), shift_steps=2),
    )


VOIN_VARIANTS = {"paper": voin_nets_paper, "small": voin_nets_small}


class VOIN:
    """Occlusion-aware video object inpainting pipeline (see module docstring).

    Args:
        shape_net / flow_net / generator: trained networks (any may be None; shape completion
            is then only possible with caller-given amodal masks).
        use_flow: flow completion + propagation (False: everything goes to the generator).
        fill_flow: replace the hole flow by the object's visible flow before the flow network
            (False: the network sees the raw DIS flow, as in the paper's description).
        use_generator: False fills leftovers with Telea instead.
        window / overlap: temporal window length and overlap (``0 <= overlap < window``).
        canvas_size / canvas_context: shape-completion crop (see :func:`object_canvas`).
        flow_preset / cycle_threshold: DIS preset and propagation cycle threshold (pixels).
        generator_margin / generator_max_side: generator crop margin and size limit (pixels).
        device: where the networks run. progress: show a tqdm bar over windows.
    """

    def __init__(
        self,
        *,
        shape_net: AmodalShapeCompletion | None = None,
        flow_net: FlowCompletionNet | None = None,
        generator: OcclusionAwareGenerator | None = None,
        use_flow: bool = True,
        use_generator: bool = True,
        fill_flow: bool = True,
        window: int = 12,
        overlap: int = 4,
        canvas_size: int = 64,
        canvas_context: float = 2.0,
        flow_preset: Preset = "medium",
        cycle_threshold: float = 5.0,
        generator_margin: int = 16,
        generator_max_side: int = 256,
        device: str | torch.device = "cpu",
        progress: bool = True,
    ) -> None:
        if not 0 <= overlap < window:
            raise ValueError(f"need 0 <= overlap < window, got overlap={overlap}, window={window}")
        self.device = torch.device(device)
        self.shape_net = _prep(shape_net, self.device)
        self.flow_net = _prep(flow_net, self.device)
        self.generator = _prep(generator, self.device)
        self.use_flow, self.use_generator = use_flow, use_generator
        self.fill_flow = fill_flow
        self.window, self.overlap = window, overlap
        self.canvas_size, self.canvas_context = canvas_size, canvas_context
        self.flow_preset, self.cycle_threshold = flow_preset, cycle_threshold
        self.generator_margin, self.generator_max_side = generator_margin, generator_max_side
        self.progress = progress

    def __call__(
        self,
        frames: np.ndarray,
        visible: np.ndarray,
        *,
        label: int | None = None,
        amodal: np.ndarray | None = None,
    ) -> VOINResult:
        """Inpaint the occluded part of one object.

        Args:
            frames: (T, H, W, 3) uint8 RGB. visible: (T, H, W) bool visible object masks.
            label: object class id for the shape network's class embedding.
            amodal: optional (T, H, W) bool amodal masks (skips shape completion).
        """
        frames, visible = np.asarray(frames), np.asarray(visible, bool)
        _check_inputs(frames, visible, amodal)
        t_len = len(frames)
        res = VOINResult(frames.copy(), visible.copy(), *(np.zeros_like(visible) for _ in range(4)))
        wins = temporal_windows(t_len, self.window, self.overlap)
        for s, e, k0, k1 in progress(wins, desc="VOIN", unit="window", disable=not self.progress):
            am = None if amodal is None else np.asarray(amodal[s:e], bool)
            out = self._window(frames[s:e], visible[s:e], label, am)
            for name in ("frames", "amodal", "holes", "propagated", "generated", "fallback"):
                getattr(res, name)[k0:k1] = getattr(out, name)[k0 - s : k1 - s]
        return res

    @torch.no_grad()
    def complete_shape(self, visible: np.ndarray, label: int | None = None) -> np.ndarray:
        """Amodal masks (T, H, W) bool from visible masks (T, H, W) bool (always a superset)."""
        if self.shape_net is None:
            raise ValueError("VOIN: no shape network; pass amodal masks instead")
        if not visible.any():
            return visible.copy()
        if self.shape_net.num_classes > 0 and label is None:
            raise ValueError("VOIN: the shape network is class-aware; pass label=<class id>")
        canvas, boxes = object_canvas(visible, size=self.canvas_size, context=self.canvas_context)
        x = torch.from_numpy(canvas)[None, :, None].to(self.device)
        labels = None if label is None else torch.tensor([label], device=self.device)
        logits = self.shape_net(x, labels if self.shape_net.num_classes > 0 else None)[0, :, 0]
        pasted = paste_canvas(logits.cpu(), boxes, visible.shape[1:])
        return (pasted > 0).numpy() | visible

    @torch.no_grad()
    def complete_flows(
        self, frames: np.ndarray, visible: np.ndarray, amodal: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """DIS flows of ``frames`` (T, H, W, 3), filled in the holes (``fill_flow``) and refined
        inside ``amodal`` when a flow network is set. Returns forward / backward (T-1, H, W, 2)
        float32."""
        fwd, bwd = clip_flows(frames, preset=self.flow_preset)
        if self.fill_flow:
            fwd, bwd = fill_clip_flows(fwd, bwd, amodal & ~visible, visible)
        if self.flow_net is None:
            return fwd, bwd
        img = torch.from_numpy(frames).permute(0, 3, 1, 2).float().div(255).to(self.device)
        vis = torch.from_numpy(visible)[:, None].float().to(self.device)
        am = torch.from_numpy(amodal)[:, None].float().to(self.device)
        out = []
        for flows, a, b in (
            (fwd, slice(0, -1), slice(1, None)),
            (bwd, slice(1, None), slice(0, -1)),
        ):
            fl = torch.from_numpy(flows).permute(0, 3, 1, 2).to(self.device)
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
            out.append(torch.cat(done).permute(0, 2, 3, 1).cpu().numpy())
        return out[0], out[1]

    def _window(
        self, frames: np.ndarray, visible: np.ndarray, label: int | None, amodal: np.ndarray | None
    ) -> VOINResult:
        am = self.complete_shape(visible, label) if amodal is None else amodal | visible
        holes = am & ~visible
        out = frames.copy()
        propagated = np.zeros_like(holes)
        left = holes.copy()
        if self.use_flow and len(frames) > 1 and holes.any():
            fwd, bwd = self.complete_flows(frames, visible, am)
            prop = propagate(
                frames, holes, fwd, bwd, amodal=am, cycle_threshold=self.cycle_threshold
            )
            out, propagated, left = prop.frames, prop.filled, prop.unfilled
        generated, fallback = np.zeros_like(holes), np.zeros_like(holes)
        if left.any():
            if self.use_generator and self.generator is not None:
                out = self._generate(out, left, holes, am)
                generated = left
            else:
                out = inpaint_opencv(out, left, method="telea")
                fallback = left
        return VOINResult(out, am, holes, propagated, generated, fallback)

    @torch.no_grad()
    def _generate(
        self, frames: np.ndarray, left: np.ndarray, holes: np.ndarray, amodal: np.ndarray
    ) -> np.ndarray:
        """Run the generator on the object box; returns frames with ``left`` pixels replaced."""
        h, w = left.shape[1:]
        ys, xs = np.nonzero((amodal | left).any(0))
        m = self.generator_margin
        y0, y1 = max(ys.min() - m, 0), min(ys.max() + 1 + m, h)
        x0, x1 = max(xs.min() - m, 0), min(xs.max() + 1 + m, w)
        crop = (slice(None), slice(y0, y1), slice(x0, x1))
        img = torch.from_numpy(frames[crop]).permute(0, 3, 1, 2).float().div(127.5).sub(1)
        masks = [
            torch.from_numpy(np.ascontiguousarray(a[crop]))[:, None].float()
            for a in (left, holes, amodal)
        ]
        ch, cw = y1 - y0, x1 - x0
        scale = min(1.0, self.generator_max_side / max(ch, cw))
        th = max(4, int(round(ch * scale / 4)) * 4)
        tw = max(4, int(round(cw * scale / 4)) * 4)
        img_s = F.interpolate(img, size=(th, tw), mode="bilinear", align_corners=False)
        masks_s = [F.interpolate(mk, size=(th, tw), mode="nearest") for mk in masks]
        masks_s[0] = torch.maximum(masks_s[0], F.adaptive_max_pool2d(masks[0], (th, tw)))
        x = [t[None].to(self.device) for t in (img_s, *masks_s)]
        gen = self.generator(*x)[0].cpu()
        gen = F.interpolate(gen, size=(ch, cw), mode="bilinear", align_corners=False)
        vals = ((gen.permute(0, 2, 3, 1).numpy() + 1) * 127.5).clip(0, 255).round()
        out = frames.copy()
        region = out[crop]
        region[left[crop]] = vals[left[crop]].astype(frames.dtype)
        out[crop] = region
        return out


def temporal_windows(t_len: int, window: int, overlap: int) -> list[tuple[int, int, int, int]]:
    """Overlapping windows over ``t_len`` frames: ``(start, end, keep_start, keep_end)``.

    Windows of ``window`` frames (the last one shifted back to end at ``t_len``) with stride
    ``window - overlap``; the kept ranges partition ``[0, t_len)``, each frame kept by the
    window where it is most central.
    """
    if t_len <= window:
        return [(0, t_len, 0, t_len)]
    stride = window - overlap
    starts = list(range(0, t_len - window, stride)) + [t_len - window]
    starts = sorted(set(starts))
    owner = [
        max(range(len(starts)), key=lambda i, f=f: (_centrality(f, starts[i], window), -i))
        for f in range(t_len)
    ]
    out = []
    for i, s in enumerate(starts):
        kept = [f for f in range(t_len) if owner[f] == i]
        if kept:
            out.append((s, s + window, kept[0], kept[-1] + 1))
    return out


def _centrality(f: int, start: int, window: int) -> int:
    """Distance of frame ``f`` to the nearer edge of window ``[start, start + window)``."""
    return min(f - start, start + window - 1 - f) if start <= f < start + window else -1


def _prep(net: torch.nn.Module | None, device: torch.device):
    return None if net is None else net.eval().to(device)


def _check_inputs(frames: np.ndarray, visible: np.ndarray, amodal: np.ndarray | None) -> None:
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be (T, H, W, 3) uint8, got {frames.shape} {frames.dtype}")
    if visible.shape != frames.shape[:3]:
        raise ValueError(f"visible {visible.shape} does not match frames {frames.shape[:3]}")
    if amodal is not None and np.shape(amodal) != visible.shape:
        raise ValueError(f"amodal {np.shape(amodal)} does not match visible {visible.shape}")
