"""``ImagePredictor``: weights file -> callable on RGB images returning :class:`Instances`.

predictor = ImagePredictor("runs/demo/model.pt")
inst = predictor(rgb_uint8_hw3)          # Instances at the image's own size
"""

from __future__ import annotations

import logging
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

__all__ = ["BACKENDS", "ImagePredictor"]

BACKENDS = ("auto", "torch", "onnxruntime")
log = logging.getLogger(__name__)


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
        backend: "torch", "onnxruntime" (CPU, fp32; :mod:`instseg.inference.onnx_backend`) or
            "auto": ONNX Runtime for an FCOS model on CPU when it is installed and no low
            precision is forced
            (``amp`` "auto" or "none"), since it measured faster there than eager fp32 (about 2x)
            and than eager bf16 on a CPU with native bf16; torch otherwise. Calls that ask for
            ``return_head_outputs`` (explanations) always run in torch, and a network that fails
            to export falls back to torch with one warning.
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
        backend: str = "auto",
        conf: float = 0.0,
        max_det: int | None = None,
        classes: Sequence[int | str] | str | None = None,
    ) -> None:
        from instseg.inference.loading import load_trained_model

        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        self.model, self.meta = load_trained_model(weights, device=self.device)
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
        self.backend = self._pick_backend(backend, amp)
        self._ort: Any = None
        if self.backend == "onnxruntime":
            from instseg.inference.onnx_backend import OnnxRuntimeSegmenter

            self._ort = OnnxRuntimeSegmenter(self.model)
            amp = "none"  # ONNX Runtime runs the graph in fp32
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

    def _pick_backend(self, backend: str, amp: str) -> str:
        from instseg.inference.onnx_backend import onnxruntime_available, supports

        if backend == "onnxruntime":
            if self.device.type != "cpu":
                raise ValueError("backend 'onnxruntime' runs on the CPU only (use device='cpu')")
            if not onnxruntime_available():
                raise ValueError("backend 'onnxruntime' needs the onnxruntime package")
            if not supports(self.model):
                raise ValueError("backend 'onnxruntime' supports FCOS models; use backend='torch'")
            return backend
        if backend == "auto":
            cpu_fp32 = self.device.type == "cpu" and amp in ("auto", "none", "fp32")
            ok = cpu_fp32 and supports(self.model) and onnxruntime_available()
            return "onnxruntime" if ok else "torch"
        return backend

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
        if self._ort is not None and not kw.get("return_head_outputs"):
            outs = self._predict_onnxruntime(tensors)
            if outs is not None:
                return [
                    resize_instances(self._threshold(o), im.shape[:2])
                    for o, im in zip(outs, images, strict=True)
                ]
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
            results.append(resize_instances(self._threshold(inst), im.shape[:2]))
        return results

    def _threshold(self, inst: Instances) -> Instances:
        if inst.scores is not None and self.score_thresh > 0:
            inst = inst[inst.scores >= self.score_thresh]
        return self.keep(inst)

    def _predict_onnxruntime(self, tensors: list[torch.Tensor]) -> list[Instances] | None:
        """Each resized (3, h, w) image through ONNX Runtime; None (and torch from then on)
        when the network cannot be exported."""
        try:
            # detections under the score cut never reach the mask graph
            cut = max(self.score_thresh, float(self.keep.conf))
            return [self._ort.predict_image(t, score_thresh=cut) for t in tensors]
        except Exception as e:  # noqa: BLE001 - any export/runtime failure: fall back, once
            log.warning("onnxruntime backend failed (%s: %s); using torch", type(e).__name__, e)
            self._ort, self.backend = None, "torch"
            return None

    def __call__(self, image: np.ndarray, **kw: Any) -> Instances:
        return self.predict_batch([image], **kw)[0]
