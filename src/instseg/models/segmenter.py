"""Image instance segmenter: backbone + FPN -> detector -> RoIAlign -> pluggable mask head
(survey ch. 3.2.1: "backbone + FPN, FCOS detector, RoI mask head").

Mask-head training RoIs (one rule for both detectors): per image, every GT box, plus the
detector's detached proposals (FCOS: its top-scoring decoded boxes; Faster R-CNN: the RPN
proposals) whose best IoU with a GT box is >= ``train_iou_thresh`` (0.5), matched to that GT.
GT boxes are always kept first (they keep the head stable early on, when an untrained FCOS has
no good boxes); proposals fill the rest, randomly subsampled to ``train_mask_roi_batch`` RoIs per
image. GT masks (and occluder / amodal masks) are projected onto each RoI by RoIAlign on the GT
bitmaps, then binarised at 0.5 (detectron2's rule).

Both use the same pixel model: targets are projected with ``aligned=True`` and the mask head's
features are pooled with ``aligned=True`` (:class:`~instseg.models.layers.roi_align.FPNRoIAlign`)
unless ``roi_aligned=False``, torchvision's legacy pooling, half a feature pixel (2-16 image
pixels on P2-P5) off the targets: what models trained before the fix used, kept for their
weights files (``meta.model`` without ``roi_aligned`` reads as False).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import box_iou, roi_align

from instseg.models.heads.base import MaskHead, MaskTargets
from instseg.models.layers.roi_align import FPNRoIAlign
from instseg.structures import Instances
from instseg.structures.batch import Batch

__all__ = [
    "Detector",
    "InstanceSegmenter",
    "pad_detections",
    "paste_masks",
    "project_masks",
    "sample_mask_rois",
]


class Detector(Protocol):
    """What the segmenter needs from a detector (FCOS, FasterRCNN)."""

    size_divisibility: int

    def loss(
        self,
        features: Mapping[str, Tensor],
        targets: Sequence[Instances],
        image_sizes: Sequence[tuple[int, int]],
    ) -> tuple[dict[str, Tensor], list[Tensor]]: ...

    def predict(
        self,
        features: Mapping[str, Tensor],
        image_sizes: Sequence[tuple[int, int]],
        *,
        score_thresh: float,
        max_detections: int,
    ) -> list[Instances]: ...


class InstanceSegmenter(nn.Module):
    """``loss(batch) -> dict[str, Tensor]`` and ``predict(batch) -> list[Instances]``.

    Input: :class:`Batch` with raw 0..255 RGB ``images`` (B, 3, Hp, Wp); the model normalises
    with the backbone's ``pixel_mean`` / ``pixel_std`` and pads to the detector's
    ``size_divisibility``. A channels_last ``images`` tensor keeps the whole model channels_last
    (call ``model.to(memory_format=torch.channels_last)`` too). Works under
    bf16 autocast (``instseg.utils.precision.autocast``): boxes, losses and masks stay float32.

    Args:
        backbone: the FPN module (``out_channels``, ``names``, ``strides``, ``pixel_mean/std``).
        detector: FCOS or FasterRCNN on the FPN levels.
        mask_head: a :class:`MaskHead`, input (R, C, mask_roi_size, mask_roi_size).
        mask_in_features: FPN levels the mask RoIAlign pools from (default: strides <= 32).
        train_mask_roi_batch: at most this many mask-head RoIs per image in training.
        fixed_num_detections: when set, ``predict`` sends exactly this many boxes per image
            through the mask head (the top ones above ``score_thresh``, padded with
            whole-image boxes of score 0): constant mask-head cost for benchmarks.
        roi_aligned: pool the mask features with ``aligned=True`` like the targets (default);
            False: torchvision's legacy half-pixel-shifted pooling (models trained with it).
    """

    def __init__(
        self,
        *,
        backbone: nn.Module,
        detector: nn.Module,
        mask_head: MaskHead,
        num_classes: int,
        mask_roi_size: int = 14,
        mask_out_size: int = 28,
        max_detections: int = 100,
        score_thresh: float = 0.05,
        mask_thresh: float = 0.5,
        train_mask_roi_batch: int = 64,
        train_iou_thresh: float = 0.5,
        mask_in_features: Sequence[str] | None = None,
        fixed_num_detections: int | None = None,
        roi_aligned: bool = True,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.detector = detector
        self.mask_head = mask_head
        self.num_classes = num_classes
        self.mask_out_size = mask_out_size
        self.max_detections = max_detections
        self.score_thresh = score_thresh
        self.mask_thresh = mask_thresh
        self.train_mask_roi_batch = train_mask_roi_batch
        self.train_iou_thresh = train_iou_thresh
        self.fixed_num_detections = fixed_num_detections
        stride_of = dict(zip(backbone.names, backbone.strides, strict=True))
        if mask_in_features is None:
            mask_in_features = [n for n, s in stride_of.items() if s <= 32]
        unknown = [n for n in mask_in_features if n not in stride_of]
        if unknown:
            raise ValueError(f"mask_in_features {unknown} not in the FPN levels {list(stride_of)}")
        self.roi_aligned = bool(roi_aligned)
        self.mask_roi_pool = FPNRoIAlign(
            list(mask_in_features),
            [stride_of[n] for n in mask_in_features],
            mask_roi_size,
            sampling_ratio=2,
            aligned=self.roi_aligned,
        )
        self.size_divisibility = max(32, int(getattr(detector, "size_divisibility", 32)))
        mean = torch.tensor(backbone.pixel_mean, dtype=torch.float32).view(1, 3, 1, 1)
        std = torch.tensor(backbone.pixel_std, dtype=torch.float32).view(1, 3, 1, 1)
        self.register_buffer("pixel_mean", mean, persistent=False)
        self.register_buffer("pixel_std", std, persistent=False)

    def loss(self, batch: Batch) -> dict[str, Tensor]:
        """-> detector losses (``loss_cls``, ``loss_box``, ...) + mask head losses
        (``loss_mask``, ...), each a float32 scalar."""
        feats, padded = self.features(batch.images)
        return self.loss_from_features(feats, padded, batch)

    def loss_from_features(
        self, feats: dict[str, Tensor], padded: tuple[int, int], batch: Batch
    ) -> dict[str, Tensor]:
        """:meth:`loss` on precomputed (e.g. temporally fused) FPN features."""
        if batch.targets is None:
            raise ValueError("InstanceSegmenter.loss needs batch.targets")
        _check_targets(batch, self.num_classes)
        det_losses, proposals = self.detector.loss(feats, batch.targets, batch.image_sizes)
        rois, targets = self._mask_training_rois(proposals, batch.targets)
        outputs = self.mask_head(self.mask_roi_pool(feats, rois, [padded] * len(rois)))
        m = outputs["mask"].shape[-1]
        if m != self.mask_out_size:
            raise ValueError(f"mask head outputs {m}x{m}, segmenter expects {self.mask_out_size}")
        mask_losses = self.mask_head.loss(outputs, targets)
        return {**det_losses, **{k: v.float() for k, v in mask_losses.items()}}

    @torch.no_grad()
    def predict(self, batch: Batch, *, return_head_outputs: bool = False) -> list[Instances]:
        """-> B x :class:`Instances` at each image's valid size ``batch.image_sizes[i]``:
        boxes float32 (N, 4), labels int64 (N,), scores float32 (N,), masks bool (N, h, w).
        With ``return_head_outputs``, ``mask_logits`` holds the mask head's (N, K, 28, 28)
        logits and ``extra`` its other per-RoI outputs (float32, e.g. BCNet's occluder maps)."""
        feats, padded = self.features(batch.images)
        return self.predict_from_features(
            feats, padded, batch, return_head_outputs=return_head_outputs
        )

    @torch.no_grad()
    def predict_from_features(
        self,
        feats: dict[str, Tensor],
        padded: tuple[int, int],
        batch: Batch,
        *,
        return_head_outputs: bool = False,
    ) -> list[Instances]:
        """:meth:`predict` on precomputed FPN features (video models fuse them first)."""
        sizes = [(int(h), int(w)) for h, w in batch.image_sizes]
        if self.fixed_num_detections is not None:
            n = self.fixed_num_detections
            dets = self.detector.predict(
                feats, sizes, score_thresh=self.score_thresh, max_detections=n
            )
            dets = [pad_detections(d, n) for d in dets]
        else:
            dets = self.detector.predict(
                feats, sizes, score_thresh=self.score_thresh, max_detections=self.max_detections
            )
        boxes = [d.boxes for d in dets]
        outputs = self.mask_head(self.mask_roi_pool(feats, boxes, [padded] * len(boxes)))
        labels = torch.cat([d.labels for d in dets])
        probs = self.mask_head.predict(outputs, labels).float()
        counts = [len(d) for d in dets]
        results = []
        for i, (d, p) in enumerate(zip(dets, probs.split(counts), strict=True)):
            masks = paste_masks(p, d.boxes, sizes[i], threshold=self.mask_thresh)
            extra: dict[str, Tensor] = {}
            logits = None
            if return_head_outputs:
                for k, v in outputs.items():
                    if v.ndim >= 1 and v.shape[0] == len(labels):
                        extra[k] = v.split(counts)[i].float()
                logits = extra.pop("mask")
            results.append(
                d.replace(masks=masks, scores=d.scores.float(), mask_logits=logits, extra=extra)
            )
        return results

    def features(self, images: Tensor) -> tuple[dict[str, Tensor], tuple[int, int]]:
        """Normalise, pad to ``size_divisibility``; -> (FPN features, padded (Hp, Wp))."""
        d = self.size_divisibility
        h, w = images.shape[-2:]
        ph, pw = (-h) % d, (-w) % d
        x = (images.float() - self.pixel_mean) / self.pixel_std
        if ph or pw:
            channels_last = images.is_contiguous(memory_format=torch.channels_last)
            x = F.pad(x, (0, pw, 0, ph))
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
        return self.backbone(x), (int(h + ph), int(w + pw))

    # ---------------------------------------------------------------- helpers

    def _mask_training_rois(
        self, proposals: list[Tensor], targets: Sequence[Instances]
    ) -> tuple[list[Tensor], MaskTargets]:
        rois, parts = [], []
        for props, t in zip(proposals, targets, strict=True):
            boxes, idx = sample_mask_rois(
                props,
                t.boxes.float(),
                iou_thresh=self.train_iou_thresh,
                max_rois=self.train_mask_roi_batch,
            )
            rois.append(boxes)
            parts.append(self._project_targets(t, boxes, idx))
        return rois, _cat_targets(parts)

    def _project_targets(self, t: Instances, boxes: Tensor, idx: Tensor) -> MaskTargets:
        m = self.mask_out_size
        n_roi = boxes.shape[0]
        has_mask = torch.ones(n_roi, dtype=torch.bool, device=boxes.device)
        if t.has_mask is not None:
            has_mask = t.has_mask.to(boxes.device, torch.bool)[idx]
        if t.masks is None:  # boxes only: no mask supervision for this image
            zeros = boxes.new_zeros((n_roi, m, m))
            return MaskTargets(
                masks=zeros,
                labels=t.labels[idx],
                has_mask=torch.zeros_like(has_mask),
                occluder=zeros if self.mask_head.needs_occluder else None,
            )
        occluder = None
        if self.mask_head.needs_occluder:
            occ = t.occluder_masks
            if occ is None:
                raise ValueError(
                    f"{type(self.mask_head).__name__} learns occluders: every target needs "
                    "occluder_masks (COCODataset provides them; for hand-made targets use "
                    "instseg.data.occlusion.compute_occluder_masks)"
                )
            occluder = project_masks(occ, boxes, idx, m)
        amodal = (
            project_masks(t.amodal_masks, boxes, idx, m) if t.amodal_masks is not None else None
        )
        return MaskTargets(
            masks=project_masks(t.masks, boxes, idx, m),
            labels=t.labels[idx],
            occluder=occluder,
            amodal=amodal,
            has_mask=has_mask,
        )


def sample_mask_rois(
    proposals: Tensor, gt_boxes: Tensor, *, iou_thresh: float, max_rois: int
) -> tuple[Tensor, Tensor]:
    """Positive RoIs of one image for the mask head.

    proposals (P, 4), gt_boxes (N, 4) xyxy -> (boxes (R, 4), matched GT index int64 (R,)):
    all GT boxes first, then proposals whose best IoU >= ``iou_thresh`` (matched to that GT);
    at most ``max_rois`` (GT boxes kept first, the rest a random subset; global torch RNG).
    """
    dev = gt_boxes.device
    n = gt_boxes.shape[0]
    gt_idx = torch.arange(n, device=dev)
    if n == 0:
        return gt_boxes.new_zeros((0, 4)), gt_idx
    if n >= max_rois:
        keep = torch.randperm(n, device=dev)[:max_rois]
        return gt_boxes[keep], gt_idx[keep]
    proposals = proposals.to(dev, gt_boxes.dtype)
    if proposals.shape[0]:
        best, match = box_iou(proposals, gt_boxes).max(dim=1)
        pos = torch.nonzero(best >= iou_thresh).squeeze(1)
        pos = pos[torch.randperm(pos.numel(), device=dev)[: max_rois - n]]
        return torch.cat([gt_boxes, proposals[pos]]), torch.cat([gt_idx, match[pos]])
    return gt_boxes, gt_idx


def project_masks(bitmaps: Tensor, boxes: Tensor, idx: Tensor, size: int) -> Tensor:
    """Crop-and-resize GT bitmaps onto RoIs: bitmaps bool (N, H, W), boxes (R, 4) xyxy in the
    bitmaps' pixel frame, idx int64 (R,) -> float32 (R, size, size) in {0, 1} (RoIAlign with
    aligned pixel centres, adaptive sampling, binarised at 0.5)."""
    if boxes.shape[0] == 0:
        return boxes.new_zeros((0, size, size), dtype=torch.float32)
    used, inverse = torch.unique(idx, return_inverse=True)
    src = bitmaps[used].to(boxes.device, torch.float32)[:, None]
    rois = torch.cat([inverse[:, None].to(torch.float32), boxes.to(torch.float32)], dim=1)
    with torch.autocast(boxes.device.type, enabled=False):
        out = roi_align(src, rois, (size, size), spatial_scale=1.0, sampling_ratio=0, aligned=True)
    return (out[:, 0] >= 0.5).to(torch.float32)


def paste_masks(
    probs: Tensor, boxes: Tensor, image_size: tuple[int, int], *, threshold: float
) -> Tensor:
    """Paste (R, M, M) RoI probabilities into an (h, w) image: -> bool (R, h, w).

    Bilinear resampling of each mask over the pixels its box touches (pixel centres at +0.5,
    the M x M grid spanning the box edges, like detectron2's paste), thresholded.
    """
    h, w = image_size
    out = torch.zeros((probs.shape[0], h, w), dtype=torch.bool, device=probs.device)
    probs = probs.float()
    for i, (x0, y0, x1, y1) in enumerate(boxes.float().tolist()):
        ix0, iy0 = max(int(math.floor(x0)), 0), max(int(math.floor(y0)), 0)
        ix1, iy1 = min(int(math.ceil(x1)), w), min(int(math.ceil(y1)), h)
        if ix1 <= ix0 or iy1 <= iy0:
            continue
        dev = probs.device
        gx = (torch.arange(ix0, ix1, device=dev, dtype=torch.float32) + 0.5 - x0) / max(
            x1 - x0, 1e-6
        )
        gy = (torch.arange(iy0, iy1, device=dev, dtype=torch.float32) + 0.5 - y0) / max(
            y1 - y0, 1e-6
        )
        grid = torch.stack(torch.meshgrid(gy * 2 - 1, gx * 2 - 1, indexing="ij")[::-1], dim=-1)
        v = F.grid_sample(probs[i][None, None], grid[None], mode="bilinear", align_corners=False)
        out[i, iy0:iy1, ix0:ix1] = v[0, 0] >= threshold
    return out


def pad_detections(d: Instances, n: int) -> Instances:
    """Exactly n detections: truncate, or pad with whole-image boxes (score 0, label 0)."""
    if len(d) >= n:
        return d[:n]
    k = n - len(d)
    h, w = d.image_size
    box = d.boxes.new_tensor([0.0, 0.0, float(w), float(h)]).expand(k, 4)
    return Instances(
        image_size=d.image_size,
        boxes=torch.cat([d.boxes, box]),
        labels=torch.cat([d.labels, d.labels.new_zeros(k)]),
        scores=torch.cat([d.scores, d.scores.new_zeros(k)]),
    )


def _check_targets(batch: Batch, num_classes: int) -> None:
    for i, t in enumerate(batch.targets or []):
        where = batch.file_names[i] if i < len(batch.file_names) else f"batch image {i}"
        if len(t) and (int(t.labels.min()) < 0 or int(t.labels.max()) >= num_classes):
            raise ValueError(f"{where}: labels {t.labels.tolist()} outside 0..{num_classes - 1}")
        size = tuple(int(v) for v in batch.image_sizes[i])
        for name in ("masks", "amodal_masks", "occluder_masks"):
            m = getattr(t, name)
            if m is not None and tuple(m.shape[-2:]) != size:
                raise ValueError(f"{where}: {name} are {tuple(m.shape[-2:])}, image size is {size}")


def _cat_targets(parts: list[MaskTargets]) -> MaskTargets:
    def cat(name: str) -> Tensor | None:
        vals = [getattr(p, name) for p in parts]
        return None if any(v is None for v in vals) else torch.cat(vals)

    return MaskTargets(
        masks=torch.cat([p.masks for p in parts]),
        labels=torch.cat([p.labels for p in parts]),
        occluder=cat("occluder"),
        amodal=cat("amodal"),
        has_mask=cat("has_mask"),
    )
