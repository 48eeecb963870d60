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
learns to read a memory of up to 1 + memory_frames frames (the recipe draws them all from the
key's past, in time order: memory frames, reference, key); the image losses are computed on
the key frame's fused features; the quasi-dense tracking loss on RoIs jittered around the
ground truth of both frames plus background RoIs (:func:`sample_track_rois`). The TSM loss runs
inference's instance-level pipeline over the tube (memory frames, reference, key): in each
past frame every key object present there fits prototypes on the *mask head's own* (detached)
prediction at its GT box, EM-initialised from and accumulated into its prototypes by Eq. 5.8
(in the graph); on the key frame the same is done once more and the TSM refines the mask
head's prediction towards the key-frame GT mask (objects not seen before start fresh, as a new
track does). Segmenters without ``mask_head`` / ``mask_roi_pool`` fall back to ground-truth
masks (the reference's, projected into the key box, as the initial mask).

Instance RoIs (``instance_rois``): ``"mask"`` (default) pools them with the segmenter's own
mask RoI pooling (the levels, e.g. P2-P5, and pixel model the mask head reads, so the TSM sees
the features the initial mask came from); ``"track"``: MultiScaleRoIAlign on the track levels
P3-P5, what files trained before this option used (``meta.training`` without
``instance_rois``, see :func:`~instseg.inference.video_predictor.load_video_model`).

Inference (``predict_frame``) is online, one frame at a time; everything that persists between
frames is in :class:`VideoState` (the model holds none). The mask head and pasting run only for
the detections whose masks the tracker can use (mask gating, see ``predict_frame``).

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
import torch.nn.functional as F
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
    instance_rois: ``"mask"`` (the segmenter's ``mask_roi_pool``, when it has one) or
        ``"track"`` (``track_levels``, legacy) for the instance prototypes and the TSM.
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
        instance_rois: str = "mask",
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
        self.instance_rois = instance_rois

    @property
    def instance_rois(self) -> str:
        """``"mask"`` or ``"track"``: where instance RoIs are pooled (see the class)."""
        return self._instance_rois

    @instance_rois.setter
    def instance_rois(self, value: str) -> None:
        if value not in ("mask", "track"):
            raise ValueError(f"instance_rois must be 'mask' or 'track', got {value!r}")
        self._instance_rois = value

    def _inst_rois(self, feats: Features, boxes: list[Tensor], pad: tuple[int, int]) -> Tensor:
        """Instance RoI features (sum M_b, C, S, S) of per-image boxes (M_b, 4)."""
        pool = getattr(self.segmenter, "mask_roi_pool", None)
        if self.instance_rois == "mask" and pool is not None:
            return pool(feats, boxes, [pad] * len(boxes))
        return self.inst_pool(feats, boxes, [pad] * len(boxes))

    def _head_logits(
        self, feats: Features, pad: tuple[int, int], boxes: list[Tensor], labels: list[Tensor]
    ) -> Tensor | None:
        """The mask head's own logits of each box's class, detached, in eval mode (as at
        inference): (sum M_b, 1, M, M); None for a segmenter without ``mask_head`` /
        ``mask_roi_pool``."""
        head = getattr(self.segmenter, "mask_head", None)
        pool = getattr(self.segmenter, "mask_roi_pool", None)
        if head is None or pool is None:
            return None
        was = head.training
        try:
            head.eval()
            with torch.no_grad():
                logits = head(pool(feats, boxes, [pad] * len(boxes)))["mask"]
        finally:
            head.train(was)
        lab = torch.cat(labels).to(logits.device)
        ch = lab if logits.shape[1] > 1 else torch.zeros_like(lab)
        return logits[torch.arange(len(lab), device=logits.device), ch][:, None].float()

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
        past: list[tuple[Features, tuple[int, int], Batch]] = []
        with torch.no_grad():
            for frame in clip.memory:  # oldest first
                feats, pad = self.segmenter.features(frame.images)
                fused, memory = self.pcam(feats, memory)
                past.append((fused, pad, frame))
        ref_fused, memory = self.pcam(ref_feats, memory)
        key_fused, _ = self.pcam(key_feats, memory)
        losses = dict(self.segmenter.loss_from_features(key_fused, key_pad, key))
        losses.update(self._track_loss(key_fused, key_pad, key, ref_fused, ref_pad, ref))
        if self.tsm is not None:
            past.append((ref_fused, ref_pad, ref))
            losses["loss_tsm"] = self._tsm_loss(past, (key_fused, key_pad, key))
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
        past: list[tuple[Features, tuple[int, int], Batch]],
        key: tuple[Features, tuple[int, int], Batch],
    ) -> Tensor:
        """Instance prototypes over the tube ``past`` (oldest first; fused features, padded
        size, batch with targets) + ``key``, then the TSM loss on the key frame (see the module
        docstring)."""
        assert self.instance_attention is not None and self.tsm is not None
        kf, kpad, kb = key
        targets = _checked_targets(kb)
        boxes = [t.boxes.float() for t in targets]
        ids = [t.track_ids for t in targets]
        if sum(len(b) for b in boxes) == 0:  # no object in the key frames
            return sum(v.sum() for v in kf.values()) * 0.0
        offsets = [0]
        for b in boxes:
            offsets.append(offsets[-1] + len(b))
        acc: list[InstancePrototypes | None] = [None] * offsets[-1]
        for feats, pad, batch in past:
            ft = _checked_targets(batch)
            fb, fl, fm, idx = [], [], [], []
            for b, (t, kid) in enumerate(zip(ft, ids, strict=True)):
                ki, fi = torch.nonzero(kid[:, None] == t.track_ids[None, :], as_tuple=True)
                fb.append(t.boxes[fi].float())
                fl.append(t.labels[fi])
                fm.append(t.masks[fi])
                idx += [offsets[b] + int(i) for i in ki]
            if not idx:
                continue
            roi = self._inst_rois(feats, fb, pad)
            init = self._head_logits(feats, pad, fb, fl)
            if init is None:  # no mask head: the frame's GT masks
                init = _prob_logits(_crop_masks(list(zip(fm, fb, strict=True)), roi.shape[-1]))
            small = F.interpolate(
                init.sigmoid(), size=roi.shape[-2:], mode="bilinear", align_corners=False
            )[:, 0]
            for group in _seen_groups(idx, acc):
                g = torch.as_tensor(group, device=roi.device)
                prev = _cat_protos([acc[idx[i]] for i in group])
                cur = self.instance_attention.fit(roi[g], small[g], init=prev)
                new = update_instance_prototypes(
                    prev, cur, mode=self.instance_update, momentum=self.instance_momentum
                )
                for j, i in enumerate(group):
                    acc[idx[i]] = new[j]
        k_roi = self._inst_rois(kf, boxes, kpad)
        size = 2 * k_roi.shape[-1]
        initial = self._head_logits(kf, kpad, boxes, [t.labels for t in targets])
        if initial is None:
            initial = self._fallback_initial(past[-1][2], kb, size) if past else None
        if initial is None:
            initial = torch.zeros(offsets[-1], 1, size, size)
        initial = initial.to(k_roi.device)
        if initial.shape[-1] != size:  # a head whose grid is not 2S: resample its logits
            initial = F.interpolate(
                initial, size=(size, size), mode="bilinear", align_corners=False
            )
        target = _crop_masks([(t.masks, bx) for t, bx in zip(targets, boxes, strict=True)], size)
        logits = torch.empty_like(initial)
        order = list(range(len(acc)))
        for group in _seen_groups(order, acc):
            g = torch.as_tensor(group, device=k_roi.device)
            logits = logits.index_put(
                (g,),
                self._refine(k_roi[g], initial[g], prev=_cat_protos([acc[i] for i in group]))[0],
            )
        return tsm_loss(logits, target.to(logits.device))

    def _fallback_initial(self, ref: Batch, key: Batch, size: int) -> Tensor:
        """Without a mask head: the reference GT mask of each key object projected into its
        key box (0.5 where the object is not in the reference), (M, 1, size, size) logits."""
        out = []
        for kt, rt in zip(_checked_targets(key), _checked_targets(ref), strict=True):
            crop = torch.full((len(kt.boxes), size, size), 0.5)
            common = kt.track_ids[:, None] == rt.track_ids[None, :]
            ki, ri = torch.nonzero(common, as_tuple=True)
            if len(ki):
                crop[ki] = _roi_crop(rt.masks[ri], kt.boxes[ki].float(), size).cpu()
            out.append(crop)
        return _prob_logits(torch.cat(out))

    # ------------------------------------------------------------ inference

    @torch.no_grad()
    def predict_frame(
        self,
        frame: Batch,
        state: VideoState,
        *,
        tracker: Tracker | None = None,
        mask_score: float | None = None,
    ) -> tuple[Instances, VideoState]:
        """One frame (batch of 1) -> (Instances with ``track_ids`` (only tracked detections),
        the next state). Masks are bool (N, h, w) at ``frame.image_sizes[0]``. ``tracker``:
        association settings for this call (default: the model's ``tracker``); the mask-head
        masks go to it for the duplicate rules.

        Mask gating: the detector keeps every box above the segmenter's ``score_thresh``
        (0.05, up to 100) and the tracker needs all of them (boxes and embeddings, see
        :attr:`Tracker.mask_score_thresh <instseg.models.video.tracker.Tracker.
        mask_score_thresh>`), but it outputs and paints only the masks of detections scoring at
        least ``tracker.mask_score_thresh`` (min of gate and birth score). So the mask head
        and pasting run first for those; the tracker then asks (a :data:`~instseg.models.video.
        tracker.MaskSource`) for the few lower-scored masks its ``paint_below_gate`` rule reads,
        made on demand. The tracked outputs and the tracker's state are those of running the
        mask head on every detection (identical on the shipped model; the head now runs on
        fewer RoIs per call, which could in principle change a logit's last bit). ``mask_score``
        replaces the up-front threshold (a speed setting: masks asked for later are still
        made); ``0`` runs the segmenter's own ``predict_from_features`` on every detection, as
        before gating. Segmenters without ``detector`` / ``mask_head`` / ``mask_roi_pool``, or
        with ``fixed_num_detections``, always take that path."""
        if len(frame) != 1:
            raise ValueError(f"predict_frame takes one frame, got a batch of {len(frame)}")
        tracker = tracker or self.tracker
        thresh = tracker.mask_score_thresh if mask_score is None else float(mask_score)
        feats, pad = self.segmenter.features(frame.images)
        fused, memory = self.pcam(feats, state.memory)
        lazy = _FrameMasks.detect(self.segmenter, fused, pad, frame) if thresh > 0 else None
        if lazy is None:
            dets = self.segmenter.predict_from_features(fused, pad, frame, return_head_outputs=True)
            det = dets[0]
        else:
            det = lazy.detections
            lazy(torch.nonzero(det.scores >= thresh).flatten().tolist())
        emb = self.track_head(self.track_pool(fused, [det.boxes.float()], [pad]))
        ids, tracks = tracker.update(
            state.tracks, boxes=det.boxes, scores=det.scores, labels=det.labels, embeddings=emb,
            masks=det.masks if lazy is None else lazy,
        )  # fmt: skip
        keep = ids >= 0
        det = det[keep] if lazy is None else lazy.select(torch.nonzero(keep).flatten().tolist())
        ids = ids[keep]
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

        boxes = det.boxes.float()
        roi = self._inst_rois(fused, [boxes], pad)
        initial = _initial_logits(det, 2 * roi.shape[-1])
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
        small = F.interpolate(
            initial_logits.sigmoid(), size=roi.shape[-2:], mode="bilinear", align_corners=False
        )[:, 0]
        cur = self.instance_attention.fit(roi, small, init=prev)
        acc = update_instance_prototypes(
            prev, cur, mode=self.instance_update, momentum=self.instance_momentum
        )
        attn = self.instance_attention.attend(roi, acc)
        return self.tsm(roi, initial_logits, attn), acc


# ---------------------------------------------------------------- helpers


class _FrameMasks:
    """One frame's detections whose masks (the segmenter's mask RoI pooling, mask head and
    pasting, as in ``InstanceSegmenter.predict_from_features``) are made only for the
    detections asked for, once each; a :data:`~instseg.models.video.tracker.MaskSource`.
    Masks not made are all False (never read: see :meth:`PCAN.predict_frame`)."""

    def __init__(self, segmenter: Any, feats: Features, pad: tuple[int, int], det: Instances):
        self.segmenter, self.feats, self.pad = segmenter, feats, pad
        self.detections = det.replace(scores=det.scores.float())
        h, w = det.image_size
        self.masks = torch.zeros((len(det), h, w), dtype=torch.bool, device=det.boxes.device)
        self.done = torch.zeros(len(det), dtype=torch.bool)
        self.outputs: dict[str, Tensor] = {}  # per-RoI head outputs, float32, rows = detections

    @classmethod
    def detect(
        cls, segmenter: Any, feats: Features, pad: tuple[int, int], frame: Batch
    ) -> _FrameMasks | None:
        """The detector's output on ``feats`` (no mask yet); None when the segmenter lacks
        the parts or runs ``fixed_num_detections``."""
        parts = ("detector", "mask_head", "mask_roi_pool", "score_thresh", "max_detections")
        if any(getattr(segmenter, n, None) is None for n in parts) or (
            getattr(segmenter, "fixed_num_detections", None) is not None
        ):
            return None
        size = (int(frame.image_sizes[0][0]), int(frame.image_sizes[0][1]))
        det = segmenter.detector.predict(
            feats, [size], score_thresh=segmenter.score_thresh,
            max_detections=segmenter.max_detections,
        )[0]  # fmt: skip
        return cls(segmenter, feats, pad, det)

    def __call__(self, idx: list[int]) -> Tensor:
        """Masks of detections ``idx`` (made now where not yet) -> bool (len, h, w)."""
        index = torch.as_tensor(idx, dtype=torch.long)
        todo = index[~self.done[index]]
        if len(todo):
            self._make(todo)
        return self.masks[index.to(self.masks.device)]

    def _make(self, todo: Tensor) -> None:
        from instseg.models.segmenter import paste_masks

        seg, det = self.segmenter, self.detections
        dev = det.boxes.device
        boxes, labels = det.boxes[todo.to(dev)], det.labels[todo.to(dev)]
        outputs = seg.mask_head(seg.mask_roi_pool(self.feats, [boxes], [self.pad]))
        probs = seg.mask_head.predict(outputs, labels).float()
        self.masks[todo.to(dev)] = paste_masks(
            probs, boxes, det.image_size, threshold=seg.mask_thresh
        )
        for k, v in outputs.items():
            if v.ndim >= 1 and v.shape[0] == len(todo):
                if k not in self.outputs:
                    self.outputs[k] = v.new_zeros((len(det), *v.shape[1:]), dtype=torch.float32)
                self.outputs[k][todo.to(v.device)] = v.float()
        self.done[todo] = True

    def select(self, idx: list[int]) -> Instances:
        """Detections ``idx`` with their masks, ``mask_logits`` and other head outputs (as the
        segmenter's ``predict_from_features(return_head_outputs=True)`` gives them)."""
        masks = self(idx)
        index = torch.as_tensor(idx, dtype=torch.long, device=self.masks.device)
        extra = {k: v[index.to(v.device)] for k, v in self.outputs.items()}
        logits = extra.pop("mask", None)
        return self.detections[index].replace(masks=masks, mask_logits=logits, extra=extra)


def _checked_targets(batch: Batch) -> list[Instances]:
    targets = batch.targets or []
    for t in targets:
        if t.masks is None or t.track_ids is None:
            raise ValueError("PCAN.loss with a TSM needs masks and track_ids on every frame")
    return targets


def _seen_groups(idx: list[int], acc: list[InstancePrototypes | None]) -> list[list[int]]:
    """Positions in ``idx`` split into those whose object has prototypes already and those
    that start fresh (non-empty groups only)."""
    seen = [i for i, k in enumerate(idx) if acc[k] is not None]
    fresh = [i for i, k in enumerate(idx) if acc[k] is None]
    return [g for g in (seen, fresh) if g]


def _cat_protos(items: list[InstancePrototypes | None]) -> InstancePrototypes | None:
    """All given (one group of :func:`_seen_groups`) or None."""
    return None if items[0] is None else InstancePrototypes.cat(items)  # type: ignore[arg-type]


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
