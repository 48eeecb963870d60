"""Association head, quasi-dense contrastive loss and the online tracker used by PCAN.

PCAN builds on QDTrack for association (survey ch. 5.3, Table 5.2 "QDTrack-mots"):

* :class:`TrackHead`: 4 conv (GN, ReLU) + 1 FC on (R, C, 7, 7) RoI features -> (R, D)
  appearance embeddings.
* :func:`quasi_dense_loss`: RoIs sampled around the ground truth in a key and a reference
  frame; a key RoI with identity i is positive to every reference RoI with identity i and
  negative to all others. Multi-positive cross-entropy on dot products (QDTrack Eq. 2)::

      L_embed = log(1 + sum_{k+} sum_{k-} exp(v.k- - v.k+))

  plus an auxiliary L2 loss on cosine similarities (target 1 for positives, 0 with a 0.1
  margin for negatives, hardest negatives up to 3x the positives). Rows of both terms are the
  anchors only (QDTrack's key positives); background RoIs are negatives of the anchors.
* :func:`sample_track_rois`: the RoIs of one image: GT boxes, jittered copies and background
  boxes (IoU < 0.3 with every GT; QDTrack samples dense proposals, a quarter positive).
* :class:`Tracker` (settings, a frozen dataclass) with :class:`TrackState`: per frame, QDTrack's
  ``QuasiDenseEmbedTracker`` procedure with MaskTrack-style cues:

  1. duplicates removed, in descending score: a detection whose box IoU with a kept
     higher-scored one exceeds ``nms_class_iou`` (``nms_backdrop_iou`` below the score gate
     ``obj_score_thresh``); with masks, a gated detection that keeps less than
     ``min_kept_fraction`` of its area once the kept higher-scored masks are painted over it,
     or whose mask IoU with one of them exceeds ``mask_iou_thresh`` (NMS at box IoU 0.6 lets
     two masks of one object through when their boxes differ); below the gate, a detection
     lying mostly under the painted masks (a part of a shown object) goes too
     (``paint_below_gate``: with an embedding that has not learnt to tell parts from wholes,
     such parts made backdrops that stole their object's track); masks may come on demand
     (:data:`MaskSource`): only the gated ones and those of the below-gate detections this
     rule reads are made (:attr:`Tracker.mask_score_thresh`);
  2. similarity of every remaining detection to the memory = live tracks + backdrops (the
     last ``backdrop_frames`` frames' untracked detections), by bi-directional softmax
     (``(softmax_rows + softmax_cols) / 2``) or cosine; optionally mixed with the box IoU
     between the detection and the track's constant-velocity prediction (``motion_weight``);
     entries of another category excluded (``match_classes``);
  3. greedy in descending score (or Hungarian): a detection whose most similar free entry is
     a backdrop stays unmatched (without backdrops a bi-softmax over one free track is 1
     whatever the appearance); a gated detection takes its track when the similarity passes
     ``match_thresh`` and the cosine ``min_cosine``; a detection below the gate whose best
     track passes ``nms_conf_thresh`` is suppressed (not output, not a backdrop);
  4. unmatched detections scoring ``init_score_thresh`` start tracks (QDTrack: birth 0.7,
     gate 0.5); the rest that do not overlap a higher-scored detection above
     ``nms_backdrop_iou`` become this frame's backdrops;
  5. matched tracks update their embedding (momentum) and velocity; a track not seen for
     more than ``keep_alive`` frames is dropped. The state is passed in and returned (it
     lives in the predictor).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
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
    "sample_track_rois",
    "Backdrops",
    "MaskSource",
    "Track",
    "TrackState",
    "Tracker",
]

_NO_MATCH = -1e4
_MASK_GRID = 256  # masks are compared on a grid of at most this many pixels a side
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
    anchors = pos.any(1)
    neg = (kv != rv) & usable & anchors[:, None]  # rows are anchors (QDTrack's key positives)
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


def sample_track_rois(
    gt_boxes: Tensor,
    gt_ids: Tensor,
    *,
    image_size: tuple[int, int],
    num_jitter: int = 4,
    neg_ratio: float = 1.0,
    pos_iou: float = 0.7,
    neg_iou: float = 0.3,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """RoIs for the quasi-dense loss of one image: the GT boxes, ``num_jitter`` jittered
    copies of each (positives, or ``IGNORE`` between the IoU thresholds) and background boxes
    (id -1, IoU < ``neg_iou`` with every GT box), ``neg_ratio`` times as many as the positives.

    QDTrack samples dense RPN proposals (a quarter positive); with an FCOS detector there are
    no training proposals, so the background is drawn directly: half of the candidates are
    hard negatives (a GT box moved by 0.6-1.5 of its size in a random direction and rescaled
    by 0.7-1.4: next to or partly over an object), half are boxes of GT-like sizes (0.5-2x)
    anywhere in the image. Candidates with a side under 2 pixels after clipping are dropped;
    fewer negatives come back only when the image has no room for them.

    -> rois (R, 4) float32 xyxy, ids (R,) int64 (the GT's id, -1 or ``IGNORE``)."""
    gt = gt_boxes.float()
    jit = jitter_boxes(gt, num=num_jitter, image_size=image_size, generator=generator)
    rois = torch.cat([gt, jit.to(gt.device)])
    ids = assign_track_ids(rois, gt, gt_ids, pos_iou=pos_iou, neg_iou=neg_iou)
    want = round(neg_ratio * int((ids >= 0).sum()))
    if want <= 0 or len(gt) == 0:
        return rois, ids
    h, w = image_size
    found: list[Tensor] = []
    for _ in range(4):  # rounds of 4x oversampling
        m = 2 * want
        src = gt.cpu()[torch.randint(len(gt), (2, m), generator=generator)]  # (2, m, 4)
        wh = (src[..., 2:] - src[..., :2]).clamp_min(2.0)
        ctr = (src[..., :2] + src[..., 2:]) / 2
        u = torch.rand(6, m, generator=generator)
        ang = u[0] * 2 * math.pi
        shift = (0.6 + 0.9 * u[1])[:, None] * torch.stack([ang.cos(), ang.sin()], 1) * wh[0]
        hard_wh = wh[0] * (0.7 + 0.7 * u[2:4].t())
        hard = torch.cat([ctr[0] + shift - hard_wh / 2, ctr[0] + shift + hard_wh / 2], 1)
        rnd_wh = wh[1] * (0.5 + 1.5 * u[4:6].t())
        lo = torch.rand(m, 2, generator=generator) * (torch.tensor([w, h]) - rnd_wh).clamp_min(0)
        cand = torch.cat([hard, torch.cat([lo, lo + rnd_wh], 1)])
        cand = torch.stack(
            [cand[:, 0].clamp(0, w), cand[:, 1].clamp(0, h), cand[:, 2].clamp(0, w),
             cand[:, 3].clamp(0, h)], 1,
        )  # fmt: skip
        big = ((cand[:, 2:] - cand[:, :2]) >= 2).all(1)
        cand = cand[big]
        if len(cand):
            cand = cand[box_iou(cand, gt.cpu()).max(1).values < neg_iou]
            found.append(cand[torch.randperm(len(cand), generator=generator)])
        if sum(len(f) for f in found) >= want:
            break
    neg = torch.cat(found)[:want].to(gt.device) if found else gt.new_zeros(0, 4)
    neg_ids = torch.full((len(neg),), -1, dtype=torch.long, device=ids.device)
    return torch.cat([rois, neg]), torch.cat([ids, neg_ids])


MaskSource = Callable[[list[int]], Tensor]
"""Masks on demand: detection indices -> their masks, bool (len, H, W) (see
:meth:`Tracker.update`)."""
MaskInput = Tensor | MaskSource | None


def _mask_getter(masks: MaskInput) -> MaskSource:
    if masks is None or callable(masks):
        return masks  # type: ignore[return-value]
    return lambda idx: masks[torch.as_tensor(idx, dtype=torch.long, device=masks.device)]


@dataclass
class Track:
    """One live track: ``embedding`` (D,), ``box`` (4,) xyxy, last seen at ``last_frame``;
    ``velocity`` (4,): box change per frame (None until the track has been matched once)."""

    id: int
    embedding: Tensor
    box: Tensor
    label: int
    score: float
    last_frame: int
    hits: int = 1
    velocity: Tensor | None = None

    def predicted_box(self, frame: int) -> Tensor:
        """The box extrapolated to ``frame`` at constant velocity."""
        if self.velocity is None:
            return self.box
        return self.box + self.velocity * (frame - self.last_frame)


@dataclass(frozen=True)
class Backdrops:
    """One frame's backdrops (QDTrack): detections that were neither matched, born nor
    suppressed, kept so the next frame's bi-softmax has negatives besides the tracks.
    ``embeddings`` (M, D) float32, ``boxes`` (M, 4), ``labels`` (M,)."""

    embeddings: Tensor
    boxes: Tensor
    labels: Tensor


@dataclass(frozen=True)
class TrackState:
    """Tracks by id, the next id to give, the index of the next frame and the backdrops of
    the last ``Tracker.backdrop_frames`` frames (oldest first)."""

    tracks: dict[int, Track] = field(default_factory=dict)
    next_id: int = 0
    frame: int = 0
    backdrops: tuple[Backdrops, ...] = ()


@dataclass(frozen=True, kw_only=True)
class Tracker:
    """Online association settings (QDTrack's ``QuasiDenseEmbedTracker`` + MaskTrack-style
    cues; see the module docstring for the procedure). Settings only: the state is passed in
    and returned. A frozen dataclass, so it is also a config section
    (:class:`~instseg.recipes.video_config.VideoTrainConfig` ``tracker``) and
    ``dataclasses.replace(tracker, ...)`` gives a variant."""

    similarity: Literal["bisoftmax", "cosine"] = "bisoftmax"  # QDTrack: bi-softmax
    # greedy: detections in descending score take their best memory entry (QDTrack);
    # hungarian: maximum total similarity over the pairs that pass the gates
    assignment: Literal["greedy", "hungarian"] = "greedy"
    match_thresh: float = 0.5  # minimum (combined) similarity of an accepted pair
    min_cosine: float = 0.2  # minimum cosine of an accepted pair (any similarity)
    init_score_thresh: float = 0.7  # birth: an unmatched detection needs this score
    obj_score_thresh: float = 0.5  # gate: only detections >= this continue a track
    keep_alive: int = 10  # a track unseen for more than this many frames is dropped
    embed_momentum: float = 0.8  # weight of the new embedding when a track is updated
    match_classes: bool = True  # category check: match only tracks/backdrops of the same label
    backdrop_frames: int = 1  # frames of backdrops kept (0: none)
    # a below-gate detection whose best match is a track with similarity > this is suppressed
    # (neither output nor backdrop)
    nms_conf_thresh: float = 0.5
    nms_class_iou: float = 0.7  # box IoU above which a gated detection is a duplicate
    nms_backdrop_iou: float = 0.3  # same for below-gate detections (and backdrop NMS)
    # masks given: a gated detection is a duplicate when its mask IoU with a kept higher-scored
    # one exceeds this (None: off) or it keeps < min_kept_fraction of its area once the kept
    # higher-scored masks are painted over it (0: off)
    mask_iou_thresh: float | None = 0.5
    min_kept_fraction: float = 0.5
    # the painting rule also drops below-gate detections (they paint nothing themselves):
    # parts of a shown object are neither backdrops nor bi-softmax competitors of its track
    paint_below_gate: bool = True
    # MaskTrack-style spatial cue: similarity = (1 - w) * appearance + w * IoU(detection box,
    # the track's constant-velocity prediction); 0 = appearance only
    motion_weight: float = 0.0
    velocity_momentum: float = 0.5  # weight of the newest box change in a track's velocity

    def __post_init__(self) -> None:
        if self.similarity not in ("bisoftmax", "cosine") or self.assignment not in (
            "greedy",
            "hungarian",
        ):
            raise ValueError(f"bad similarity/assignment: {self.similarity!r}, {self.assignment!r}")
        if not 0.0 <= self.motion_weight <= 1.0 or self.backdrop_frames < 0:
            raise ValueError(
                f"need motion_weight in [0, 1] and backdrop_frames >= 0, got "
                f"{self.motion_weight}, {self.backdrop_frames}"
            )

    @property
    def mask_score_thresh(self) -> float:
        """The lowest score whose mask this tracker can use: ``min(obj_score_thresh,
        init_score_thresh)``. A tracked detection scores at least this (a match needs the gate,
        a birth the birth score) and only gated detections' masks are painted or compared; so
        masks of lower-scored detections are never output nor painted.

        What lower-scored detections are used for: boxes and embeddings (box duplicate rule,
        suppression, the bi-softmax over the frame's detections, backdrops: no masks) and, with
        ``paint_below_gate``, their masks in one rule: a below-gate detection lying mostly under
        the painted gated masks is dropped. Given a :data:`MaskSource`, :meth:`update` asks
        only for the masks of the below-gate detections that reach that rule (survive the box
        rule against the kept detections) *and* whose box touches a painted pixel (in a few
        rounds, see :meth:`_deduplicate`): a detection whose box holds no
        painted pixel keeps all of its area whatever its mask, so its box suffices (exact for
        masks inside their boxes' pixels, as pasted masks are); a box that does touch painted
        pixels does not suffice (it may hold a part of the object or a separate one). So a
        caller can make masks for the detections scoring >= this threshold up front and the
        few others on demand with unchanged results
        (:meth:`~instseg.models.video.pcan.PCAN.predict_frame`)."""
        return min(self.obj_score_thresh, self.init_score_thresh)

    def update(
        self,
        state: TrackState,
        *,
        boxes: Tensor,
        scores: Tensor,
        labels: Tensor,
        embeddings: Tensor,
        masks: MaskInput = None,
    ) -> tuple[Tensor, TrackState]:
        """One frame: N detections (boxes (N, 4), scores (N,), labels (N,), embeddings (N, D),
        optional masks for the mask duplicate rules) -> (track ids (N,) int64, -1 = not
        tracked: duplicate, suppressed, backdrop or ignored), new state.

        ``masks``: bool (N, H, W), or a :data:`MaskSource` (a callable: list of detection
        indices -> their bool (len, H, W) masks) asked only for masks the rules may read (see
        :attr:`mask_score_thresh`); either gives the same result when every mask lies in its
        box's pixels."""
        n = len(boxes)
        ids = torch.full((n,), -1, dtype=torch.long)
        b, s = boxes.detach().float().cpu(), scores.detach().float().cpu()
        lab = labels.detach().cpu()
        valid = self._deduplicate(b, s, masks)
        tracks = dict(state.tracks)
        track_ids = list(tracks)
        pairs, suppressed = self._match(state, track_ids, valid, b, s, lab, embeddings)
        for d, t in pairs:
            ids[d] = track_ids[t]
        next_id = state.next_id
        for d in valid:
            if ids[d] < 0 and d not in suppressed and float(s[d]) >= self.init_score_thresh:
                ids[d], next_id = next_id, next_id + 1
        for d in torch.nonzero(ids >= 0).flatten().tolist():
            tid = int(ids[d])
            tracks[tid] = self._updated(
                tracks.get(tid), tid, state.frame, b[d], s[d], lab[d], embeddings[d]
            )
        tracks = {k: v for k, v in tracks.items() if state.frame - v.last_frame <= self.keep_alive}
        backdrops = self._backdrops(
            state, valid, ids, suppressed, b, lab, embeddings, box_iou(b, b)
        )
        new = TrackState(tracks=tracks, next_id=next_id, frame=state.frame + 1, backdrops=backdrops)
        return ids.to(boxes.device), new

    def similarity_matrix(self, det_embeds: Tensor, track_embeds: Tensor) -> tuple[Tensor, Tensor]:
        """(N, D), (T, D) -> (similarity (N, T), cosine (N, T)), float32. Bi-softmax:
        ``(softmax over the T entries + softmax over the N detections) / 2``."""
        d, t = det_embeds.float(), track_embeds.float().to(det_embeds.device)
        cos = F.normalize(d, dim=1) @ F.normalize(t, dim=1).t()
        if self.similarity == "cosine":
            return cos, cos
        sim = d @ t.t()
        return (sim.softmax(1) + sim.softmax(0)) / 2, cos

    # ------------------------------------------------------------ helpers

    def _deduplicate(self, boxes: Tensor, scores: Tensor, masks: MaskInput) -> list[int]:
        """Detections in descending score that survive QDTrack's box rules (IoU with a kept
        higher-scored detection above ``nms_class_iou`` / ``nms_backdrop_iou`` by gate) and,
        with masks, the mask rules (module docstring). Masks are compared on a grid of at most
        ``_MASK_GRID`` pixels a side (strided), so the cost does not grow with the frame.

        Masks read: every gated detection's (one request), then, with ``paint_below_gate`` and
        a painted mask, those of the below-gate detections that reach the painting rule. From
        a :data:`MaskSource` only those whose box touches a painted pixel are asked for (see
        :attr:`mask_score_thresh`), in rounds: a pass over the below-gate detections collects
        the missing masks taking their detections as kept, they are made in one request, and
        the pass is repeated until no mask is missing (a few requests; a detection taken as
        kept that was not lets later ones through); the last pass is the result, exactly that
        of reading every mask."""
        order = scores.argsort(descending=True, stable=True).tolist()
        if not order:
            return []
        iou = box_iou(boxes, boxes)
        gated = (scores >= self.obj_score_thresh).tolist()
        shown_idx = [d for d in order if gated[d]]  # the only masks that may be painted
        below = order[len(shown_idx) :]  # descending score: the gated ones come first
        flat: dict[int, Tensor] = {}  # detection -> its mask on the comparison grid
        grid: list[int] = []  # [step, full H, full W, grid H, grid W] once a mask was read
        use_masks = masks is not None and (
            self.mask_iou_thresh is not None or self.min_kept_fraction > 0
        )
        get = _mask_getter(masks)

        def fetch(idx: list[int]) -> Tensor:
            got = get(idx)
            h, w = got.shape[-2:]
            step = max(1, math.ceil(max(h, w) / _MASK_GRID))
            sub = got[:, ::step, ::step]
            grid[:] = [step, h, w, *sub.shape[-2:]]
            fl = sub.flatten(1).bool().cpu()
            flat.update(zip(idx, fl, strict=True))
            return fl

        if use_masks and shown_idx:
            fs = fetch(shown_idx).float()
            inter = fs @ fs.t()  # (G, G) pairwise intersections of the gated masks
            gated_area = fs.sum(1)
            pos = {d: k for k, d in enumerate(shown_idx)}
            free = torch.ones(fs.shape[1], dtype=torch.bool)  # not yet painted
        else:
            use_masks = False
        shown: list[int] = []  # kept gated detections with masks, in score order
        kept: list[int] = []
        for d in shown_idx:
            if kept and float(iou[d, kept].max()) > self.nms_class_iou:
                continue
            if use_masks and shown:
                a = float(gated_area[pos[d]])
                if a:
                    if int((flat[d] & free).sum()) < self.min_kept_fraction * a:
                        continue
                    if self.mask_iou_thresh is not None:
                        it = inter[pos[d], [pos[j] for j in shown]]
                        union = a + gated_area[[pos[j] for j in shown]] - it
                        if bool((it > self.mask_iou_thresh * union).any()):
                            continue
            if use_masks:
                free &= ~flat[d]
                shown.append(d)
            kept.append(d)
        paint = use_masks and bool(shown) and self.paint_below_gate
        on_demand = callable(masks)
        touches: dict[int, bool] = {}  # below-gate detection -> its box holds a painted pixel
        painted = ~free if paint else None

        if paint and not on_demand and below:
            fetch(below)  # given as a tensor: reading is free

        overlaps = (iou > self.nms_backdrop_iou).tolist()
        blocked_by_gated = [False] * len(order)
        for k in kept:
            blocked_by_gated = [x or y for x, y in zip(blocked_by_gated, overlaps[k], strict=True)]

        def below_pass(missing: list[int]) -> list[int]:
            """The kept below-gate detections; a mask not fetched yet that the painting rule
            must read is appended to ``missing`` and its detection taken as kept."""
            out: list[int] = []
            blocked = list(blocked_by_gated)  # box IoU > nms_backdrop_iou with a kept one
            for d in below:
                if blocked[d]:
                    continue
                if paint and d not in flat:
                    if d not in touches:
                        touches[d] = self._touches(boxes[d], painted, grid)
                    if touches[d]:
                        missing.append(d)  # taken as kept this pass
                    # else kept: its whole area is free whatever its mask
                elif paint:
                    a = float(flat[d].sum())
                    if a and int((flat[d] & free).sum()) < self.min_kept_fraction * a:
                        continue
                out.append(d)
                blocked = [x or y for x, y in zip(blocked, overlaps[d], strict=True)]
            return out

        while True:
            missing: list[int] = []
            kept_below = below_pass(missing)
            if not missing:
                return kept + kept_below
            fetch(missing)

    def _touches(self, box: Tensor, painted: Tensor, grid: list[int]) -> bool:
        """Whether the pixels a mask inside ``box`` may cover (``floor(x0)..ceil(x1)``, one
        more each way) hold a painted pixel of the comparison grid. A detection whose box
        does not keeps all of its area whatever its mask: not covered by the painting rule
        (for ``min_kept_fraction <= 1``)."""
        if self.min_kept_fraction <= 0:
            return False
        if self.min_kept_fraction > 1:
            return True
        step, h, w, gh, gw = grid
        x0, y0, x1, y1 = box.tolist()
        ix0, iy0 = max(math.floor(x0) - 1, 0), max(math.floor(y0) - 1, 0)
        ix1, iy1 = min(math.ceil(x1) + 1, w), min(math.ceil(y1) + 1, h)
        # grid column k samples pixel column k * step: those with ix0 <= k * step < ix1
        kx0, kx1, ky0, ky1 = (-(-v // step) for v in (ix0, ix1, iy0, iy1))
        if kx1 <= kx0 or ky1 <= ky0:
            return False
        return bool(painted.view(gh, gw)[ky0:ky1, kx0:kx1].any())

    def _match(
        self,
        state: TrackState,
        track_ids: Sequence[int],
        valid: list[int],
        boxes: Tensor,
        scores: Tensor,
        labels: Tensor,
        embeddings: Tensor,
    ) -> tuple[list[tuple[int, int]], set[int]]:
        """-> (pairs (detection, track column)), suppressed detections."""
        nt = len(track_ids)
        if not valid or not nt:
            return [], set()
        tracks = [state.tracks[i] for i in track_ids]
        bd = state.backdrops if self.backdrop_frames else ()
        mem = torch.cat(
            [torch.stack([t.embedding for t in tracks]).to(embeddings.device)]
            + [x.embeddings.to(embeddings.device) for x in bd]
        )
        sim, cos = (x.cpu() for x in self.similarity_matrix(embeddings[valid], mem))
        if self.motion_weight > 0:
            mem_boxes = torch.cat(
                [torch.stack([t.predicted_box(state.frame).cpu() for t in tracks])]
                + [x.boxes.float().cpu() for x in bd]
            )
            w = self.motion_weight
            sim = (1 - w) * sim + w * box_iou(boxes[valid], mem_boxes)
        if self.match_classes:
            mem_labels = torch.cat(
                [torch.as_tensor([t.label for t in tracks])] + [x.labels.cpu() for x in bd]
            )
            sim = torch.where(
                labels[valid][:, None] == mem_labels[None, :], sim, torch.full_like(sim, _NO_MATCH)
            )
        ok = (sim[:, :nt] >= self.match_thresh) & (cos[:, :nt] >= self.min_cosine)
        gated = (scores[valid] >= self.obj_score_thresh).tolist()
        if self.assignment == "hungarian":
            return self._hungarian(valid, sim, ok, gated, nt)
        pairs, suppressed = [], set()
        taken = torch.zeros(sim.shape[1], dtype=torch.bool)
        for r, d in enumerate(valid):  # descending score
            row = torch.where(taken, torch.full_like(sim[r], _NO_MATCH), sim[r])
            c = int(row.argmax())
            if c >= nt or taken[c]:  # a backdrop is most similar (background), or none is free
                continue
            if gated[r]:
                if ok[r, c]:
                    pairs.append((d, c))
                    taken[c] = True
            elif float(row[c]) > self.nms_conf_thresh:
                suppressed.add(d)
        return pairs, suppressed

    def _hungarian(
        self, valid: list[int], sim: Tensor, ok: Tensor, gated: list[bool], nt: int
    ) -> tuple[list[tuple[int, int]], set[int]]:
        """Maximum total similarity over the gated detections whose most similar entry is a
        track; below-gate detections are suppressed as in the greedy pass (no track taken)."""
        best = sim.argmax(1)
        to_track = (best < nt).tolist()
        suppressed = {
            d
            for r, d in enumerate(valid)
            if not gated[r] and to_track[r] and float(sim[r].max()) > self.nms_conf_thresh
        }
        rows = [r for r in range(len(valid)) if gated[r] and to_track[r]]
        if not rows:
            return [], suppressed
        sub = torch.where(ok[rows], sim[rows, :nt], torch.full_like(sim[rows, :nt], _NO_MATCH))
        rr, cc = linear_sum_assignment(sub.numpy(), maximize=True)
        pairs = [(valid[rows[r]], int(c)) for r, c in zip(rr, cc, strict=True) if ok[rows[r], c]]
        return pairs, suppressed

    def _backdrops(
        self,
        state: TrackState,
        valid: list[int],
        ids: Tensor,
        suppressed: set[int],
        boxes: Tensor,
        labels: Tensor,
        embeddings: Tensor,
        iou: Tensor,
    ) -> tuple[Backdrops, ...]:
        """This frame's untracked detections that are not suppressed and do not overlap a
        higher-scored valid detection above ``nms_backdrop_iou``, appended to the kept ones."""
        if not self.backdrop_frames:
            return ()
        picked = []
        for i, d in enumerate(valid):
            if int(ids[d]) >= 0 or d in suppressed:
                continue
            if i and float(iou[d, valid[:i]].max()) > self.nms_backdrop_iou:
                continue
            picked.append(d)
        idx = torch.as_tensor(picked, dtype=torch.long)
        frame = Backdrops(
            embeddings=embeddings.detach().float()[idx.to(embeddings.device)],
            boxes=boxes[idx],
            labels=labels[idx],
        )
        return (*state.backdrops, frame)[-self.backdrop_frames :]

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
        emb, box = emb.detach().float(), box.detach().float()
        if old is None:
            return Track(
                id=tid,
                embedding=emb,
                box=box,
                label=int(label),
                score=float(score),
                last_frame=frame,
            )
        m, vm = self.embed_momentum, self.velocity_momentum
        step = (box - old.box) / max(frame - old.last_frame, 1)
        velocity = step if old.velocity is None else (1 - vm) * old.velocity + vm * step
        return replace(
            old,
            embedding=(1 - m) * old.embedding + m * emb,
            box=box,
            label=int(label),
            score=float(score),
            last_frame=frame,
            hits=old.hits + 1,
            velocity=velocity,
        )
