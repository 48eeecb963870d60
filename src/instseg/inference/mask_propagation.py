"""First-frame mask propagation over a video (``instseg propagate``,
``scripts/davis_semisup.py``): the feature loader (:class:`BackboneFeatures`) and the drivers
that run a method of :mod:`instseg.models.video.mask_propagation` (or a baseline of
:mod:`instseg.models.video.mask_propagation_baselines`) frame by frame.

Labels: (H, W) uint8, 0 = background, k = object k (DAVIS style).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from instseg.engine.checkpoint import CheckpointError
from instseg.engine.weights import read_weights_file
from instseg.models.backbones.efficientnet import EfficientNetLite0
from instseg.models.video.mask_propagation import (
    MaskPropagator,
    coverage,
    object_ids_of,
    probs_to_labels,
    shrink_frame,
)
from instseg.models.video.propagation_embedding import PropagationEmbedding

__all__ = ["BackboneFeatures", "feature_stride", "propagate_features", "propagate_labels"]


class BackboneFeatures:
    """RGB uint8 (H, W, 3) -> (C, ceil(H/8), ceil(W/8)) float32 unit-norm features.

    EfficientNet-Lite0 (offline ImageNet weights) c3 (40 ch, stride 8) and c4 (112 ch, stride
    16, bilinearly upsampled), each L2-normalised, concatenated, L2-normalised (C = 152).
    ``max_side`` caps the longer side the backbone sees (frames are resized down first).
    ``weights``: a trained instseg model file: a propagation embedding
    (``scripts/train_propagation.py``; applied on top of the ImageNet features) or an image /
    PCAN model (its fine-tuned EfficientNet-Lite0 backbone replaces the ImageNet one).
    ``source`` says which: "imagenet", "embedding" or "backbone".
    """

    def __init__(
        self,
        *,
        pretrained: bool = True,
        device: str = "cpu",
        max_side: int | None = None,
        weights: str | Path | None = None,
    ) -> None:
        self.embedding: torch.nn.Module | None = None
        state, meta = read_weights_file(weights) if weights is not None else (None, None)
        self.source = (
            "imagenet"
            if meta is None
            else "embedding"
            if meta.task == "propagation"
            else "backbone"
        )
        self.body = EfficientNetLite0(
            pretrained=pretrained and self.source != "backbone", out_strides=(8, 16), frozen_bn=True
        )
        if self.source == "embedding":
            self.embedding = PropagationEmbedding(
                channels=int(meta.model["channels"]), hidden=int(meta.model["hidden"])
            )
            self.embedding.load_state_dict({k: v.float() for k, v in state.items()})
            self.embedding = self.embedding.to(device).eval()
        elif state is not None:
            self.body.load_state_dict(_backbone_state(weights, state, self.body.state_dict()))
        self.body = self.body.to(device).eval()
        self.device, self.max_side = torch.device(device), max_side
        self.mean = torch.tensor(self.body.pixel_mean).view(1, 3, 1, 1).to(device)
        self.std = torch.tensor(self.body.pixel_std).view(1, 3, 1, 1).to(device)

    def stride(self, size: tuple[int, int]) -> float:
        """Frame pixels per feature cell for frames of ``size`` = (H, W)."""
        return feature_stride(size, self.max_side)

    @torch.no_grad()
    def __call__(self, frame: np.ndarray) -> Tensor:
        frame = shrink_frame(frame, self.max_side)
        h, w = frame.shape[:2]
        x = torch.from_numpy(np.array(frame, np.float32)).permute(2, 0, 1)[None]
        x = (x.to(self.device) - self.mean) / self.std
        x = F.pad(x, (0, (-w) % 32, 0, (-h) % 32))
        feats = self.body(x)
        c3, c4 = feats["c3"], feats["c4"]
        c4 = F.interpolate(c4, size=c3.shape[-2:], mode="bilinear", align_corners=False)
        out = torch.cat([F.normalize(c3, dim=1), F.normalize(c4, dim=1)], 1)
        out = F.normalize(out, dim=1)
        if self.embedding is not None:
            out = self.embedding(out)
        return out[0, :, : (h + 7) // 8, : (w + 7) // 8].float().cpu()


def propagate_features(
    feats: Iterable[Tensor],
    first_labels: np.ndarray,
    *,
    propagator: MaskPropagator,
    stride: float,
    object_ids: Sequence[int] | None = None,
) -> Iterator[np.ndarray]:
    """Feature maps (C, h, w) (cells of ``stride`` frame pixels) of frames 0..T-1 and the
    (H, W) label map of frame 0 -> label maps (H, W) uint8 of every frame (frame 0 =
    ``first_labels`` as given)."""
    ids = list(object_ids) if object_ids is not None else object_ids_of(first_labels)
    size = first_labels.shape[:2]
    it = iter(feats)
    f0 = next(it, None)
    if f0 is None:
        return
    yield first_labels.astype(np.uint8)
    if not ids:
        for _ in it:
            yield np.zeros(size, np.uint8)
        return
    state = propagator.init(f0, coverage(first_labels, ids, tuple(f0.shape[-2:]), stride))
    for f in it:
        probs, state = propagator.step(f, state)
        yield probs_to_labels(probs, ids, size, stride)


def propagate_labels(
    frames: Iterable[np.ndarray],
    first_labels: np.ndarray,
    *,
    propagator: MaskPropagator,
    features: BackboneFeatures,
) -> Iterator[np.ndarray]:
    """RGB frames (frame 0 annotated by ``first_labels``) -> label maps, one per frame."""
    return propagate_features(
        (features(f) for f in frames),
        first_labels,
        propagator=propagator,
        stride=features.stride(first_labels.shape[:2]),
    )


def feature_stride(size: tuple[int, int], max_side: int | None) -> float:
    """Frame pixels per :class:`BackboneFeatures` cell for frames of ``size`` = (H, W) shrunk
    to a longer side of at most ``max_side`` (stride 8 on the shrunk frame)."""
    return 8.0 * max(1.0, max(size) / max_side) if max_side else 8.0


def _backbone_state(
    path: str | Path, state: dict[str, Tensor], like: dict[str, Tensor]
) -> dict[str, Tensor]:
    """The EfficientNet-Lite0 tensors of a model file's ``state`` (from ``path``), keyed like
    ``like`` (the keys end with the backbone's own names, after a model prefix)."""
    first = next(iter(like))
    prefixes = [k[: -len(first)] for k in state if k.endswith("." + first) or k == first]
    if not prefixes:
        raise CheckpointError(f"{path}: no EfficientNet-Lite0 backbone in this model file")
    out, pre = {}, prefixes[0]
    for k, ref in like.items():
        v = state.get(pre + k)
        if v is None or tuple(v.shape) != tuple(ref.shape):
            raise CheckpointError(f"{path}: backbone tensor {pre + k} missing or mis-shaped")
        out[k] = v.to(ref.dtype)
    return out
