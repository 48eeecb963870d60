"""First-frame mask propagation (semi-supervised video object segmentation, ``instseg
propagate``): given object masks on frame 0, label every later frame from per-frame features.

Not VOIN's flow-guided *pixel* propagation
(:mod:`instseg.models.inpainting.flow_guided_propagation`); the features may go through the
learned *propagation embedding* (:mod:`instseg.models.video.propagation_embedding`) first.

**Instance prototypes** (:class:`PrototypePropagator`, survey ch. 5.2.3 without training): on
unit-length feature maps (:class:`instseg.inference.mask_propagation.BackboneFeatures`:
EfficientNet-Lite0 c3 + upsampled c4, stride 8), each object k gets K+ foreground key
prototypes (GMM-EM, Eqs. 5.2-5.4, weighted by the object's mask coverage) and K- background
ones (weighted by the rest, other objects included). Their **value prototypes** (Eq. 5.4) are
the object's soft mask label averaged with the EM responsibilities, so prototypes of boundary
cells carry fractional labels. Each new frame's features attend to the union (Eq. 5.5,
``2 sigma^2`` temperature on unit-length prototypes); the read value is object k's probability.
A pixel takes the most probable object when that probability is >= 0.5, else background. The
prototypes are then re-fitted on the new frame's confident pixels (eroded by one cell so mixed
boundary cells never feed back; EM started from the first frame's prototypes so component j
keeps describing the same part) and become the running set under the Eq. 5.8 rule
(:func:`update_instance_prototypes`: "off" = the last frame's, the best on our tuning
sequences; "initial"; "momentum" lambda). The first frame's prototypes (from the given masks)
stay in the attended set too (``keep_first``), as a drift anchor. A soft spatial window around
the previous frame's mask (``window`` object radii, at least ``window_min`` cells) suppresses
far-away look-alikes.

Also here: the label-map <-> feature-grid conversions every method shares (:func:`coverage`,
:func:`probs_to_labels`, :func:`object_ids_of`). Baselines:
:mod:`instseg.models.video.mask_propagation_baselines`; feature loader and drivers over a video:
:mod:`instseg.inference.mask_propagation`.

Labels everywhere: (H, W) uint8, 0 = background, k = object k (DAVIS style).
State lives in frozen dataclasses returned by ``init`` / ``step``, never in the propagators.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Protocol

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from instseg.models.video.instance_prototypes import (
    InstancePrototypes,
    UpdateMode,
    update_instance_prototypes,
)
from instseg.models.video.prototypes import label_prototypes, label_read

__all__ = [
    "MaskPropagator",
    "PrototypeState",
    "PrototypePropagator",
    "spatial_window",
    "winning_objects",
    "object_ids_of",
    "coverage",
    "probs_to_labels",
    "shrink_frame",
]


class MaskPropagator(Protocol):
    """A first-frame mask propagation method: ``init`` on the annotated frame's features
    (C, h, w) and object coverage (M, h, w); ``step`` on each later frame's features ->
    ((M, h, w) object probabilities, next state)."""

    def init(self, feats: Tensor, masks: Tensor) -> object: ...

    def step(self, feats: Tensor, state: object) -> tuple[Tensor, object]: ...


@dataclass(frozen=True)
class PrototypeState:
    """``first``: prototypes of the annotated frame; ``running``: Eq. 5.8 accumulation (M
    objects, K+ fg / K- bg, C); ``prev``: (M, h, w) bool masks of the last frame (window)."""

    first: InstancePrototypes
    running: InstancePrototypes
    prev: Tensor


class PrototypePropagator:
    """Instance-prototype propagation (see the module docstring).

    Args:
        num_fg / num_bg: K+ and K- per object.
        em_iters / sigma: GMM-EM settings (features are unit vectors; prototypes are
            re-normalised to unit length for the read, so ``2 sigma^2`` is a cosine
            temperature: sigma 0.15 ~ softmax(cos / 0.045)).
        update / momentum: Eq. 5.8 mode for the running prototypes: "off" (the last frame's),
            "initial" (the first frame's only) or "momentum" (lambda-accumulated).
        keep_first: also attend to the first frame's prototypes (drift anchor).
        window: spatial window radius in units of the object's radius (0: off).
        window_min: the window's radius is at least this many feature cells.
        confidence: pixels with probability >= this (fg) or <= 1 - this (bg) refit prototypes.
        erode: shrink both refit regions by this many feature cells, so mixed cells on the
            predicted boundary never enter a prototype (without it the mask grows frame by frame).
    """

    def __init__(
        self,
        *,
        num_fg: int = 128,
        num_bg: int = 256,
        em_iters: int = 5,
        sigma: float = 0.15,
        update: UpdateMode = "off",
        momentum: float = 0.2,
        keep_first: bool = True,
        window: float = 1.0,
        window_min: float = 10.0,
        confidence: float = 0.7,
        erode: int = 1,
    ) -> None:
        self.num_fg, self.num_bg, self.em_iters, self.sigma = num_fg, num_bg, em_iters, sigma
        self.update, self.momentum, self.keep_first = update, momentum, keep_first
        self.window, self.window_min = window, window_min
        self.confidence, self.erode = confidence, erode

    def init(self, feats: Tensor, masks: Tensor) -> PrototypeState:
        """feats (C, h, w), masks (M, h, w) float coverage in [0, 1] at the feature grid."""
        protos = self._fit(feats, masks, masks, 1 - masks, init=None)
        return PrototypeState(first=protos, running=protos, prev=masks >= 0.5)

    def step(self, feats: Tensor, state: PrototypeState) -> tuple[Tensor, PrototypeState]:
        """-> (M, h, w) object probabilities, next state."""
        probs = self._read(feats, state)
        probs = probs * spatial_window(state.prev, self.window, self.window_min)
        won = winning_objects(probs)
        fg = _erode((won & (probs >= self.confidence)).float(), self.erode)
        bg = _erode((~won & (probs <= 1 - self.confidence)).float(), self.erode)
        seen = fg.flatten(1).any(1)  # an object lost this frame keeps its prototypes, window
        running = state.running
        if self.update != "initial" and bool(seen.any()):
            init = state.running if self.update == "momentum" else state.first
            cur = self._fit(feats, probs, fg, bg, init=init)
            new = update_instance_prototypes(
                state.running, cur, mode=self.update, momentum=self.momentum
            )
            running = _select(seen, new, state.running)
        prev = torch.where(seen[:, None, None], won, state.prev)
        return probs, replace(state, running=running, prev=prev)

    def _fit(
        self,
        feats: Tensor,
        cover: Tensor,
        fg: Tensor,
        bg: Tensor,
        *,
        init: InstancePrototypes | None,
    ) -> InstancePrototypes:
        """GMM-EM key prototypes on the ``fg`` / ``bg`` weighted cells (M, h, w) of feats
        (C, h, w); value prototypes (Eq. 5.4) = the responsibility-weighted mean of ``cover``
        (M, h, w), the object's soft mask, so a prototype of boundary cells carries a fractional
        label (1 / 0 for a component that received no cell)."""
        m = fg.shape[0]
        keys = feats.flatten(1).t().unsqueeze(0).expand(m, -1, -1)  # (M, N, C)
        em = {"iters": self.em_iters, "sigma": self.sigma}
        out = []
        for w, k, start, default in (
            (fg, self.num_fg, None if init is None else init.fg_keys, 1.0),
            (bg, self.num_bg, None if init is None else init.bg_keys, 0.0),
        ):
            protos, val = label_prototypes(
                keys, w.flatten(1), cover.flatten(1), num_prototypes=k,
                init="grid" if start is None else start, empty_value=default, **em,
            )  # fmt: skip
            out += [protos, val.unsqueeze(-1)]
        return InstancePrototypes(*out)

    def _read(self, feats: Tensor, state: PrototypeState) -> Tensor:
        """Eq. 5.5 with the label values: p = sum_j softmax_j(-|k - mu_j|^2 / 2 sigma^2) v_j
        over the object's foreground and background prototypes (unit-length keys)."""
        sets = [state.running, state.first] if self.keep_first else [state.running]
        if self.keep_first and self.update == "initial":
            sets = [state.first]
        mu = torch.cat([x for p in sets for x in (p.fg_keys, p.bg_keys)], 1)
        val = torch.cat([x for p in sets for x in (p.fg_values, p.bg_values)], 1)
        m, (h, w) = mu.shape[0], feats.shape[-2:]
        keys = feats.flatten(1).t().unsqueeze(0).expand(m, -1, -1)
        return label_read(keys, mu, val[..., 0], sigma=self.sigma).reshape(m, h, w)


def object_ids_of(labels: np.ndarray) -> list[int]:
    """Object ids of a label map (0 = background and 255 = void excluded)."""
    return sorted(int(v) for v in np.unique(labels) if v not in (0, 255))


def coverage(
    labels: np.ndarray, ids: Sequence[int], grid: tuple[int, int], stride: float
) -> Tensor:
    """(H, W) label map -> (M, h, w) float32 fraction of each cell of a (h, w) grid with cells
    of ``stride`` frame pixels (covering the frame from its top-left corner) covered by each
    object."""
    h, w = grid
    ext = (max(labels.shape[0], round(h * stride)), max(labels.shape[1], round(w * stride)))
    out = []
    for k in ids:
        canvas = np.zeros(ext, np.float32)
        canvas[: labels.shape[0], : labels.shape[1]] = labels == k
        canvas = canvas[: round(h * stride), : round(w * stride)]
        out.append(cv2.resize(canvas, (w, h), interpolation=cv2.INTER_AREA))
    return torch.from_numpy(np.stack(out)) if out else torch.zeros(0, h, w)


def probs_to_labels(
    probs: Tensor,
    ids: Sequence[int],
    size: tuple[int, int],
    stride: float,
    *,
    background: Tensor | None = None,
) -> np.ndarray:
    """(M, h, w) object probabilities on a grid of ``stride``-pixel cells -> (H, W) uint8
    labels (``size`` = (H, W)): bilinear upsampling, crop; the most probable object where its
    probability is >= 0.5 (or, given ``background`` (h, w), above it), else 0."""
    hh, ww = size
    p = probs.float()
    full = (
        max(hh, round(p.shape[-2] * stride)),
        max(ww, round(p.shape[-1] * stride)),
    )
    up = F.interpolate(p[None], size=full, mode="bilinear", align_corners=False)[0, :, :hh, :ww]
    best, arg = up.max(0)
    if background is None:
        fg = best >= 0.5
    else:
        bg = F.interpolate(background.float()[None, None], size=full, mode="bilinear")[0, 0]
        fg = best > bg[:hh, :ww]
    lut = torch.as_tensor([int(i) for i in ids], dtype=torch.uint8)
    return torch.where(fg, lut[arg], torch.zeros_like(lut[arg])).numpy()


def spatial_window(prev: Tensor, window: float, min_radius: float = 2.0) -> Tensor:
    """(M, h, w) bool previous masks -> (M, h, w) weights: 1 within ``window`` object radii
    (radius = sqrt(area / pi)) but at least ``min_radius`` cells of the mask, Gaussian
    fall-off beyond (small fast objects move by more than their own size)."""
    if window <= 0:
        return torch.ones(prev.shape)
    out = []
    for m in prev.numpy():
        if not m.any():
            out.append(np.ones(m.shape, np.float32))
            continue
        d = cv2.distanceTransform((~m).astype(np.uint8), cv2.DIST_L2, 3)
        r = max(min_radius, window * float(np.sqrt(m.sum() / np.pi)))
        out.append(np.exp(-((np.maximum(d - r, 0) / r) ** 2)).astype(np.float32))
    return torch.from_numpy(np.stack(out))


def winning_objects(probs: Tensor) -> Tensor:
    """(M, h, w) -> bool, True where object m is the most probable one and >= 0.5."""
    best = probs.max(0, keepdim=True).values
    return (probs >= best) & (probs >= 0.5)


def _erode(masks: Tensor, cells: int) -> Tensor:
    """(M, h, w) float {0, 1} -> the same, shrunk by ``cells`` (square structuring element)."""
    if cells <= 0:
        return masks
    k = 2 * cells + 1
    return -F.max_pool2d(-masks[None], k, stride=1, padding=cells)[0]


def _select(keep: Tensor, a: InstancePrototypes, b: InstancePrototypes) -> InstancePrototypes:
    k = keep[:, None, None]
    return InstancePrototypes(
        *(torch.where(k, x, y) for x, y in zip(a._tensors(), b._tensors(), strict=True))
    )


def shrink_frame(frame: np.ndarray, max_side: int | None) -> np.ndarray:
    """(H, W, 3) frame resized (area) so its longer side is at most ``max_side`` (None: as is)."""
    h, w = frame.shape[:2]
    if not max_side or max(h, w) <= max_side:
        return frame
    s = max_side / max(h, w)
    return cv2.resize(frame, (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA)
