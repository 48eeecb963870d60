"""PCAN: Prototypical Cross-Attention Network for video instance segmentation / MOTS
(survey ch. 5.1-5.3, Fig. 5.1).

An image :class:`~instseg.models.segmenter.InstanceSegmenter` is extended, not copied:

1. FPN features of the current frame (the segmenter's own backbone);
2. frame-level PCAM (:class:`MultiLevelPCAM`) reads the prototype memory of past frames and
   fuses it into P3-P5;
3. the segmenter's detector and mask head run on the fused features;
4. a QDTrack association head embeds each detection (RoIAlign 7x7 on P3-P5) and the
   :class:`Tracker` links them to tracks;
5. instance-level PCAM: each tracked object's foreground/background prototypes (RoIAlign 14x14
   on the fused features) are updated with momentum (Eq. 5.8) and the TSM refines its mask.

Training (``loss``) uses (key, reference) frame pairs of one video (:class:`ClipBatch`): the
reference frame fills the memory (one frame of prototypes) for the key frame, after the
optional ``memory`` frames (``data.memory_frames``; read without gradients), so the key frame
learns to read a memory of up to 1 + memory_frames frames; the image losses are computed on
the key frame's fused features; the quasi-dense tracking loss on RoIs jittered around the
ground truth of both frames plus background RoIs (:func:`sample_track_rois`); the TSM loss
refines the reference mask of each object present in both frames (projected into its key-frame
box: the propagated "initial mask") towards the key-frame mask, attending to prototypes fitted
on the reference frame.

Inference (``predict_frame``) is online, one frame at a time; everything that persists between
frames is in :class:`VideoState` (the model holds none).

What PCAN needs from the image model (:class:`FeatureSegmenter`): ``features(images) ->
(features, padded_size)``, ``loss_from_features(features, padded_size, batch)`` and
``predict_from_features(features, padded_size, batch, *, return_head_outputs)``;
``InstanceSegmenter`` provides all three.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import Tensor, nn
from torchvision.ops import MultiScaleRoIAlign, roi_align

from instseg.models.video.cross_attention import MultiLevelPCAM, PrototypeMemory
from instseg.models.video.instance_prototypes import (
    InstancePrototypeAttention,
    InstancePrototypes,
    TemporalSegmentationModule,
    UpdateMode,
    tsm_loss,
    update_instance_prototypes,
)
from instseg.models.video.tracker import (
    Tracker,
    TrackHead,
    TrackState,
    quasi_dense_loss,
    sample_track_rois,
)
from instseg.structures import Instances
from instseg.structures.batch import Batch, ClipBatch

__all__ = ["PCAN", "ClipBatch", "VideoState", "FeatureSegmenter"]

Features = dict[str, Tensor]


class FeatureSegmenter(Protocol):
    """The image-model interface PCAN runs on (features computed once, then fused)."""

    def features(self, images: Tensor) -> tuple[Features, tuple[int, int]]:
        """(B, 3, H, W) raw 0..255 RGB -> (FPN features, padded input size (Hp, Wp))."""

    def loss_from_features(
        self, features: Features, padded: tuple[int, int], batch: Batch
    ) -> dict[str, Tensor]:
        """Detector + mask head losses on given features."""

    def predict_from_features(
        self,
        features: Features,
        padded: tuple[int, int],
        batch: Batch,
        *,
        return_head_outputs: bool = False,
    ) -> list[Instances]:
        """B x Instances (boxes, labels, scores, masks bool (N, h, w)); ``mask_logits``
        (N, K, M, M) when available."""


@dataclass(frozen=True)
class VideoState:
    """Everything PCAN carries between frames of one video."""

    memory: PrototypeMemory
    tracks: TrackState = field(default_factory=TrackState)
    instance_protos: dict[int, InstancePrototypes] = field(default_factory=dict)


class PCAN(nn.Module):
    """Args:
    segmenter: the image model (a :class:`FeatureSegmenter`, e.g. ``InstanceSegmenter``);
        registered as a submodule when it is one.
    pcam: frame-level PCAM over some FPN levels.
    track_head: association embedding head on 7x7 RoIs pooled from ``track_levels``.
    tracker: association settings (stateless).
    instance_attention, tsm: the instance-level module and TSM (both or neither).
    memory_length: T, frames of prototypes kept (paper: up to 32).
    instance_update / instance_momentum: Eq. 5.8 mode and lambda (paper: 0.2).
    num_jitter: jittered RoIs per GT box for the tracking loss.
    track_neg_ratio: background RoIs (IoU < 0.3 with every GT box) per positive RoI in the
        tracking loss (:func:`sample_track_rois`; 0: GT boxes and jitters only).
    detach_reference: run the reference frame's backbone without gradients.
    """

    def __init__(
        self,
        *,
        segmenter: Any,
        pcam: MultiLevelPCAM,
        track_head: TrackHead,
        tracker: Tracker,
        instance_attention: InstancePrototypeAttention | None = None,
        tsm: TemporalSegmentationModule | None = None,
        track_levels: Sequence[str] = ("p3", "p4", "p5"),
        mask_roi_size: int = 14,
        memory_length: int = 8,
        instance_update: UpdateMode = "momentum",
        instance_momentum: float = 0.2,
        num_jitter: int = 4,
        track_neg_ratio: float = 1.0,
        detach_reference: bool = True,
    ) -> None:
        super().__init__()
        missing = [
            m
            for m in ("features", "loss_from_features", "predict_from_features")
            if not callable(getattr(segmenter, m, None))
        ]
        if missing:
            raise TypeError(f"PCAN segmenter lacks {missing} (InstanceSegmenter provides them)")
        if (instance_attention is None) != (tsm is None):
            raise ValueError("give both instance_attention and tsm, or neither")
        self.segmenter = segmenter
        self.pcam, self.track_head, self.tracker = pcam, track_head, tracker
        self.instance_attention, self.tsm = instance_attention, tsm
        self.track_pool = MultiScaleRoIAlign(list(track_levels), output_size=7, sampling_ratio=2)
        self.inst_pool = MultiScaleRoIAlign(
            list(track_levels), output_size=mask_roi_size, sampling_ratio=2
        )
        self.memory_length = memory_length
        self.instance_update, self.instance_momentum = instance_update, instance_momentum
        self.num_jitter, self.detach_reference = num_jitter, detach_reference
        self.track_neg_ratio = track_neg_ratio

    def init_state(self) -> VideoState:
        return VideoState(memory=PrototypeMemory(capacity=self.memory_length))

    # ------------------------------------------------------------ training

    def loss(self, clip: ClipBatch) -> dict[str, Tensor]:
        """-> the segmenter's losses on the key frames + ``loss_track``, ``loss_track_aux``
        (+ ``loss_tsm`` with the instance-level module), float32 scalars."""
        key, ref = clip.key, clip.reference
        if key.targets is None or ref.targets is None:
            raise ValueError("PCAN.loss needs targets (with track_ids) on both frames")
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.detach_reference):
            ref_feats, ref_pad = self.segmenter.features(ref.images)
        key_feats, key_pad = self.segmenter.features(key.images)
        memory = PrototypeMemory(capacity=self.memory_length)
        with torch.no_grad():
            for frame in clip.memory:  # oldest first
                _, memory = self.pcam(self.segmenter.features(frame.images)[0], memory)
        ref_fused, memory = self.pcam(ref_feats, memory)
        key_fused, _ = self.pcam(key_feats, memory)
        losses = dict(self.segmenter.loss_from_features(key_fused, key_pad, key))
        losses.update(self._track_loss(key_fused, key_pad, key, ref_fused, ref_pad, ref))
        if self.tsm is not None:
            losses["loss_tsm"] = self._tsm_loss(key_fused, key_pad, key, ref_fused, ref_pad, ref)
        return {k: v.float() for k, v in losses.items()}

    def _track_loss(
        self,
        kf: Features,
        kpad: tuple[int, int],
        key: Batch,
        rf: Features,
        rpad: tuple[int, int],
        ref: Batch,
    ) -> dict[str, Tensor]:
        gen = torch.Generator().manual_seed(int(torch.randint(1 << 30, ())))  # global RNG
        k_rois, k_ids = self._sample_rois(key, gen)
        r_rois, r_ids = self._sample_rois(ref, gen)
        k_emb = self.track_head(self.track_pool(kf, k_rois, [kpad] * len(k_rois)))
        r_emb = self.track_head(self.track_pool(rf, r_rois, [rpad] * len(r_rois)))
        parts = []
        for ke, re_, ki, ri in zip(
            k_emb.split([len(r) for r in k_rois]),
            r_emb.split([len(r) for r in r_rois]),
            k_ids,
            r_ids,
            strict=True,
        ):
            parts.append(quasi_dense_loss(ke, re_, ki, ri))
        return {n: torch.stack([p[n] for p in parts]).mean() for n in parts[0]}

    def _sample_rois(self, batch: Batch, gen: torch.Generator) -> tuple[list[Tensor], list[Tensor]]:
        rois, ids = [], []
        for t, size in zip(batch.targets or [], batch.image_sizes, strict=True):
            if t.track_ids is None:
                raise ValueError("PCAN.loss: targets need track_ids")
            boxes, track_ids = sample_track_rois(
                t.boxes, t.track_ids, image_size=size, num_jitter=self.num_jitter,
                neg_ratio=self.track_neg_ratio, generator=gen,
            )  # fmt: skip
            rois.append(boxes)
            ids.append(track_ids)
        return rois, ids

    def _tsm_loss(
        self,
        kf: Features,
        kpad: tuple[int, int],
        key: Batch,
        rf: Features,
        rpad: tuple[int, int],
        ref: Batch,
    ) -> Tensor:
        assert self.instance_attention is not None and self.tsm is not None
        kb, rb, km, rm = [], [], [], []
        for kt, rt in zip(key.targets or [], ref.targets or [], strict=True):
            if kt.masks is None or rt.masks is None or kt.track_ids is None or rt.track_ids is None:
                raise ValueError("PCAN.loss with a TSM needs masks and track_ids on both frames")
            common = kt.track_ids[:, None] == rt.track_ids[None, :]
            ki, ri = torch.nonzero(common, as_tuple=True)
            kb.append(kt.boxes[ki].float())
            rb.append(rt.boxes[ri].float())
            km.append((kt.masks[ki], kb[-1]))
            rm.append((rt.masks[ri], rb[-1]))
        if sum(len(b) for b in kb) == 0:  # no object in both frames
            return sum(v.sum() for v in kf.values()) * 0.0
        size = self.inst_pool.output_size[0]
        k_roi = self.inst_pool(kf, kb, [kpad] * len(kb))
        r_roi = self.inst_pool(rf, rb, [rpad] * len(rb))
        ref_small = _crop_masks(rm, size)
        initial = _crop_masks(rm, 2 * size)  # propagated mask, box-normalised
        target = _crop_masks(km, 2 * size)
        logits = self._refine(
            k_roi, _prob_logits(initial), prev=self.instance_attention.fit(r_roi, ref_small)
        )[0]
        return tsm_loss(logits, target)

    # ------------------------------------------------------------ inference

    @torch.no_grad()
    def predict_frame(
        self, frame: Batch, state: VideoState, *, tracker: Tracker | None = None
    ) -> tuple[Instances, VideoState]:
        """One frame (batch of 1) -> (Instances with ``track_ids`` (only tracked detections),
        the next state). Masks are bool (N, h, w) at ``frame.image_sizes[0]``. ``tracker``:
        association settings for this call (default: the model's ``tracker``); the mask-head
        masks go to it for the duplicate rules."""
        if len(frame) != 1:
            raise ValueError(f"predict_frame takes one frame, got a batch of {len(frame)}")
        feats, pad = self.segmenter.features(frame.images)
        fused, memory = self.pcam(feats, state.memory)
        det = self.segmenter.predict_from_features(fused, pad, frame, return_head_outputs=True)[0]
        emb = self.track_head(self.track_pool(fused, [det.boxes.float()], [pad]))
        ids, tracks = (tracker or self.tracker).update(
            state.tracks, boxes=det.boxes, scores=det.scores, labels=det.labels, embeddings=emb,
            masks=det.masks,
        )  # fmt: skip
        keep = ids >= 0
        det, ids = det[keep], ids[keep]
        protos = {k: v for k, v in state.instance_protos.items() if k in tracks.tracks}
        if self.tsm is not None and len(det) and det.masks is not None:
            det, protos = self._refine_tracked(fused, pad, det, ids, protos)
        out = det.replace(track_ids=ids, mask_logits=None)  # logits served the TSM only
        return out, VideoState(memory=memory, tracks=tracks, instance_protos=protos)

    def _refine_tracked(
        self,
        fused: Features,
        pad: tuple[int, int],
        det: Instances,
        ids: Tensor,
        protos: dict[int, InstancePrototypes],
    ) -> tuple[Instances, dict[int, InstancePrototypes]]:
        from instseg.models.segmenter import paste_masks

        size = self.inst_pool.output_size[0]
        boxes = det.boxes.float()
        roi = self.inst_pool(fused, [boxes], [pad])
        initial = _initial_logits(det, 2 * size)
        new = dict(protos)
        refined = torch.empty_like(initial)
        old = [i for i, t in enumerate(ids.tolist()) if t in protos]
        fresh = [i for i, t in enumerate(ids.tolist()) if t not in protos]
        for group, prev in ((old, [protos[int(ids[i])] for i in old]), (fresh, None)):
            if not group:
                continue
            idx = torch.as_tensor(group, device=roi.device)
            p = InstancePrototypes.cat(prev) if prev else None
            refined[idx], acc = self._refine(roi[idx], initial[idx], prev=p)
            for j, i in enumerate(group):
                new[int(ids[i])] = acc[j]
        thresh = float(getattr(self.segmenter, "mask_thresh", 0.5))
        masks = paste_masks(refined[:, 0].sigmoid(), boxes, det.image_size, threshold=thresh)
        return det.replace(masks=masks), new

    def _refine(
        self, roi: Tensor, initial_logits: Tensor, *, prev: InstancePrototypes | None
    ) -> tuple[Tensor, InstancePrototypes]:
        """Fit this frame's prototypes from the initial mask (EM initialised from ``prev``),
        update (Eq. 5.8), attend, TSM. -> (refined logits (M, 1, 2S, 2S), accumulated protos)."""
        assert self.instance_attention is not None and self.tsm is not None
        small = torch.nn.functional.interpolate(
            initial_logits.sigmoid(), size=roi.shape[-2:], mode="bilinear", align_corners=False
        )[:, 0]
        cur = self.instance_attention.fit(roi, small, init=prev)
        acc = update_instance_prototypes(
            prev, cur, mode=self.instance_update, momentum=self.instance_momentum
        )
        attn = self.instance_attention.attend(roi, acc)
        return self.tsm(roi, initial_logits, attn), acc


# ---------------------------------------------------------------- helpers


def _crop_masks(items: Sequence[tuple[Tensor, Tensor]], size: int) -> Tensor:
    """[(masks (M_b, H, W), boxes (M_b, 4)) per image, mask i cropped by box i] ->
    (sum M_b, size, size) float RoI crops."""
    out = []
    for masks, boxes in items:
        if len(boxes) == 0:
            continue
        out.append(_roi_crop(masks, boxes, size))
    if not out:
        return torch.zeros(0, size, size)
    return torch.cat(out)


def _roi_crop(masks: Tensor, boxes: Tensor, size: int) -> Tensor:
    """masks (M, H, W) (one per box) -> (M, size, size) float in [0, 1]."""
    rois = torch.cat(
        [
            torch.arange(len(boxes), device=boxes.device, dtype=torch.float32)[:, None],
            boxes.float(),
        ],
        1,
    )
    src = masks.float()[:, None].to(boxes.device)
    return roi_align(src, rois, (size, size), 1.0, sampling_ratio=0, aligned=True)[:, 0]


def _prob_logits(p: Tensor, eps: float = 0.02) -> Tensor:
    """(M, S, S) probabilities -> (M, 1, S, S) clamped logits."""
    return torch.logit(p.clamp(eps, 1 - eps))[:, None]


def _initial_logits(det: Instances, size: int) -> Tensor:
    """(N, 1, size, size) initial mask logits: the mask head's logits of the predicted class
    (``mask_logits``) when available, else the pasted mask cropped back to the box."""
    logits = det.mask_logits
    if logits is not None and logits.shape[-1] == size:
        ch = det.labels if logits.shape[1] > 1 else torch.zeros_like(det.labels)
        return logits[torch.arange(len(det), device=logits.device), ch][:, None].float()
    assert det.masks is not None
    return _prob_logits(_roi_crop(det.masks, det.boxes, size))
