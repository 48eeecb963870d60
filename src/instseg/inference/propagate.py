"""Semi-supervised video object segmentation: propagate first-frame object masks.

**Instance prototypes** (:class:`PrototypePropagator`, survey ch. 5.2.3 without training):
on ImageNet backbone features (:class:`BackboneFeatures`, EfficientNet-Lite0 c3 + upsampled c4,
L2-normalised, stride 8), each object k gets K+ foreground key prototypes (GMM-EM, Eqs.
5.2-5.4, weighted by the object's mask coverage) and K- background ones (weighted by the rest,
other objects included). Their **value prototypes** (Eq. 5.4) are the object's soft mask label
averaged with the EM responsibilities, so prototypes of boundary cells carry fractional labels.
Each new frame's features attend to the union (Eq. 5.5, ``2 sigma^2`` temperature on unit-length
prototypes); the read value is object k's probability. A pixel takes the most probable object
when that probability is >= 0.5, else background. The prototypes are then re-fitted on the new
frame's confident pixels (eroded by one cell so mixed boundary cells never feed back; EM started
from the first frame's prototypes so component j keeps describing the same part) and become
the running set under the Eq. 5.8 rule (:func:`update_instance_prototypes`: "off" = the last
frame's, the best on our tuning sequences; "initial"; "momentum" lambda). The first frame's
prototypes (from the given masks) stay in the attended set too (``keep_first``), as a drift
anchor. A soft spatial window around the previous frame's mask (``window`` object radii, at
least ``window_min`` cells) suppresses far-away look-alikes.

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
from pathlib import Path
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
from instseg.models.video.prototypes import label_prototypes, label_read

__all__ = [
    "BackboneFeatures",
    "PrototypeState",
    "PrototypePropagator",
    "NNState",
    "FeatureNNPropagator",
    "propagate_labels",
    "feature_stride",
    "propagate_features",
    "flow_propagate",
    "probs_to_labels",
]


class BackboneFeatures:
    """RGB uint8 (H, W, 3) -> (C, ceil(H/8), ceil(W/8)) float32 unit-norm features.

    EfficientNet-Lite0 (offline ImageNet weights) c3 (40 ch, stride 8) and c4 (112 ch, stride
    16, bilinearly upsampled), each L2-normalised, concatenated, L2-normalised (C = 152).
    ``max_side`` caps the longer side the backbone sees (frames are resized down first).
    ``weights``: a trained instseg model file: a propagation embedding
    (``scripts/train_propagation.py``; applied on top of the ImageNet features) or an image /
    PCAN model (its fine-tuned EfficientNet-Lite0 backbone replaces the ImageNet one).
    ``source`` says which: "imagenet", "embedding" or "backbone".
    """

    def __init__(
        self,
        *,
        pretrained: bool = True,
        device: str = "cpu",
        max_side: int | None = None,
        weights: str | Path | None = None,
    ) -> None:
        from instseg.engine.weights import read_weights_file
        from instseg.models.backbones.efficientnet import EfficientNetLite0

        self.embedding: torch.nn.Module | None = None
        state, meta = read_weights_file(weights) if weights is not None else (None, None)
        self.source = (
            "imagenet"
            if meta is None
            else "embedding"
            if meta.task == "propagation"
            else "backbone"
        )
        self.body = EfficientNetLite0(
            pretrained=pretrained and self.source != "backbone", out_strides=(8, 16), frozen_bn=True
        )
        if self.source == "embedding":
            from instseg.models.video.propagation_embedding import PropagationEmbedding

            self.embedding = PropagationEmbedding(
                channels=int(meta.model["channels"]), hidden=int(meta.model["hidden"])
            )
            self.embedding.load_state_dict({k: v.float() for k, v in state.items()})
            self.embedding = self.embedding.to(device).eval()
        elif state is not None:
            self.body.load_state_dict(_backbone_state(weights, state, self.body.state_dict()))
        self.body = self.body.to(device).eval()
        self.device, self.max_side = torch.device(device), max_side
        self.mean = torch.tensor(self.body.pixel_mean).view(1, 3, 1, 1).to(device)
        self.std = torch.tensor(self.body.pixel_std).view(1, 3, 1, 1).to(device)

    def stride(self, size: tuple[int, int]) -> float:
        """Frame pixels per feature cell for frames of ``size`` = (H, W)."""
        return feature_stride(size, self.max_side)

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
        out = F.normalize(out, dim=1)
        if self.embedding is not None:
            out = self.embedding(out)
        return out[0, :, : (h + 7) // 8, : (w + 7) // 8].float().cpu()


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
        won = _winners(probs)
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


@dataclass(frozen=True)
class NNState:
    """First-frame keys (N0, C), soft labels (N0, M + 1) (column 0 = background) and the
    previous frame's masks (M, h, w) bool (window)."""

    keys: Tensor
    labels: Tensor
    prev: Tensor


class FeatureNNPropagator:
    """Baseline: top-k softmax(cos / tau) affinity vote of first-frame pixel labels."""

    def __init__(
        self, *, topk: int = 20, tau: float = 0.05, window: float = 1.0, window_min: float = 10.0
    ) -> None:
        self.topk, self.tau, self.window, self.window_min = topk, tau, window, window_min

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
        probs = probs * spatial_window(state.prev, self.window, self.window_min)
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


def feature_stride(size: tuple[int, int], max_side: int | None) -> float:
    """Frame pixels per :class:`BackboneFeatures` cell for frames of ``size`` = (H, W) shrunk
    to a longer side of at most ``max_side`` (stride 8 on the shrunk frame)."""
    return 8.0 * max(1.0, max(size) / max_side) if max_side else 8.0


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


def _winners(probs: Tensor) -> Tensor:
    """(M, h, w) -> bool, True where object m is the most probable one and >= 0.5."""
    best = probs.max(0, keepdim=True).values
    return (probs >= best) & (probs >= 0.5)


def _erode(masks: Tensor, cells: int) -> Tensor:
    """(M, h, w) float {0, 1} -> the same, shrunk by ``cells`` (square structuring element)."""
    if cells <= 0:
        return masks
    k = 2 * cells + 1
    return -F.max_pool2d(-masks[None], k, stride=1, padding=cells)[0]


def _backbone_state(
    path: str | Path, state: dict[str, Tensor], like: dict[str, Tensor]
) -> dict[str, Tensor]:
    """The EfficientNet-Lite0 tensors of a model file's ``state`` (from ``path``), keyed like
    ``like`` (the keys end with the backbone's own names, after a model prefix)."""
    from instseg.engine.checkpoint import CheckpointError

    first = next(iter(like))
    prefixes = [k[: -len(first)] for k in state if k.endswith("." + first) or k == first]
    if not prefixes:
        raise CheckpointError(f"{path}: no EfficientNet-Lite0 backbone in this model file")
    out, pre = {}, prefixes[0]
    for k, ref in like.items():
        v = state.get(pre + k)
        if v is None or tuple(v.shape) != tuple(ref.shape):
            raise CheckpointError(f"{path}: backbone tensor {pre + k} missing or mis-shaped")
        out[k] = v.to(ref.dtype)
    return out


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
