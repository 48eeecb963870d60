"""Zoo models from their config dataclasses: what training builds and what a weights file's
``meta["model"]`` rebuilds for inference.

The dataclasses hold the *choice* of model (zoo key, backbone weights, BatchNorm layout, weights
to start from); the modules themselves never read them (their constructors take built
submodules and typed keywords). The recipes' train configs nest these as their ``model``
section; :mod:`instseg.inference` rebuilds trained models through the same two functions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from instseg.models.video.pcan import PCAN

__all__ = [
    "ModelConfig",
    "VideoModelConfig",
    "build_model_from_config",
    "build_video_model_from_config",
    "freeze_modules",
]


@dataclass
class ModelConfig:
    name: str = "effl0_fcos_maskrcnn"  # key of instseg.models.zoo.MODELS
    pretrained: bool = True  # ImageNet backbone weights (EfficientNet-Lite0 ships offline)
    backbone_weights: str | None = None  # user-given backbone weight file (e.g. ResNet-50)
    frozen_bn: bool | None = None  # backbone BatchNorm frozen/folded (None: when pretrained)
    class_aware_masks: bool = False  # one mask per class (True) or class-agnostic (False)
    weights: str | None = None  # full-model weights to start from (fine-tuning, few-shot)
    # load only these top-level modules from `weights` (e.g. [backbone, detector]: every mask
    # head of an ablation starts from scratch, also one whose names match the file's head)
    weights_modules: list[str] | None = None
    # which mask the mask head learns and the evaluation scores: "visible" (modal) or "amodal"
    # (the full extent incl. occluded parts; needs a synthetic / KINS / COCOA layout). With
    # "amodal" the training boxes become the amodal boxes and BCNet's occludee branch is
    # supervised with the amodal masks (occluder targets still come from visible masks).
    mask_target: str = "visible"
    # top-level modules kept fixed during training, e.g. [backbone, detector] trains the mask head
    # alone on top of `weights` (the same detections for every mask head in an ablation)
    freeze: list[str] = field(default_factory=list)
    # mask-head RoI features pooled with aligned=True like the mask targets; False: torchvision's
    # legacy half-pixel-shifted pooling. Weights files written before this key existed were
    # trained with the legacy pooling: their meta reads as False (engine.weights.WeightsMeta).
    roi_aligned: bool = True


@dataclass
class VideoModelConfig:
    name: str = "pcan_fast"  # key of instseg.models.video.zoo.PCAN_MODELS
    image_model: str = "effl0_fcos_maskrcnn"  # key of instseg.models.zoo.MODELS (image part)
    pretrained: bool = True  # ImageNet backbone weights (EfficientNet-Lite0 ships offline)
    frozen_bn: bool | None = None  # backbone BatchNorm frozen/folded (None: when pretrained)
    class_aware_masks: bool = False  # one mask per class (True) or class-agnostic (False)
    memory_length: int = 8  # T: frames of prototypes kept in the PCAM memory
    image_weights: str | None = None  # image model.pt to start the segmenter from (recommended)
    weights: str | None = None  # full PCAN weights to start from (fine-tuning)
    roi_aligned: bool = True  # as ModelConfig.roi_aligned (the segmenter's mask RoI pooling)
    # instance prototypes (survey Tables 5.6 / 5.7): [foreground, background] counts (None: the
    # zoo model's, 8 + 8 for pcan_fast) and the Eq. 5.8 update: momentum | initial | off
    instance_prototypes: list[int] | None = None
    instance_update: str = "momentum"
    instance_momentum: float = 0.2


def build_model_from_config(cfg: ModelConfig, *, num_classes: int, **extra: Any) -> torch.nn.Module:
    """Zoo model for ``cfg``; ``extra`` keywords go to the builder (segmenter overrides)."""
    from instseg.models.zoo import build_model

    kw: dict[str, Any] = {
        **extra,
        "num_classes": num_classes,
        "pretrained": cfg.pretrained,
        "class_aware_masks": cfg.class_aware_masks,
        "roi_aligned": cfg.roi_aligned,
    }
    if cfg.backbone_weights:
        kw["weights"] = cfg.backbone_weights
    if cfg.frozen_bn is not None:
        kw["frozen_bn"] = cfg.frozen_bn
    model = build_model(cfg.name, **kw)
    if cfg.weights:
        from instseg.engine.checkpoint import load_model_weights

        load_model_weights(model, cfg.weights, strict=False, modules=cfg.weights_modules)
    freeze_modules(model, cfg.freeze)
    return model


def freeze_modules(model: torch.nn.Module, names: list[str]) -> None:
    """Fix the parameters of the named top-level submodules (``requires_grad=False``).

    Raises ``ValueError`` naming an unknown module. Frozen modules get no gradient and no
    optimizer state, and their BatchNorm layers always normalise with the stored statistics
    (inference behaviour, running averages unchanged) even while the model trains.
    """
    children = dict(model.named_children())
    for name in names:
        if name not in children:
            raise ValueError(
                f"model.freeze: no module {name!r} in {type(model).__name__} "
                f"(top-level modules: {', '.join(children)})"
            )
        children[name].requires_grad_(False)
        for m in children[name].modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.register_forward_pre_hook(_keep_eval)


def _keep_eval(module: torch.nn.Module, _inputs: Any) -> None:
    module.training = False


def build_video_model_from_config(cfg: VideoModelConfig, *, num_classes: int) -> PCAN:
    """PCAN zoo model for ``cfg`` (segmenter optionally from an image ``model.pt``)."""
    from instseg.engine.checkpoint import load_model_weights
    from instseg.models.video.zoo import build_pcan

    kw: dict[str, Any] = {
        "num_classes": num_classes,
        "image_model": cfg.image_model,
        "pretrained": cfg.pretrained,
        "class_aware_masks": cfg.class_aware_masks,
        "memory_length": cfg.memory_length,
        "roi_aligned": cfg.roi_aligned,
        "instance_prototypes": cfg.instance_prototypes,
        "instance_update": cfg.instance_update,
        "instance_momentum": cfg.instance_momentum,
    }
    if cfg.frozen_bn is not None:
        kw["frozen_bn"] = cfg.frozen_bn
    model = build_pcan(cfg.name, **kw)
    if cfg.image_weights:
        load_model_weights(model.segmenter, cfg.image_weights, strict=False)
    if cfg.weights:
        load_model_weights(model, cfg.weights, strict=False)
    return model
