"""PCAN variants: one builder per variant with literal numbers, and one plain dict.

The image part comes from :mod:`instseg.models.zoo` (``image_model`` names a key of its
``MODELS``); the builders here add the frame-level PCAM (P3-P5), the QDTrack association head,
the tracker settings and the instance-level prototypes + TSM around it. Every builder takes
``(*, num_classes, image_model=..., pretrained=True, **image_kw)``; ``image_kw`` go to the image
builder (``frozen_bn``, ``class_aware_masks``, segmenter overrides such as ``max_detections``).

- ``pcan_fast``: the CPU default (paper settings scaled down: K = 16 frame prototypes per level,
  8+8 instance prototypes, T = 8 memory frames, 2-conv / 128-d track head).
- ``pcan_paper``: the paper's sizes (K = 30-64 -> 30 per level and per fg/bg set, T = 8,
  4-conv / 1024-fc / 256-d QDTrack head, momentum 0.2).
- ``pcan_tiny``: test-sized (a few seconds to build and run on CPU).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, get_args

from instseg.models.video.cross_attention import MultiLevelPCAM, PrototypicalCrossAttention
from instseg.models.video.instance_prototypes import (
    InstancePrototypeAttention,
    TemporalSegmentationModule,
    UpdateMode,
)
from instseg.models.video.pcan import PCAN
from instseg.models.video.tracker import Tracker, TrackHead
from instseg.models.zoo import build_model

__all__ = [
    "PCAN_MODELS", "build_pcan", "pcan_fast", "pcan_fast_image", "pcan_paper", "pcan_tiny",
]  # fmt: skip

PCAM_LEVELS = ("p3", "p4", "p5")


def pcan_fast(
    *,
    num_classes: int,
    image_model: str = "effl0_fcos_maskrcnn",
    pretrained: bool = True,
    memory_length: int = 8,
    temporal: bool = True,
    instance_prototypes: Sequence[int] | None = None,
    instance_update: str = "momentum",
    instance_momentum: float = 0.2,
    **image_kw: Any,
) -> PCAN:
    """CPU default: PCAM K=16 (Ck=32) on P3-P5, 2-conv 128-d track head, 8+8 instance
    prototypes, TSM 64 wide, T=8, Eq. 5.8 momentum 0.2. ``temporal=False``: see
    :func:`pcan_fast_image`. Every builder also takes ``instance_prototypes`` ([fg, bg]
    counts, None: the builder's), ``instance_update`` (Eq. 5.8: ``momentum`` | ``initial`` |
    ``off``) and ``instance_momentum`` (the ablation rows of survey Tables 5.6 / 5.7)."""
    return _pcan(
        num_classes=num_classes,
        image_model=image_model,
        pretrained=pretrained,
        image_kw=image_kw,
        temporal=temporal,
        num_prototypes=16,
        key_channels=32,
        track_convs=2,
        track_channels=64,
        track_fc=256,
        embed_dim=128,
        num_fg=8,
        num_bg=8,
        tsm_hidden=64,
        memory_length=memory_length,
        instance_prototypes=instance_prototypes,
        instance_update=instance_update,
        instance_momentum=instance_momentum,
    )


def pcan_paper(
    *,
    num_classes: int,
    image_model: str = "effl0_fcos_maskrcnn",
    pretrained: bool = True,
    memory_length: int = 8,
    instance_prototypes: Sequence[int] | None = None,
    instance_update: str = "momentum",
    instance_momentum: float = 0.2,
    **image_kw: Any,
) -> PCAN:
    """Paper sizes: PCAM K=30 (Ck=64) on P3-P5, QDTrack head (4 convs x 256, fc 1024,
    256-d), 30+30 instance prototypes (Table 5.6), TSM 128 wide, T=8."""
    return _pcan(
        num_classes=num_classes,
        image_model=image_model,
        pretrained=pretrained,
        image_kw=image_kw,
        num_prototypes=30,
        key_channels=64,
        track_convs=4,
        track_channels=256,
        track_fc=1024,
        embed_dim=256,
        num_fg=30,
        num_bg=30,
        tsm_hidden=128,
        memory_length=memory_length,
        instance_prototypes=instance_prototypes,
        instance_update=instance_update,
        instance_momentum=instance_momentum,
    )


def pcan_tiny(
    *,
    num_classes: int,
    image_model: str = "effl0_fcos_maskrcnn",
    pretrained: bool = False,
    memory_length: int = 2,
    instance_prototypes: Sequence[int] | None = None,
    instance_update: str = "momentum",
    instance_momentum: float = 0.2,
    **image_kw: Any,
) -> PCAN:
    """Test-sized: 32-channel FPN, K=4 frame prototypes, 3+3 instance prototypes, T=2."""
    image_kw = {"fpn_channels": 32, "max_detections": 10, **image_kw}
    return _pcan(
        num_classes=num_classes,
        image_model=image_model,
        pretrained=pretrained,
        image_kw=image_kw,
        num_prototypes=4,
        key_channels=8,
        track_convs=1,
        track_channels=32,
        track_fc=64,
        embed_dim=32,
        num_fg=3,
        num_bg=3,
        tsm_hidden=16,
        memory_length=memory_length,
        instance_prototypes=instance_prototypes,
        instance_update=instance_update,
        instance_momentum=instance_momentum,
    )


def pcan_fast_image(
    *,
    num_classes: int,
    image_model: str = "effl0_fcos_maskrcnn",
    pretrained: bool = True,
    memory_length: int = 8,
    **image_kw: Any,
) -> PCAN:
    """The image-only baseline of :func:`pcan_fast` (issue 15): the same per-frame segmenter,
    track head and tracker, trained by the same recipe, without any temporal memory: no
    frame-level PCAM (features pass unchanged), no instance prototypes and no temporal
    segmentation module. What PCAN's memory adds is the difference to ``pcan_fast``."""
    return pcan_fast(
        num_classes=num_classes,
        image_model=image_model,
        pretrained=pretrained,
        memory_length=memory_length,
        temporal=False,
        **image_kw,
    )


PCAN_MODELS: dict[str, Callable[..., PCAN]] = {
    "pcan_fast": pcan_fast,
    "pcan_fast_image": pcan_fast_image,
    "pcan_paper": pcan_paper,
    "pcan_tiny": pcan_tiny,
}


def build_pcan(name: str, **kwargs: Any) -> PCAN:
    """``PCAN_MODELS[name](**kwargs)`` with a clear error for unknown names."""
    if name not in PCAN_MODELS:
        raise KeyError(f"unknown PCAN model '{name}'; valid names: {', '.join(PCAN_MODELS)}")
    return PCAN_MODELS[name](**kwargs)


# -------------------------------------------------------------------- helpers


def _pcan(
    *,
    num_classes: int,
    image_model: str,
    pretrained: bool,
    image_kw: dict[str, Any],
    num_prototypes: int,
    key_channels: int,
    track_convs: int,
    track_channels: int,
    track_fc: int,
    embed_dim: int,
    num_fg: int,
    num_bg: int,
    tsm_hidden: int,
    memory_length: int,
    temporal: bool = True,
    instance_prototypes: Sequence[int] | None = None,
    instance_update: str = "momentum",
    instance_momentum: float = 0.2,
) -> PCAN:
    if instance_prototypes is not None:
        if len(instance_prototypes) != 2 or min(instance_prototypes) < 1:
            raise ValueError(
                f"instance_prototypes must be [foreground, background] counts >= 1, "
                f"got {list(instance_prototypes)}"
            )
        num_fg, num_bg = (int(n) for n in instance_prototypes)
    if instance_update not in get_args(UpdateMode):
        raise ValueError(
            f"instance_update must be one of {', '.join(get_args(UpdateMode))}, "
            f"got {instance_update!r}"
        )
    if not 0.0 <= instance_momentum <= 1.0:
        raise ValueError(f"instance_momentum must be in [0, 1], got {instance_momentum}")
    segmenter = build_model(image_model, num_classes=num_classes, pretrained=pretrained, **image_kw)
    c = int(segmenter.backbone.out_channels)
    missing = [lv for lv in PCAM_LEVELS if lv not in segmenter.backbone.names]
    if missing:
        raise ValueError(f"image model '{image_model}' has no FPN level(s) {missing} for PCAM")
    # the modules shared with the image-only baseline are built first, so that under one seed
    # both start from the same track head (the temporal modules draw from the RNG after it)
    track_head = TrackHead(
        in_channels=c,
        num_convs=track_convs,
        conv_channels=track_channels,
        fc_dim=track_fc,
        embed_dim=embed_dim,
    )
    # temporal=False: a PCAM without levels passes the features unchanged (image-only baseline)
    pcam = MultiLevelPCAM(
        per_level={
            lv: PrototypicalCrossAttention(
                in_channels=c, key_channels=key_channels, num_prototypes=num_prototypes
            )
            for lv in (PCAM_LEVELS if temporal else ())
        }
    )
    return PCAN(
        segmenter=segmenter,
        pcam=pcam,
        track_head=track_head,
        tracker=Tracker(),  # QDTrack: birth 0.7, gate 0.5, backdrops, duplicate removal
        instance_attention=InstancePrototypeAttention(
            in_channels=c, key_channels=key_channels, num_fg=num_fg, num_bg=num_bg
        )
        if temporal
        else None,
        tsm=TemporalSegmentationModule(in_channels=c, hidden=tsm_hidden) if temporal else None,
        track_levels=PCAM_LEVELS,
        memory_length=memory_length,
        instance_update=instance_update,  # type: ignore[arg-type]  # checked above
        instance_momentum=instance_momentum,
    )
