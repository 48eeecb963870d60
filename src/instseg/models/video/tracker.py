"""Association head, quasi-dense contrastive loss and the online tracker used by PCAN.

PCAN builds on QDTrack for association (survey ch. 5.3, Table 5.2 "QDTrack-mots"):

* :class:`TrackHead`: 4 conv (GN, ReLU) + 1 FC on (R, C, 7, 7) RoI features -> (R, D)
  appearance embeddings.
* :func:`quasi_dense_loss`: RoIs sampled around the ground truth in a key and a reference
  frame; a key RoI with identity i is positive to every reference RoI with identity i and
  negative to all others. Multi-positive cross-entropy on dot products (QDTrack Eq. 2)::

      L_embed = log(1 + sum_{k+} sum_{k-} exp(v.k- - v.k+))

  plus an auxiliary L2 loss on cosine similarities (target 1 for positives, 0 with a 0.1
  margin for negatives, hardest negatives up to 3x the positives).
* :class:`Tracker` with :class:`TrackState`: per frame, similarity between detections and the
  stored track embeddings by bi-directional softmax (``(softmax_rows + softmax_cols) / 2``)
  or cosine; assignment greedy in score order (QDTrack) or Hungarian (scipy), each pair
  gated by ``match_thresh`` (and ``min_cosine``, since a bi-softmax over one track and one
  detection is always 1). Unmatched confident detections start tracks; a track not seen for
  more than ``keep_alive`` frames is dropped. The tracker holds settings only; the state is
  passed in and returned (it lives in the predictor).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import Tensor, nn
from torchvision.ops import box_iou

__all__ = [
    "TrackHead",
    "quasi_dense_loss",
    "assign_track_ids",
    "jitter_boxes",
    "Track",
    "TrackState",
    "Tracker",
]

_NO_MATCH = -1e4
IGNORE = -2  # RoI between the IoU thresholds: neither positive nor negative


class TrackHead(nn.Module):
    """(R, C, S, S) RoI features -> (R, embed_dim) embeddings (not normalised).

    Args:
        in_channels: C; roi_size: S; num_convs / conv_channels: 3x3 conv + GroupNorm(32) +
        ReLU stack; fc_dim: hidden FC width; embed_dim: D.
    """

    def __init__(
        self,
        *,
        in_channels: int,
        roi_size: int = 7,
        num_convs: int = 4,
        conv_channels: int = 256,
        fc_dim: int = 1024,
        embed_dim: int = 256,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c = in_channels
        for _ in range(num_convs):
            groups = 32 if conv_channels % 32 == 0 else 1
            layers += [
                nn.Conv2d(c, conv_channels, 3, padding=1, bias=False),
                nn.GroupNorm(groups, conv_channels),
                nn.ReLU(inplace=True),
            ]
            c = conv_channels
        self.convs = nn.Sequential(*layers)
        self.fc = nn.Sequential(nn.Linear(c * roi_size * roi_size, fc_dim), nn.ReLU(inplace=True))
        self.embed = nn.Linear(fc_dim, embed_dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.embed(self.fc(self.convs(x).flatten(1)))


def quasi_dense_loss(
    key_embeds: Tensor,
    ref_embeds: Tensor,
    key_ids: Tensor,
    ref_ids: Tensor,
    *,
    embed_weight: float = 0.25,
    aux_weight: float = 1.0,
    neg_margin: float = 0.1,
    neg_pos_ratio: int = 3,
) -> dict[str, Tensor]:
    """Quasi-dense contrastive loss between key RoIs (R1, D) and reference RoIs (R2, D).

    ``key_ids`` (R1,) / ``ref_ids`` (R2,): identity of each RoI, -1 for background RoIs
    (negatives only), ``IGNORE`` (-2) for RoIs to skip. A key RoI is an anchor when it has at
    least one positive. Returns ``{"loss_track", "loss_track_aux"}`` (weighted, zero when there
    is no anchor)."""
    kv, rv = key_ids[:, None], ref_ids[None, :]
    usable = (kv != IGNORE) & (rv != IGNORE)
    pos = (kv == rv) & (kv >= 0) & usable
    neg = (kv != rv) & usable
    anchors = pos.any(1)
    zero = key_embeds.sum() * 0.0 + ref_embeds.sum() * 0.0
    if not bool(anchors.any()):
        return {"loss_track": zero, "loss_track_aux": zero}
    sim = key_embeds.float() @ ref_embeds.float().t()
    ninf = torch.finfo(sim.dtype).min
    lse_neg = torch.where(neg, sim, ninf).logsumexp(1)
    lse_pos = torch.where(pos, -sim, ninf).logsumexp(1)
    embed = F.softplus(lse_neg + lse_pos)[anchors].mean()
    cos = F.normalize(key_embeds.float(), dim=1) @ F.normalize(ref_embeds.float(), dim=1).t()
    pos_l = (1.0 - cos.clamp(0, 1))[pos].pow(2)
    neg_l = (cos - neg_margin).clamp(0, 1)[neg].pow(2)
    k = min(len(neg_l), neg_pos_ratio * max(len(pos_l), 1))
    neg_l = neg_l.topk(k).values if k > 0 else neg_l[:0]
    aux = torch.cat([pos_l, neg_l]).mean()
    return {"loss_track": embed_weight * embed, "loss_track_aux": aux_weight * aux}


def assign_track_ids(
    rois: Tensor, gt_boxes: Tensor, gt_ids: Tensor, *, pos_iou: float = 0.7, neg_iou: float = 0.3
) -> Tensor:
    """(R, 4) RoIs, (G, 4) GT boxes with (G,) identities -> (R,) int64: the identity of the
    best-overlapping GT when IoU >= ``pos_iou``, -1 when IoU < ``neg_iou``, ``IGNORE`` between."""
    out = torch.full((len(rois),), -1, dtype=torch.long, device=rois.device)
    if len(gt_boxes) == 0 or len(rois) == 0:
        return out
    iou, idx = box_iou(rois.float(), gt_boxes.float()).max(1)
    out[iou >= neg_iou] = IGNORE
    keep = iou >= pos_iou
    out[keep] = gt_ids.to(out.device)[idx[keep]]
    return out


def jitter_boxes(
    boxes: Tensor,
    *,
    num: int,
    scale: float = 0.1,
    image_size: tuple[int, int],
    generator: torch.Generator | None = None,
) -> Tensor:
    """``num`` random copies of each (G, 4) xyxy box: centre shifted and size scaled by up to
    ``scale`` of the size, clipped to the image -> (G * num, 4)."""
    if len(boxes) == 0 or num <= 0:
        return boxes.new_zeros(0, 4)
    b = boxes.float().repeat_interleave(num, 0)
    wh = (b[:, 2:] - b[:, :2]).clamp_min(1.0)
    noise = torch.rand(len(b), 4, generator=generator).to(b.device) * 2.0 - 1.0
    ctr = (b[:, :2] + b[:, 2:]) / 2 + noise[:, :2] * scale * wh
    wh = wh * (1.0 + noise[:, 2:] * scale)
    out = torch.cat([ctr - wh / 2, ctr + wh / 2], 1)
    h, w = image_size
    return torch.stack(
        [
            out[:, 0].clamp(0, w),
            out[:, 1].clamp(0, h),
            out[:, 2].clamp(0, w),
            out[:, 3].clamp(0, h),
        ],
        1,
    )


@dataclass
class Track:
    """One live track: ``embedding`` (D,), ``box`` (4,) xyxy, last seen at ``last_frame``."""

    id: int
    embedding: Tensor
    box: Tensor
    label: int
    score: float
    last_frame: int
    hits: int = 1


@dataclass(frozen=True)
class TrackState:
    """Tracks by id, the next id to give and the index of the next frame."""

    tracks: dict[int, Track] = field(default_factory=dict)
    next_id: int = 0
    frame: int = 0


class Tracker:
    """Online association (settings only; see the module docstring).

    Args:
        similarity: "bisoftmax" (QDTrack) or "cosine".
        assignment: "greedy" (detections in descending score take their best free track) or
            "hungarian" (maximum total similarity).
        match_thresh: minimum similarity of an accepted pair.
        min_cosine: minimum cosine similarity of an accepted pair (any similarity).
        init_score_thresh: an unmatched detection needs this score to start a track.
        obj_score_thresh: detections below it are ignored (id -1).
        keep_alive: a track unseen for more than this many frames is dropped.
        embed_momentum: weight of the new embedding when a track is updated.
        match_classes: only match a detection to tracks of the same label.
    """

    def __init__(
        self,
        *,
        similarity: Literal["bisoftmax", "cosine"] = "bisoftmax",
        assignment: Literal["greedy", "hungarian"] = "greedy",
        match_thresh: float = 0.5,
        min_cosine: float = 0.2,
        init_score_thresh: float = 0.7,
        obj_score_thresh: float = 0.3,
        keep_alive: int = 10,
        embed_momentum: float = 0.8,
        match_classes: bool = False,
    ) -> None:
        if similarity not in ("bisoftmax", "cosine") or assignment not in ("greedy", "hungarian"):
            raise ValueError(f"bad similarity/assignment: {similarity!r}, {assignment!r}")
        self.similarity, self.assignment = similarity, assignment
        self.match_thresh, self.min_cosine = match_thresh, min_cosine
        self.init_score_thresh, self.obj_score_thresh = init_score_thresh, obj_score_thresh
        self.keep_alive, self.embed_momentum = keep_alive, embed_momentum
        self.match_classes = match_classes

    def update(
        self,
        state: TrackState,
        *,
        boxes: Tensor,
        scores: Tensor,
        labels: Tensor,
        embeddings: Tensor,
    ) -> tuple[Tensor, TrackState]:
        """One frame: N detections (boxes (N, 4), scores (N,), labels (N,), embeddings (N, D))
        -> (track ids (N,) int64, -1 = not tracked), new state."""
        n = len(boxes)
        ids = torch.full((n,), -1, dtype=torch.long)
        tracks = dict(state.tracks)
        track_ids = list(tracks)
        valid = torch.nonzero(scores.cpu() >= self.obj_score_thresh).flatten().tolist()
        pairs = self._match(tracks, track_ids, valid, scores, labels, embeddings)
        next_id = state.next_id
        for d, t in pairs:
            ids[d] = track_ids[t]
        for d in valid:
            if ids[d] < 0 and float(scores[d]) >= self.init_score_thresh:
                ids[d], next_id = next_id, next_id + 1
        for d in torch.nonzero(ids >= 0).flatten().tolist():
            tracks[int(ids[d])] = self._updated(
                tracks.get(int(ids[d])),
                int(ids[d]),
                state.frame,
                boxes[d],
                scores[d],
                labels[d],
                embeddings[d],
            )
        tracks = {k: v for k, v in tracks.items() if state.frame - v.last_frame <= self.keep_alive}
        return ids.to(boxes.device), TrackState(
            tracks=tracks, next_id=next_id, frame=state.frame + 1
        )

    def similarity_matrix(self, det_embeds: Tensor, track_embeds: Tensor) -> tuple[Tensor, Tensor]:
        """(N, D), (T, D) -> (similarity (N, T), cosine (N, T)), float32."""
        d, t = det_embeds.float(), track_embeds.float()
        cos = F.normalize(d, dim=1) @ F.normalize(t, dim=1).t()
        if self.similarity == "cosine":
            return cos, cos
        s = d @ t.t()
        return (s.softmax(1) + s.softmax(0)) / 2, cos

    # ------------------------------------------------------------ helpers

    def _match(
        self,
        tracks: dict[int, Track],
        track_ids: Sequence[int],
        valid: list[int],
        scores: Tensor,
        labels: Tensor,
        embeddings: Tensor,
    ) -> list[tuple[int, int]]:
        if not valid or not track_ids:
            return []
        mem = torch.stack([tracks[i].embedding for i in track_ids]).to(embeddings.device)
        sim, cos = self.similarity_matrix(embeddings[valid], mem)
        ok = (sim >= self.match_thresh) & (cos >= self.min_cosine)
        if self.match_classes:
            tl = torch.as_tensor([tracks[i].label for i in track_ids], device=labels.device)
            ok &= labels[valid][:, None] == tl[None, :]
        ok = ok.cpu()
        sim = torch.where(ok, sim.cpu(), torch.full_like(sim.cpu(), _NO_MATCH))
        if self.assignment == "hungarian":
            rows, cols = linear_sum_assignment(sim.numpy(), maximize=True)
            return [(valid[r], int(c)) for r, c in zip(rows, cols, strict=True) if ok[r, c]]
        out, taken = [], set()
        for r in scores[valid].cpu().argsort(descending=True, stable=True).tolist():
            cand = sim[r].clone()
            cand[list(taken)] = _NO_MATCH
            c = int(cand.argmax())
            if ok[r, c] and c not in taken:
                out.append((valid[r], c))
                taken.add(c)
        return out

    def _updated(
        self,
        old: Track | None,
        tid: int,
        frame: int,
        box: Tensor,
        score: Tensor,
        label: Tensor,
        emb: Tensor,
    ) -> Track:
        emb = emb.detach().float()
        if old is None:
            return Track(
                id=tid,
                embedding=emb,
                box=box.detach(),
                label=int(label),
                score=float(score),
                last_frame=frame,
            )
        m = self.embed_momentum
        return replace(
            old,
            embedding=(1 - m) * old.embedding + m * emb,
            box=box.detach(),
            label=int(label),
            score=float(score),
            last_frame=frame,
            hits=old.hits + 1,
        )
