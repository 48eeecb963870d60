"""ONNX Runtime backend for :class:`instseg.inference.ImagePredictor` on CPU.

Why: on a CPU without native bf16 the eager fp32 network is about 2x slower than the same graph
in ONNX Runtime (fused conv+activation kernels; ``benchmarks/image_latency.py``), which decides
whether we beat Ultralytics yolov8n-seg end to end there.

The network is exported in two graphs, traced once per input size (h, w) and cached:

- **detect**: raw 0..255 RGB (1, 3, Hp, Wp) float32 -> ``boxes`` (K, 4), ``scores`` (K,),
  ``labels`` (K,) int64 (the detector's top K after NMS, padded with score-0 slots) and the FPN
  levels the mask RoIAlign pools from (``feat_<name>``, (1, C, Hp/s, Wp/s)).
- **mask**: those FPN levels + ``boxes`` (R, 4) + ``labels`` (R,) -> ``mask_probs`` (R, 28, 28),
  with R dynamic: only the detections that pass the caller's threshold pay for the mask head.

Pasting the 28x28 masks into the image stays in torch (:func:`paste_masks`), so both backends
share everything after the mask head. The traced graphs live in memory (a few MB each); a new
input size (e.g. a photo of another aspect ratio) costs one more trace (about 1-3 s). The size is
baked into the detect graph (points in the padding score 0, boxes are clipped to (h, w)), as the
eager model does it, so both backends give the same detections.
Only FCOS-based segmenters (:func:`supports`) and ``predict`` without ``return_head_outputs``
run here; the predictor uses torch for the rest (Faster R-CNN, explanations, CUDA, a forced
bf16/fp16 precision).
"""

from __future__ import annotations

import io
import logging
import warnings
from collections import OrderedDict
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from instseg.structures import Instances

__all__ = ["OnnxRuntimeSegmenter", "onnxruntime_available", "supports"]

log = logging.getLogger(__name__)


def onnxruntime_available() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def supports(model: nn.Module) -> bool:
    """Whether the traced graphs reproduce the eager model: FCOS-based segmenters. (A traced
    Faster R-CNN did not: its RPN/RoI stages keep data-dependent Python control flow; it runs
    in torch.)"""
    from instseg.models.detectors.fcos import FCOS

    return isinstance(getattr(model, "detector", None), FCOS) and hasattr(model, "mask_roi_pool")


class _DetectGraph(nn.Module):
    """images (1, 3, Hp, Wp) -> boxes (K, 4), scores (K,), labels (K,), *FPN levels."""

    def __init__(self, model: nn.Module, *, num_detections: int, size: tuple[int, int]) -> None:
        super().__init__()
        self.model = model
        self.k = num_detections
        self.size = size  # the image's valid (h, w) inside the padded input
        self.levels = list(model.mask_roi_pool.featmap_names)

    def forward(self, images: Tensor) -> tuple[Tensor, ...]:
        from instseg.models.segmenter import pad_detections

        m = self.model
        feats, _ = m.features(images)
        det = m.detector.predict(
            feats, [self.size], score_thresh=m.score_thresh, max_detections=self.k
        )
        d = pad_detections(det[0], self.k)
        return (d.boxes.float(), d.scores.float(), d.labels, *(feats[n] for n in self.levels))


class _MaskGraph(nn.Module):
    """FPN levels + boxes (R, 4) + labels (R,) -> mask_probs (R, M, M) float32."""

    def __init__(self, model: nn.Module, *, padded: tuple[int, int]) -> None:
        super().__init__()
        self.model = model
        self.padded = padded
        self.levels = list(model.mask_roi_pool.featmap_names)

    def forward(self, boxes: Tensor, labels: Tensor, *levels: Tensor) -> Tensor:
        m = self.model
        feats = dict(zip(self.levels, levels, strict=True))
        outputs = m.mask_head(m.mask_roi_pool(feats, [boxes], [self.padded]))
        return m.mask_head.predict(outputs, labels).float()


def _to_onnx(module: nn.Module, args: tuple[Tensor, ...], **kw: Any) -> bytes:
    # eval() first: the exporter puts the module back into the mode it found it in, and a
    # fresh wrapper is in training mode, which would switch the wrapped model to training too
    module.eval()
    buf = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, args, buf, opset_version=17, dynamo=False, **kw)
    return buf.getvalue()


class OnnxRuntimeSegmenter:
    """An :class:`~instseg.models.segmenter.InstanceSegmenter` run by ONNX Runtime (fp32, CPU).

    Args:
        model: the eval-mode segmenter (fp32, contiguous weights; it is not modified).
        num_detections: K, the detector's top-K kept per image (the model's ``max_detections``).
        threads: intra-op threads (default: torch's current number).
        max_cached_sizes: traced (detect, mask) graph pairs kept, least recently used dropped.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        num_detections: int | None = None,
        threads: int | None = None,
        max_cached_sizes: int = 4,
    ) -> None:
        import onnxruntime as ort

        if not supports(model):
            detector = type(getattr(model, "detector", None)).__name__
            raise ValueError(f"the onnxruntime backend supports FCOS segmenters, not {detector}")
        self.model = model.eval()
        self._k = num_detections
        self.levels = list(model.mask_roi_pool.featmap_names)
        self.divisor = int(model.size_divisibility)
        self.mask_thresh = float(model.mask_thresh)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = int(threads or torch.get_num_threads())
        opts.inter_op_num_threads = 1
        # no busy-waiting between ops: on 2 shared cores spinning threads slow everything down
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        opts.log_severity_level = 3
        self._opts = opts
        self._ort = ort
        self._sessions: OrderedDict[tuple[int, int, int], tuple[Any, Any]] = OrderedDict()
        self.max_cached_sizes = max_cached_sizes

    @property
    def num_detections(self) -> int:
        """K: the constructor's value, else the model's ``fixed_num_detections`` (then all K
        are returned, padding included, as the eager model does), else its ``max_detections``."""
        m = self.model
        return int(self._k or m.fixed_num_detections or m.max_detections)

    def padded_size(self, h: int, w: int) -> tuple[int, int]:
        d = self.divisor
        return (h + d - 1) // d * d, (w + d - 1) // d * d

    def _sessions_for(self, h: int, w: int) -> tuple[Any, Any]:
        k = self.num_detections
        key = (h, w, k)
        if key in self._sessions:
            self._sessions.move_to_end(key)
            return self._sessions[key]
        hp, wp = self.padded_size(h, w)
        log.info("onnxruntime: tracing the network for %dx%d inputs (once per size)", h, w)
        example = torch.zeros(1, 3, hp, wp)
        example[..., :h, :w] = torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(0))
        example *= 255
        detect = _DetectGraph(self.model, num_detections=k, size=(h, w))
        names = [f"feat_{n}" for n in self.levels]
        detect_bytes = _to_onnx(
            detect,
            (example,),
            input_names=["images"],
            output_names=["boxes", "scores", "labels", *names],
        )
        with torch.no_grad():
            boxes, _, labels, *levels = detect(example)
        mask = _MaskGraph(self.model, padded=(hp, wp))
        mask_bytes = _to_onnx(
            mask,
            (boxes, labels, *levels),
            input_names=["boxes", "labels", *names],
            output_names=["mask_probs"],
            dynamic_axes={"boxes": {0: "R"}, "labels": {0: "R"}, "mask_probs": {0: "R"}},
        )
        cpu = ["CPUExecutionProvider"]
        pair = (
            self._ort.InferenceSession(detect_bytes, self._opts, providers=cpu),
            self._ort.InferenceSession(mask_bytes, self._opts, providers=cpu),
        )
        self._sessions[key] = pair
        while len(self._sessions) > self.max_cached_sizes:
            self._sessions.popitem(last=False)
        return pair

    def predict_image(self, image: Tensor, *, score_thresh: float = 0.0) -> Instances:
        """image float32 (3, h, w) raw 0..255 -> :class:`Instances` at (h, w): boxes (N, 4),
        scores (N,), labels (N,), masks bool (N, h, w); N <= K detections with score above the
        model's ``score_thresh`` and >= ``score_thresh``."""
        from instseg.models.segmenter import paste_masks

        h, w = int(image.shape[-2]), int(image.shape[-1])
        hp, wp = self.padded_size(h, w)
        detect, mask = self._sessions_for(h, w)
        x = np.zeros((1, 3, hp, wp), np.float32)
        x[0, :, :h, :w] = image.detach().float().cpu().numpy()
        boxes, scores, labels, *levels = detect.run(None, {"images": x})
        keep = scores >= score_thresh
        if self.model.fixed_num_detections is None:
            keep &= scores > 0  # drop the padding slots
        boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
        if len(boxes):
            feeds = {"boxes": boxes, "labels": labels}
            feeds.update({f"feat_{n}": v for n, v in zip(self.levels, levels, strict=True)})
            wanted = {i.name for i in mask.get_inputs()}  # a class-agnostic head drops labels
            (probs,) = mask.run(None, {k: v for k, v in feeds.items() if k in wanted})
        else:
            probs = np.zeros((0, 28, 28), np.float32)
        tb = torch.from_numpy(boxes)
        masks = paste_masks(torch.from_numpy(probs), tb, (h, w), threshold=self.mask_thresh)
        return Instances(
            image_size=(h, w),
            boxes=tb,
            scores=torch.from_numpy(scores),
            labels=torch.from_numpy(labels).long(),
            masks=masks,
        )
