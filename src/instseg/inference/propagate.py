"""Semi-supervised video object segmentation: propagate first-frame object masks.

**Instance prototypes** (:class:`PrototypePropagator`, survey ch. 5.2.3 without training):
on ImageNet backbone features (:class:`BackboneFeatures`, EfficientNet-Lite0 c3 + upsampled c4,
L2-normalised, stride 8), each object k gets K+ foreground prototypes (GMM-EM, Eqs. 5.2-5.4, on
the features inside its mask) and K- background prototypes (on everything outside it, other
objects included). Each new frame's features attend to both sets (Euclidean softmax of
Eq. 5.6 with temperature ``2 sigma^2``); the posterior mass on object k's foreground prototypes
is its probability (the ``fg_prob`` read-out of the instance-level module). A pixel takes the
most probable object when that probability is >= 0.5, else background. The prototypes are then
re-fitted on the new frame's confident pixels (EM initialised from the accumulated ones, so
component j keeps describing the same part) and accumulated with the momentum rule of Eq. 5.8
(:func:`update_instance_prototypes`, lambda 0.2). The first frame's prototypes (from the given
masks) stay in the attended set too (``keep_first``), as a drift anchor. A soft spatial window
around the previous frame's mask (``window``, in object radii) suppresses far-away look-alikes.

**Baselines** for ``scripts/davis_semisup.py``:

- :class:`FeatureNNPropagator`: label propagation by affinity to the first frame: each pixel's
  label distribution is the softmax(cos / tau)-weighted vote of its top-k most similar
  first-frame pixels (same features and, optionally, the same spatial window).
- :func:`flow_propagate`: chained OpenCV DIS optical-flow warping of the first mask (soft
  one-hot labels warped frame to frame with the backward flow, then argmax).

Labels everywhere: (H, W) uint8, 0 = background, k = object k (DAVIS style).
State lives in frozen dataclasses returned by ``init`` / ``step``, never in the propagators.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Literal, Protocol

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
from instseg.models.video.prototypes import gmm_em_prototypes, gmm_logits

__all__ = [
    "BackboneFeatures",
    "PrototypeState",
    "PrototypePropagator",
    "NNState",
    "FeatureNNPropagator",
    "propagate_labels",
    "propagate_features",
    "flow_propagate",
    "probs_to_labels",
]


class BackboneFeatures:
    """RGB uint8 (H, W, 3) -> (C, ceil(H/8), ceil(W/8)) float32 unit-norm features.

    EfficientNet-Lite0 (offline ImageNet weights) c3 (40 ch, stride 8) and c4 (112 ch, stride
    16, bilinearly upsampled), each L2-normalised, concatenated, L2-normalised (C = 152).
    ``max_side`` caps the longer side the backbone sees (frames are resized down first).
    """

    def __init__(
        self, *, pretrained: bool = True, device: str = "cpu", max_side: int | None = None
    ) -> None:
        from instseg.models.backbones.efficientnet import EfficientNetLite0

        self.body = EfficientNetLite0(pretrained=pretrained, out_strides=(8, 16), frozen_bn=True)
        self.body = self.body.to(device).eval()
        self.device, self.max_side = torch.device(device), max_side
        self.mean = torch.tensor(self.body.pixel_mean).view(1, 3, 1, 1).to(device)
        self.std = torch.tensor(self.body.pixel_std).view(1, 3, 1, 1).to(device)

    def stride(self, size: tuple[int, int]) -> float:
        """Frame pixels per feature cell for frames of ``size`` = (H, W)."""
        return 8.0 * max(1.0, max(size) / self.max_side) if self.max_side else 8.0

    @torch.no_grad()
    def __call__(self, frame: np.ndarray) -> Tensor:
        frame = _shrink(frame, self.max_side)
        h, w = frame.shape[:2]
        x = torch.from_numpy(np.array(frame, np.float32)).permute(2, 0, 1)[None]
        x = (x.to(self.device) - self.mean) / self.std
        x = F.pad(x, (0, (-w) % 32, 0, (-h) % 32))
        feats = self.body(x)
        c3, c4 = feats["c3"], feats["c4"]
        c4 = F.interpolate(c4, size=c3.shape[-2:], mode="bilinear", align_corners=False)
        out = torch.cat([F.normalize(c3, dim=1), F.normalize(c4, dim=1)], 1)
        out = F.normalize(out, dim=1)[0, :, : (h + 7) // 8, : (w + 7) // 8]
        return out.float().cpu()


class FeaturePropagator(Protocol):
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
        em_iters / sigma: GMM-EM settings (features are unit vectors).
        update / momentum: Eq. 5.8 mode ("momentum", "initial" or "off") and lambda.
        keep_first: also attend to the first frame's prototypes.
        window: spatial window radius in units of the object's radius (0: off).
        confidence: pixels with probability >= this (fg) or <= 1 - this (bg) refit prototypes.
    """

    def __init__(
        self,
        *,
        num_fg: int = 16,
        num_bg: int = 32,
        em_iters: int = 5,
        sigma: float = 0.25,
        update: UpdateMode = "momentum",
        momentum: float = 0.2,
        keep_first: bool = True,
        window: float = 1.0,
        confidence: float = 0.7,
    ) -> None:
        self.num_fg, self.num_bg, self.em_iters, self.sigma = num_fg, num_bg, em_iters, sigma
        self.update, self.momentum, self.keep_first = update, momentum, keep_first
        self.window, self.confidence = window, confidence

    def init(self, feats: Tensor, masks: Tensor) -> PrototypeState:
        """feats (C, h, w), masks (M, h, w) float coverage in [0, 1] at the feature grid."""
        fg = (masks >= 0.5).float()
        protos = self._fit(feats, fg, (masks <= 0.1).float(), init=None)
        return PrototypeState(first=protos, running=protos, prev=masks >= 0.5)

    def step(self, feats: Tensor, state: PrototypeState) -> tuple[Tensor, PrototypeState]:
        """-> (M, h, w) object probabilities, next state."""
        probs = self._read(feats, state) * spatial_window(state.prev, self.window)
        won = _winners(probs)
        fg = (won & (probs >= self.confidence)).float()
        bg = (~won & (probs <= 1 - self.confidence)).float()
        cur = self._fit(feats, fg, bg, init=state.running)
        running = update_instance_prototypes(
            state.running, cur, mode=self.update, momentum=self.momentum
        )
        seen = (
            (fg > 0).flatten(1).any(1)
        )  # an object lost this frame keeps its prototypes and window
        running = _select(seen, running, state.running)
        prev = torch.where(seen[:, None, None], won, state.prev)
        return probs, replace(state, running=running, prev=prev)

    def _fit(
        self, feats: Tensor, fg: Tensor, bg: Tensor, *, init: InstancePrototypes | None
    ) -> InstancePrototypes:
        m = fg.shape[0]
        keys = feats.flatten(1).t().unsqueeze(0).expand(m, -1, -1)  # (M, N, C)
        em = {"iters": self.em_iters, "sigma": self.sigma}
        fk, _, _, _ = gmm_em_prototypes(
            keys, num_prototypes=self.num_fg, mask=fg.flatten(1),
            init=init.fg_keys if init is not None else "grid", **em,
        )  # fmt: skip
        bk, _, _, _ = gmm_em_prototypes(
            keys, num_prototypes=self.num_bg, mask=bg.flatten(1),
            init=init.bg_keys if init is not None else "grid", **em,
        )  # fmt: skip
        return InstancePrototypes(fk, fk, bk, bk)

    def _read(self, feats: Tensor, state: PrototypeState) -> Tensor:
        sets = [state.running, state.first] if self.keep_first else [state.running]
        fgk = torch.cat([p.fg_keys for p in sets], 1)
        bgk = torch.cat([p.bg_keys for p in sets], 1)
        m, (h, w) = fgk.shape[0], feats.shape[-2:]
        keys = feats.flatten(1).t().unsqueeze(0).expand(m, -1, -1)
        lf = gmm_logits(keys, fgk, sigma=self.sigma)
        lb = gmm_logits(keys, bgk, sigma=self.sigma)
        p = torch.cat([lf, lb], -1).softmax(-1)[..., : lf.shape[-1]].sum(-1)
        return p.reshape(m, h, w)


@dataclass(frozen=True)
class NNState:
    """First-frame keys (N0, C), soft labels (N0, M + 1) (column 0 = background) and the
    previous frame's masks (M, h, w) bool (window)."""

    keys: Tensor
    labels: Tensor
    prev: Tensor


class FeatureNNPropagator:
    """Baseline: top-k softmax(cos / tau) affinity vote of first-frame pixel labels."""

    def __init__(self, *, topk: int = 20, tau: float = 0.05, window: float = 1.0) -> None:
        self.topk, self.tau, self.window = topk, tau, window

    def init(self, feats: Tensor, masks: Tensor) -> NNState:
        fgm = masks.flatten(1).t()  # (N0, M)
        labels = torch.cat([(1 - fgm.sum(1, keepdim=True)).clamp_min(0), fgm], 1)
        return NNState(keys=feats.flatten(1).t(), labels=labels, prev=masks >= 0.5)

    def step(self, feats: Tensor, state: NNState) -> tuple[Tensor, NNState]:
        (h, w), q = feats.shape[-2:], feats.flatten(1).t()
        out = []
        for part in q.split(4096):
            sim, idx = (part @ state.keys.t()).topk(min(self.topk, len(state.keys)), dim=1)
            wgt = (sim / self.tau).softmax(1)
            out.append((wgt.unsqueeze(-1) * state.labels[idx]).sum(1))
        probs = torch.cat(out)[:, 1:].t().reshape(-1, h, w)
        probs = probs * spatial_window(state.prev, self.window)
        won = _winners(probs)
        seen = won.flatten(1).any(1)
        prev = torch.where(seen[:, None, None], won, state.prev)
        return probs, NNState(keys=state.keys, labels=state.labels, prev=prev)


# ---------------------------------------------------------------- drivers


def propagate_features(
    feats: Iterable[Tensor],
    first_labels: np.ndarray,
    *,
    propagator: FeaturePropagator,
    stride: float,
    object_ids: Sequence[int] | None = None,
) -> Iterator[np.ndarray]:
    """Feature maps (C, h, w) (cells of ``stride`` frame pixels) of frames 0..T-1 and the
    (H, W) label map of frame 0 -> label maps (H, W) uint8 of every frame (frame 0 =
    ``first_labels`` as given)."""
    ids = list(object_ids) if object_ids is not None else object_ids_of(first_labels)
    size = first_labels.shape[:2]
    it = iter(feats)
    f0 = next(it, None)
    if f0 is None:
        return
    yield first_labels.astype(np.uint8)
    if not ids:
        for _ in it:
            yield np.zeros(size, np.uint8)
        return
    state = propagator.init(f0, coverage(first_labels, ids, tuple(f0.shape[-2:]), stride))
    for f in it:
        probs, state = propagator.step(f, state)
        yield probs_to_labels(probs, ids, size, stride)


def propagate_labels(
    frames: Iterable[np.ndarray],
    first_labels: np.ndarray,
    *,
    propagator: FeaturePropagator,
    features: BackboneFeatures,
) -> Iterator[np.ndarray]:
    """RGB frames (frame 0 annotated by ``first_labels``) -> label maps, one per frame."""
    return propagate_features(
        (features(f) for f in frames),
        first_labels,
        propagator=propagator,
        stride=features.stride(first_labels.shape[:2]),
    )


def flow_propagate(
    frames: Iterable[np.ndarray],
    first_labels: np.ndarray,
    *,
    preset: Literal["ultrafast", "fast", "medium", "fine"] = "medium",
    max_side: int | None = None,
) -> Iterator[np.ndarray]:
    """Baseline: chain backward DIS flows (frame t -> t-1) and warp the soft one-hot labels of
    frame t-1 (bilinear), then argmax. ``max_side``: compute the flow on frames resized so
    their longer side is at most this."""
    from instseg.models.inpainting.flow import dis_flow, warp

    ids = object_ids_of(first_labels)
    size = first_labels.shape[:2]
    prev_img, soft = None, None
    for frame in frames:
        small = _shrink(frame, max_side)
        if prev_img is None:
            onehot = first_labels[..., None] == np.array([0, *ids])[None, None]
            soft = cv2.resize(
                onehot.astype(np.float32), small.shape[1::-1], interpolation=cv2.INTER_AREA
            ).reshape(*small.shape[:2], -1)
            yield first_labels.astype(np.uint8)
        else:
            flow = dis_flow(small, prev_img, preset=preset)
            soft = warp(soft, flow, mode="bilinear").reshape(*small.shape[:2], -1)
            soft[..., 0] += soft.sum(-1) < 1e-3  # pulled in from outside the frame: background
            probs = torch.from_numpy(np.ascontiguousarray(soft[..., 1:].transpose(2, 0, 1)))
            stride = size[0] / small.shape[0]
            bg = torch.from_numpy(np.ascontiguousarray(soft[..., 0]))
            yield probs_to_labels(probs, ids, size, stride, background=bg)
        prev_img = small


# ---------------------------------------------------------------- helpers


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


def spatial_window(prev: Tensor, window: float) -> Tensor:
    """(M, h, w) bool previous masks -> (M, h, w) weights: 1 within ``window`` object radii
    (radius = sqrt(area / pi), at least 2 cells) of the mask, Gaussian fall-off beyond."""
    if window <= 0:
        return torch.ones(prev.shape)
    out = []
    for m in prev.numpy():
        if not m.any():
            out.append(np.ones(m.shape, np.float32))
            continue
        d = cv2.distanceTransform((~m).astype(np.uint8), cv2.DIST_L2, 3)
        r = max(2.0, window * float(np.sqrt(m.sum() / np.pi)))
        out.append(np.exp(-((np.maximum(d - r, 0) / r) ** 2)).astype(np.float32))
    return torch.from_numpy(np.stack(out))


def _winners(probs: Tensor) -> Tensor:
    """(M, h, w) -> bool, True where object m is the most probable one and >= 0.5."""
    best = probs.max(0, keepdim=True).values
    return (probs >= best) & (probs >= 0.5)


def _select(keep: Tensor, a: InstancePrototypes, b: InstancePrototypes) -> InstancePrototypes:
    k = keep[:, None, None]
    return InstancePrototypes(
        *(torch.where(k, x, y) for x, y in zip(a._tensors(), b._tensors(), strict=True))
    )


def _shrink(frame: np.ndarray, max_side: int | None) -> np.ndarray:
    h, w = frame.shape[:2]
    if not max_side or max(h, w) <= max_side:
        return frame
    s = max_side / max(h, w)
    return cv2.resize(frame, (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA)
