"""Export a trained image model to TorchScript (trace) or ONNX.

The exported graph is the whole network for one image of a fixed size: raw 0..255 RGB
(1, 3, H, W) float32 in, and exactly K detections out (the segmenter's fixed-detections path;
unused slots have score 0):

- ``boxes``: (K, 4) float32 xyxy in the input's pixels
- ``scores``: (K,) float32
- ``labels``: (K,) int64
- ``mask_probs``: (K, 28, 28) float32 foreground probabilities inside each box

Pasting the 28x28 masks into the image (``instseg.models.segmenter.paste_masks``) is left to
the consumer: it depends on the box values, which a traced graph cannot loop over.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor, nn

__all__ = ["ExportWrapper", "export_model"]


class ExportWrapper(nn.Module):
    """Wraps an ``InstanceSegmenter`` with ``fixed_num_detections`` set."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        if getattr(model, "fixed_num_detections", None) is None:
            raise ValueError("export needs a model built with fixed_num_detections=K")
        self.model = model.eval()

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        h, w = int(images.shape[-2]), int(images.shape[-1])
        feats, padded = self.model.features(images)
        sizes = [(h, w)]
        m = self.model
        n = m.fixed_num_detections
        det = m.detector.predict(feats, sizes, score_thresh=m.score_thresh, max_detections=n)
        from instseg.models.segmenter import pad_detections

        d = pad_detections(det[0], n)
        outputs = m.mask_head(m.mask_roi_pool(feats, [d.boxes], [padded]))
        probs = m.mask_head.predict(outputs, d.labels).float()
        return d.boxes.float(), d.scores.float(), d.labels, probs


def export_model(
    model: nn.Module,
    path: str | Path,
    *,
    fmt: Literal["onnx", "torchscript"],
    image_size: tuple[int, int],
    opset: int = 17,
) -> Path:
    """Trace ``model`` (with ``fixed_num_detections``) on a (1, 3, H, W) example and save it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    wrapper = ExportWrapper(model).eval()  # the exporter restores this mode afterwards
    example = torch.rand(1, 3, *image_size, generator=torch.Generator().manual_seed(0)) * 255
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        if fmt == "torchscript":
            traced = torch.jit.trace(wrapper, example, check_trace=False)
            traced.save(str(path))
        elif fmt == "onnx":
            torch.onnx.export(
                wrapper,
                (example,),
                str(path),
                input_names=["images"],
                output_names=["boxes", "scores", "labels", "mask_probs"],
                opset_version=opset,
                dynamo=False,
            )
        else:
            raise ValueError(f"unknown export format '{fmt}' (onnx or torchscript)")
    return path


def eager_outputs(model: nn.Module, images: Tensor) -> tuple[Tensor, ...]:
    """The reference outputs the exported graph must reproduce."""
    with torch.no_grad():
        return ExportWrapper(model)(images)
