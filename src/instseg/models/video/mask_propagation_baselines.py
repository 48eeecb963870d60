"""Baselines for first-frame mask propagation (:mod:`instseg.models.video.mask_propagation`),
compared in ``scripts/davis_semisup.py``:

- :class:`FeatureNNPropagator`: label propagation by affinity to the first frame: each pixel's
  label distribution is the softmax(cos / tau)-weighted vote of its top-k most similar
  first-frame pixels (same features and, optionally, the same spatial window).
- :func:`flow_propagate`: chained OpenCV DIS optical-flow warping of the first mask (soft
  one-hot labels warped frame to frame with the backward flow, then argmax).

The standard label-propagation protocol (first frame plus a queue of recent frames, top-k,
local radius) is :class:`~instseg.models.video.mask_propagation_labelprop.ContextLabelPropagator`;
with ``num_recent=0`` it is :class:`FeatureNNPropagator` with ``window=0``.

Labels: (H, W) uint8, 0 = background, k = object k (DAVIS style).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np
import torch
from torch import Tensor

from instseg.models.inpainting.flow import dis_flow, warp
from instseg.models.video.mask_propagation import (
    object_ids_of,
    probs_to_labels,
    shrink_frame,
    spatial_window,
    winning_objects,
)

__all__ = ["NNState", "FeatureNNPropagator", "flow_propagate"]


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
        won = winning_objects(probs)
        seen = won.flatten(1).any(1)
        prev = torch.where(seen[:, None, None], won, state.prev)
        return probs, NNState(keys=state.keys, labels=state.labels, prev=prev)


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
    ids = object_ids_of(first_labels)
    size = first_labels.shape[:2]
    prev_img, soft = None, None
    for frame in frames:
        small = shrink_frame(frame, max_side)
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
