"""``ImagePredictor``: weights file -> callable on RGB images returning :class:`Instances`.

predictor = ImagePredictor("runs/demo/model.pt")
inst = predictor(rgb_uint8_hw3)          # Instances at the image's own size
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from instseg.inference.filtering import DetectionFilter, class_labels
from instseg.structures import Instances
from instseg.structures.batch import Batch, collate_images
from instseg.structures.ops import resize_instances
from instseg.utils.precision import autocast, resolve_amp

__all__ = ["ImagePredictor"]


class ImagePredictor:
    """Holds a model in eval mode plus its preprocessing settings (state lives here).

    Args:
        weights: ``model.pt`` written by ``instseg train``/``demo``.
        device: "cpu", "cuda" or "auto".
        min_size / max_size: test-time resize (defaults from the weights' meta).
        amp: "auto" (bf16 where the hardware runs it natively, else fp32), "bf16", "fp16"
            or "none" (see :mod:`instseg.utils.precision`).
        score_thresh: drop detections below this score.
        conf / max_det / classes: what a user sees (:mod:`instseg.inference.filtering`): the
            minimum score, the most detections kept per image (highest scores), the classes
            kept (names or category ids). Defaults keep everything.
        channels_last: NHWC memory layout (default: on for CPU, where oneDNN's NHWC kernels make
            the network 1.9x faster in fp32 and faster in bf16; benchmarks/image_latency.py).
    """

    def __init__(
        self,
        weights: str | Path,
        *,
        device: str = "auto",
        min_size: int | None = None,
        max_size: int | None = None,
        amp: str = "auto",
        score_thresh: float = 0.0,
        channels_last: bool | None = None,
        conf: float = 0.0,
        max_det: int | None = None,
        classes: Sequence[int | str] | str | None = None,
    ) -> None:
        from instseg.inference.loading import load_trained_model

        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        self.model, self.meta = load_trained_model(weights, device=self.device)
        self.amp = resolve_amp(amp, self.device)  # "bf16" | "fp16" | "none"
        if channels_last is None:
            channels_last = self.device.type == "cpu"
        self.channels_last = channels_last
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.min_size = int(min_size or self.meta.test_min_size or 256)
        self.max_size = int(max_size or self.meta.max_size or 512)
        self.score_thresh = score_thresh
        self.class_names: list[str] = list(self.meta.class_names)
        self.category_ids: list[int] = list(self.meta.category_ids)
        self.keep = DetectionFilter(
            conf=conf, max_det=max_det,
            classes=class_labels(classes, class_names=self.class_names,
                                 category_ids=self.category_ids),
        )  # fmt: skip

    def _resize(self, image: np.ndarray) -> torch.Tensor:
        h, w = image.shape[:2]
        scale = min(self.min_size / min(h, w), self.max_size / max(h, w))
        nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
        t = torch.from_numpy(np.array(image, dtype=np.float32, copy=True)).permute(2, 0, 1)
        if (nh, nw) != (h, w):
            t = torch.nn.functional.interpolate(
                t[None], size=(nh, nw), mode="bilinear", align_corners=False
            )[0]
        return t

    def _autocast(self) -> Any:
        return autocast(self.amp, self.device)

    @torch.no_grad()
    def predict_batch(self, images: list[np.ndarray], **kw: Any) -> list[Instances]:
        """RGB uint8 (H, W, 3) images -> Instances at each image's original size (CPU tensors)."""
        tensors = [self._resize(im) for im in images]
        padded, sizes = collate_images(tensors)
        batch = Batch(
            images=padded.to(self.device),
            image_sizes=sizes,
            orig_sizes=[im.shape[:2] for im in images],
        )
        if self.channels_last:
            batch.images = batch.images.contiguous(memory_format=torch.channels_last)
        with self._autocast():
            outs = self.model.predict(batch, **kw)
        results = []
        for inst, im in zip(outs, images, strict=False):
            inst = inst.to("cpu")
            inst = inst.replace(
                boxes=inst.boxes.float(),
                scores=inst.scores.float() if inst.scores is not None else None,
            )
            if inst.scores is not None and self.score_thresh > 0:
                inst = inst[inst.scores >= self.score_thresh]
            inst = self.keep(inst)
            results.append(resize_instances(inst, im.shape[:2]))
        return results

    def __call__(self, image: np.ndarray, **kw: Any) -> Instances:
        return self.predict_batch([image], **kw)[0]
