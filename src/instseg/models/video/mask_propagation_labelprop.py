"""The standard label-propagation protocol for first-frame mask propagation: how
self-supervised correspondence features (CRW, UVC, STC and others) are evaluated on
semi-supervised video object segmentation, here as a :class:`~instseg.models.video.
mask_propagation.MaskPropagator` usable with any per-frame feature map of the project (the
ImageNet features of :class:`instseg.inference.mask_propagation.BackboneFeatures`, the learned
propagation embedding on top of them, a fine-tuned backbone).

The label distribution of each cell of frame t is the softmax(affinity / tau)-weighted vote of
its ``topk`` most similar cells in a *context* made of

- the first frame, with its ground-truth (soft, cell-coverage) labels, and
- the ``num_recent`` most recent frames t-1, t-2, ..., with the soft labels propagated to them
  (a bounded queue: the oldest frame leaves when a new one enters),

where a recent frame's cell only competes when it lies within ``radius`` feature cells
(Euclidean) of the query cell's position. The first frame is searched whole by default
(``first_radius=None``); ``first_radius=radius`` restricts it too (some implementations do).
Affinity = dot product of the feature vectors (cosine similarity for the project's unit-length
features). The top-k is taken over the union of the context's candidates, and only then the
softmax. Defaults: n = 20 recent frames, top-k = 10, radius 12 cells (at stride 8: 96 pixels),
tau = 0.07.

With ``num_recent=0`` (and ``first_radius=None``) this is first-frame label propagation, the same
vote as :class:`~instseg.models.video.mask_propagation_baselines.FeatureNNPropagator` with
``window=0`` and the same ``topk`` / ``tau``.

Cost per frame: one (N x N0) affinity with the first frame, chunked, plus for each recent frame
a batched product over square tiles of ``tile`` x ``tile`` query cells against the tile grown by
the radius ((tile + 2 ceil(radius))^2 keys), one recent frame at a time (only its (N, k)
top-k is kept; the k best of the union are picked at the end). Working memory: about
N (tile + 2 radius)^2 (1 + C / tile^2) floats, whatever the number of recent frames; the
queue holds n frames of N (C + M + 1) floats.

Labels everywhere: (H, W) uint8, 0 = background, k = object k (DAVIS style); on the feature grid
the propagator works with (M, h, w) object probabilities and (N, M + 1) soft labels per cell
(N = h * w, column 0 = background). State lives in frozen dataclasses, never in the propagator.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import torch
from torch import Tensor

__all__ = ["ContextFrame", "ContextState", "ContextLabelPropagator"]


@dataclass(frozen=True)
class ContextFrame:
    """One frame of the context: ``keys`` (N, C) features of its cells (row-major over the
    (h, w) grid) and ``labels`` (N, M + 1) soft labels (column 0 = background)."""

    keys: Tensor
    labels: Tensor


@dataclass(frozen=True)
class ContextState:
    """``first``: the annotated frame (ground-truth soft labels); ``recent``: at most
    ``num_recent`` propagated frames, oldest first (the last one is the previous frame);
    ``grid``: the (h, w) feature grid of the video."""

    first: ContextFrame
    recent: tuple[ContextFrame, ...]
    grid: tuple[int, int]


class ContextLabelPropagator:
    """Label propagation from the first frame plus a queue of recent frames (module docstring).

    ``init(feats (C, h, w), masks (M, h, w) coverage in [0, 1])`` -> :class:`ContextState`;
    ``step(feats (C, h, w), state)`` -> ((M, h, w) object probabilities, next state). The
    features of every frame must share one (h, w) grid.

    Args:
        num_recent: n, how many of the latest propagated frames stay in the context (0: the
            first frame only).
        topk: k, how many context cells vote for each query cell.
        radius: a recent frame's cell votes only within this Euclidean distance (in feature
            cells) of the query cell's position.
        tau: softmax temperature on the affinities of the k voters.
        first_radius: the same restriction for the first frame (None: the whole first frame).
        tile: query tile side (cells) of the local search; a speed / memory knob, the result
            does not depend on it.
        chunk: query cells per block of the unrestricted first-frame affinity (memory knob).
    """

    def __init__(
        self,
        *,
        num_recent: int = 20,
        topk: int = 10,
        radius: float = 12.0,
        tau: float = 0.07,
        first_radius: float | None = None,
        tile: int = 8,
        chunk: int = 4096,
    ) -> None:
        if num_recent < 0 or topk < 1 or radius < 0 or tau <= 0 or tile < 1 or chunk < 1:
            raise ValueError(
                "need num_recent >= 0, topk >= 1, radius >= 0, tau > 0, tile >= 1, chunk >= 1"
            )
        if first_radius is not None and first_radius < 0:
            raise ValueError(f"first_radius must be >= 0 or None, got {first_radius}")
        self.num_recent, self.topk, self.radius, self.tau = num_recent, topk, radius, tau
        self.first_radius, self.tile, self.chunk = first_radius, tile, chunk

    def init(self, feats: Tensor, masks: Tensor) -> ContextState:
        """feats (C, h, w), masks (M, h, w) float coverage in [0, 1] at the feature grid."""
        fgm = masks.flatten(1).t().float()  # (N0, M)
        labels = torch.cat([(1 - fgm.sum(1, keepdim=True)).clamp_min(0), fgm], 1)
        first = ContextFrame(keys=feats.flatten(1).t(), labels=labels)
        return ContextState(first=first, recent=(), grid=(feats.shape[-2], feats.shape[-1]))

    def step(self, feats: Tensor, state: ContextState) -> tuple[Tensor, ContextState]:
        """-> (M, h, w) object probabilities, next state (this frame joins the queue)."""
        grid = (feats.shape[-2], feats.shape[-1])
        if grid != state.grid:
            raise ValueError(f"feature grid {grid} differs from the first frame's {state.grid}")
        q = feats.flatten(1).t()  # (N, C)
        sims, labs = [], []
        if self.first_radius is None:
            s, i = self._global_topk(q, state.first.keys)
        else:
            s, i = _local_topk(q, state.first.keys, grid, self.first_radius, self.topk, self.tile)
        sims.append(s)
        labs.append(_gather_rows(state.first.labels, i))
        for frame in state.recent:
            s, i = _local_topk(q, frame.keys, grid, self.radius, self.topk, self.tile)
            sims.append(s)
            labs.append(_gather_rows(frame.labels, i))
        sim, lab = torch.cat(sims, 1), torch.cat(labs, 1)  # (N, K), (N, K, M + 1)
        if sim.shape[1] > self.topk:
            sim, j = sim.topk(self.topk, dim=1)
            lab = lab.gather(1, j[..., None].expand(-1, -1, lab.shape[-1]))
        wgt = (sim / self.tau).softmax(1)
        out = (wgt.unsqueeze(-1) * lab).sum(1)  # (N, M + 1)
        probs = out[:, 1:].t().reshape(-1, *grid)
        recent = (*state.recent, ContextFrame(keys=q, labels=out))
        recent = recent[-self.num_recent :] if self.num_recent > 0 else ()
        return probs, ContextState(first=state.first, recent=recent, grid=grid)

    def _global_topk(self, q: Tensor, keys: Tensor) -> tuple[Tensor, Tensor]:
        """(N, C) queries x (N0, C) keys -> (N, k) top affinities and their key indices."""
        vals, idx = [], []
        for part in q.split(self.chunk):
            v, i = (part @ keys.t()).topk(min(self.topk, len(keys)), dim=1)
            vals.append(v)
            idx.append(i)
        return torch.cat(vals), torch.cat(idx)


def _gather_rows(labels: Tensor, idx: Tensor) -> Tensor:
    """labels (N0, L), idx (N, k) in [0, N0] (N0 = no key: zero label) -> (N, k, L)."""
    padded = torch.cat([labels, labels.new_zeros(1, labels.shape[1])])
    return padded[idx]


def _local_topk(
    q: Tensor, keys: Tensor, grid: tuple[int, int], radius: float, k: int, tile: int
) -> tuple[Tensor, Tensor]:
    """(N, C) queries x (N, C) keys of the same (h, w) grid, keys only within ``radius`` cells
    of the query's cell -> (N, k) affinities (-inf for missing candidates) and key indices
    (N = no key)."""
    n, c = q.shape
    qi, ki, far = _tiles(grid, float(radius), tile)  # (L, Q), (L, R), (L, Q, R)
    zero = q.new_zeros(1, c)
    qt = torch.cat([q, zero])[qi]  # (L, Q, C)
    kt = torch.cat([keys, zero])[ki]  # (L, R, C)
    sim = torch.bmm(qt, kt.transpose(1, 2)).masked_fill_(far, float("-inf"))
    kk = min(k, sim.shape[-1])
    v, j = sim.topk(kk, dim=2)  # (L, Q, kk)
    src = ki.gather(1, j.flatten(1)).view_as(j)
    src = torch.where(torch.isfinite(v), src, torch.full_like(src, n))
    out_v = torch.full((n + 1, kk), float("-inf"), dtype=v.dtype)
    out_i = torch.full((n + 1, kk), n, dtype=torch.long)
    out_v[qi.flatten()] = v.flatten(0, 1)  # padded queries all land on the spare row n
    out_i[qi.flatten()] = src.flatten(0, 1)
    return out_v[:n], out_i[:n]


@lru_cache(maxsize=16)
def _tiles(grid: tuple[int, int], radius: float, tile: int) -> tuple[Tensor, Tensor, Tensor]:
    """Tiling of an (h, w) grid for the local search: query indices (L, tile^2) of each tile,
    key indices (L, R) of the tile grown by ceil(radius) (R = (tile + 2 ceil(radius))^2) and
    the (L, tile^2, R) mask of the pairs that must not vote (farther than ``radius`` or outside
    the grid); out-of-grid entries hold index h * w."""
    h, w = grid
    r = int(math.ceil(radius))
    ty, tx = -(-h // tile), -(-w // tile)
    oy, ox = torch.meshgrid(torch.arange(ty) * tile, torch.arange(tx) * tile, indexing="ij")
    oy, ox = oy.reshape(-1, 1), ox.reshape(-1, 1)  # (L, 1) tile origins
    dq = torch.arange(tile)
    qy = (oy + dq.repeat_interleave(tile)[None]).long()  # (L, Q)
    qx = (ox + dq.repeat(tile)[None]).long()
    side = tile + 2 * r
    dk = torch.arange(side) - r
    ky = (oy + dk.repeat_interleave(side)[None]).long()  # (L, R)
    kx = (ox + dk.repeat(side)[None]).long()
    q_in = (qy < h) & (qx < w)
    k_in = (ky >= 0) & (ky < h) & (kx >= 0) & (kx < w)
    qi = torch.where(q_in, qy * w + qx, torch.full_like(qy, h * w))
    ki = torch.where(k_in, ky * w + kx, torch.full_like(ky, h * w))
    d2 = (qy[:, :, None] - ky[:, None, :]) ** 2 + (qx[:, :, None] - kx[:, None, :]) ** 2
    valid = (d2 <= radius * radius + 1e-6) & k_in[:, None, :] & q_in[:, :, None]
    return qi, ki, ~valid
