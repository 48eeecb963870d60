"""``VideoPredictor``: online PCAN tracking, one frame at a time.

predictor = VideoPredictor.from_weights("runs/pcan/model.pt")
for frame in frames:                      # RGB uint8 (H, W, 3)
    inst = predictor(frame)               # Instances at the frame's size, with track_ids
predictor.reset()                         # next video

Everything that persists between frames is the model's :class:`VideoState` (prototype memory
of at most T frames, live tracks, per-track instance prototypes), held here, never in the
model. Memory and time per frame are constant: the memory is a bounded FIFO, tracks unseen for
``keep_alive`` frames are dropped and so are their instance prototypes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from instseg.data.transforms import resize
from instseg.engine.weights import WeightsMeta
from instseg.inference.filtering import DetectionFilter, class_labels
from instseg.models.video.cross_attention import LEGACY_PCAM_SETTINGS
from instseg.models.video.pcan import PCAN, VideoState
from instseg.models.video.tracker import Tracker
from instseg.structures import Instances
from instseg.structures.batch import Batch, collate_images
from instseg.structures.ops import resize_instances
from instseg.utils.precision import autocast, resolve_amp

__all__ = ["VideoPredictor", "load_video_model"]


def load_video_model(
    path: str | Path, *, device: torch.device | str = "cpu"
) -> tuple[PCAN, WeightsMeta]:
    """Rebuild the PCAN named in a ``model.pt``'s meta (``task: video``), load its weights,
    set the PCAM settings it was trained with (``meta.training["pcam"]``; files without them
    were trained with ``LEGACY_PCAM_SETTINGS``) and instance RoI pooling
    (``meta.training["instance_rois"]``; files without it pooled on the track levels,
    ``"track"``), eval mode on ``device``. -> (model, meta)."""
    from instseg.config import from_dict
    from instseg.engine.weights import read_weights_file
    from instseg.inference.loading import load_exact_state
    from instseg.models.build import VideoModelConfig, build_video_model_from_config

    state, meta = read_weights_file(path, task="video")
    mcfg = from_dict(VideoModelConfig, meta.model, where=str(path))
    model = build_video_model_from_config(mcfg, num_classes=meta.num_classes)
    load_exact_state(model, state, source=f"{path} (PCAN '{mcfg.name}')")
    model.pcam.configure(**meta.training.get("pcam", LEGACY_PCAM_SETTINGS))
    model.instance_rois = meta.training.get("instance_rois", "track")  # older files: "track"
    return model.to(device).eval(), meta


class VideoPredictor:
    """Holds a PCAN in eval mode, its preprocessing settings and the :class:`VideoState`.

    Args:
        model: a built :class:`PCAN` (see :meth:`from_weights` for a weights file).
        meta: the weights' meta (class names, category ids, test sizes), optional.
        device: "cpu", "cuda" or "auto" (the model is moved there).
        min_size / max_size: test-time resize (default: meta's, else 256 / 512).
        amp: "auto" (bf16 where the hardware runs it natively, else fp32), "bf16", "fp16"
            or "none" (see :mod:`instseg.utils.precision`).
        score_thresh: drop tracked detections below this score.
        conf / max_det / classes: what a user sees (:mod:`instseg.inference.filtering`); the
            tracker still sees every detection (filtering happens after tracking). Defaults
            keep everything.
        tracker: association settings: a :class:`Tracker`, or a mapping of its fields
            (e.g. ``{"init_score_thresh": 0.8}``) that replace the model's own settings; None
            keeps the model's tracker. The model is not changed.
        mask_score: detections scoring at least this get masks (mask head + pasting) up
            front; the tracker asks for the few others it reads. None (default): the
            tracker's :attr:`~instseg.models.video.tracker.Tracker.mask_score_thresh` (min of
            its gate and birth score); 0: every detection (the path before gating). Outputs do
            not change with it, only the cost (see :meth:`PCAN.predict_frame`).
    """

    def __init__(
        self,
        model: PCAN,
        *,
        meta: WeightsMeta | None = None,
        device: str = "auto",
        min_size: int | None = None,
        max_size: int | None = None,
        amp: str = "auto",
        score_thresh: float = 0.0,
        conf: float = 0.0,
        max_det: int | None = None,
        classes: Sequence[int | str] | str | None = None,
        tracker: Tracker | Mapping[str, Any] | None = None,
        mask_score: float | None = None,
    ) -> None:
        if device == "auto":
            device = str(next(model.parameters()).device)
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.meta = meta or WeightsMeta(task="video")
        self.min_size = int(min_size or self.meta.test_min_size or 256)
        self.max_size = int(max_size or self.meta.max_size or 512)
        self.amp, self.score_thresh = resolve_amp(amp, self.device), score_thresh
        self.class_names: list[str] = list(self.meta.class_names)
        self.category_ids: list[int] = list(self.meta.category_ids)
        self.keep = DetectionFilter(
            conf=conf, max_det=max_det,
            classes=class_labels(classes, class_names=self.class_names,
                                 category_ids=self.category_ids),
        )  # fmt: skip
        if tracker is None or isinstance(tracker, Tracker):
            self.tracker: Tracker = tracker or model.tracker
        else:
            self.tracker = dataclasses.replace(model.tracker, **dict(tracker))
        self.mask_score = mask_score
        self.state: VideoState = model.init_state()

    @classmethod
    def from_weights(
        cls, weights: str | Path, *, device: str = "auto", **kw: Any
    ) -> VideoPredictor:
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        model, meta = load_video_model(weights, device=device)
        return cls(model, meta=meta, device=device, **kw)

    def reset(self) -> None:
        """Forget the current video (memory, tracks, instance prototypes)."""
        self.state = self.model.init_state()

    @torch.no_grad()
    def __call__(self, frame: np.ndarray) -> Instances:
        """RGB uint8 (H, W, 3) -> Instances at (H, W) (CPU): boxes, labels, scores, masks bool,
        ``track_ids`` int64 (ids are stable across frames of one video)."""
        if frame.ndim != 3 or frame.shape[2] != 3:
            raise ValueError(f"VideoPredictor takes RGB (H, W, 3) frames, got {frame.shape}")
        h, w = frame.shape[:2]
        image = torch.from_numpy(np.ascontiguousarray(frame.transpose(2, 0, 1)))
        scale = min(self.min_size / min(h, w), self.max_size / max(h, w))
        size = (max(1, round(h * scale)), max(1, round(w * scale)))
        image, _ = resize(image, Instances.empty((h, w)), size)
        padded, sizes = collate_images([image.float()])
        batch = Batch(images=padded.to(self.device), image_sizes=sizes, orig_sizes=[(h, w)])
        with autocast(self.amp, self.device):
            inst, self.state = self.model.predict_frame(
                batch, self.state, tracker=self.tracker, mask_score=self.mask_score
            )
        inst = inst.to("cpu")
        inst = inst.replace(
            boxes=inst.boxes.float(),
            scores=inst.scores.float() if inst.scores is not None else None,
        )
        if inst.scores is not None and self.score_thresh > 0:
            inst = inst[inst.scores >= self.score_thresh]
        return resize_instances(self.keep(inst), (h, w))
