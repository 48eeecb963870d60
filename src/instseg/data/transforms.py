"""Joint image + :class:`Instances` transforms.

Every transform is a callable ``t(image, instances, *, generator=None) -> (image, instances)``
with ``image`` uint8 (3, H, W) RGB and ``instances`` in that image's pixel coordinates. All mask
kinds (``masks``, ``amodal_masks``, ``occluder_masks``) get the same geometric change, always
with nearest-neighbour sampling. Randomness comes from the torch RNG: ``generator`` when given
(the train loader passes one per sample, so augmentation is reproducible and resumable), else the
global torch RNG.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor

from instseg.structures import Instances, masks_to_boxes

__all__ = [
    "Transform",
    "Compose",
    "ResizeShortestEdge",
    "RandomHorizontalFlip",
    "RandomCrop",
    "build_transforms",
    "resize",
    "MASK_FIELDS",
]

MASK_FIELDS = ("masks", "amodal_masks", "occluder_masks")


class Transform(Protocol):
    def __call__(
        self, image: Tensor, inst: Instances, *, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Instances]: ...


class Compose:
    """Apply transforms in order."""

    def __init__(self, transforms: Sequence[Transform]) -> None:
        self.transforms = list(transforms)

    def __call__(
        self, image: Tensor, inst: Instances, *, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Instances]:
        for t in self.transforms:
            image, inst = t(image, inst, generator=generator)
        return image, inst

    def __repr__(self) -> str:
        return f"Compose({self.transforms!r})"


class ResizeShortestEdge:
    """Scale so the short side is ``s`` (drawn from ``short_edges``) and the long side at most
    ``max_size``. ``sample="choice"`` picks one of ``short_edges``; ``"range"`` draws an integer
    uniformly in ``[min(short_edges), max(short_edges)]`` (scale jitter)."""

    def __init__(
        self,
        *,
        short_edges: int | tuple[int, ...],
        max_size: int,
        sample: Literal["choice", "range"] = "choice",
    ) -> None:
        edges = (short_edges,) if isinstance(short_edges, int) else tuple(short_edges)
        if not edges or min(edges) <= 0 or max_size <= 0:
            raise ValueError(f"invalid short_edges={short_edges} / max_size={max_size}")
        if sample not in ("choice", "range"):
            raise ValueError(f"sample must be 'choice' or 'range', got {sample!r}")
        self.short_edges, self.max_size, self.sample = edges, max_size, sample

    def __call__(
        self, image: Tensor, inst: Instances, *, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Instances]:
        h, w = image.shape[-2:]
        if self.sample == "choice":
            k = int(torch.randint(len(self.short_edges), (1,), generator=generator))
            short = self.short_edges[k]
        else:
            lo, hi = min(self.short_edges), max(self.short_edges)
            short = int(torch.randint(lo, hi + 1, (1,), generator=generator))
        scale = short / min(h, w)
        if max(h, w) * scale > self.max_size:
            scale = self.max_size / max(h, w)
        new_h, new_w = max(1, int(h * scale + 0.5)), max(1, int(w * scale + 0.5))
        return resize(image, inst, (new_h, new_w))

    def __repr__(self) -> str:
        return f"ResizeShortestEdge({self.short_edges}, max_size={self.max_size}, {self.sample})"


class RandomHorizontalFlip:
    """Mirror left-right with probability ``p``."""

    def __init__(self, *, p: float = 0.5) -> None:
        self.p = p

    def __call__(
        self, image: Tensor, inst: Instances, *, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Instances]:
        if float(torch.rand((), generator=generator)) >= self.p:
            return image, inst
        w = image.shape[-1]
        boxes = inst.boxes.clone()
        boxes[:, 0], boxes[:, 2] = w - inst.boxes[:, 2], w - inst.boxes[:, 0]
        changes = {
            k: getattr(inst, k).flip(-1) for k in MASK_FIELDS if getattr(inst, k) is not None
        }
        return image.flip(-1), inst.replace(boxes=boxes, **changes)


class RandomCrop:
    """Crop a random window of ``size`` = (h, w) pixels (``kind="absolute"``, capped at the image
    size) or of that fraction of the image (``kind="relative"``, values in (0, 1]).

    Instances whose visible mask (or amodal mask) becomes empty are removed; with masks, boxes are
    recomputed from the cropped visible masks, otherwise clipped (zero-area boxes are removed)."""

    def __init__(
        self,
        *,
        size: tuple[float, float],
        kind: Literal["absolute", "relative"] = "absolute",
    ) -> None:
        if kind not in ("absolute", "relative"):
            raise ValueError(f"kind must be 'absolute' or 'relative', got {kind!r}")
        if kind == "relative" and not all(0 < s <= 1 for s in size):
            raise ValueError(f"relative crop size must be in (0, 1], got {size}")
        if kind == "absolute" and not all(s >= 1 for s in size):
            raise ValueError(f"absolute crop size must be >= 1 pixel, got {size}")
        self.size, self.kind = (float(size[0]), float(size[1])), kind

    def __call__(
        self, image: Tensor, inst: Instances, *, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Instances]:
        h, w = image.shape[-2:]
        if self.kind == "relative":
            ch, cw = max(1, int(h * self.size[0] + 0.5)), max(1, int(w * self.size[1] + 0.5))
        else:
            ch, cw = min(h, int(self.size[0])), min(w, int(self.size[1]))
        y0 = int(torch.randint(h - ch + 1, (1,), generator=generator))
        x0 = int(torch.randint(w - cw + 1, (1,), generator=generator))
        return crop(image, inst, (y0, x0, ch, cw))

    def __repr__(self) -> str:
        return f"RandomCrop(size={self.size}, kind={self.kind!r})"


def resize(image: Tensor, inst: Instances, size: tuple[int, int]) -> tuple[Tensor, Instances]:
    """Resize to ``size`` = (h, w): bilinear (antialiased) image, nearest masks, scaled boxes.
    Instances whose masks all vanish are removed."""
    h, w = image.shape[-2:]
    new_h, new_w = size
    if (new_h, new_w) == (h, w):
        return image, inst
    img = F.interpolate(
        image[None].float(),
        size=(new_h, new_w),
        mode="bilinear",
        align_corners=False,
        antialias=True,
    )[0]
    img = img.round().clamp(0, 255).to(torch.uint8)
    scale = torch.tensor([new_w / w, new_h / h, new_w / w, new_h / h])
    changes: dict[str, Tensor] = {"boxes": inst.boxes * scale}
    for k in MASK_FIELDS:
        m = getattr(inst, k)
        if m is not None:
            changes[k] = _resize_masks(m, (new_h, new_w))
    out = inst.replace(image_size=(new_h, new_w), **changes)
    return img, _drop_vanished(out)


def crop(
    image: Tensor, inst: Instances, window: tuple[int, int, int, int]
) -> tuple[Tensor, Instances]:
    """Crop ``window`` = (y0, x0, h, w); see :class:`RandomCrop` for what happens to instances."""
    y0, x0, ch, cw = window
    img = image[:, y0 : y0 + ch, x0 : x0 + cw]
    boxes = inst.boxes - torch.tensor([x0, y0, x0, y0], dtype=inst.boxes.dtype)
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, cw)
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, ch)
    changes: dict[str, Tensor] = {}
    for k in MASK_FIELDS:
        m = getattr(inst, k)
        if m is not None:
            changes[k] = m[:, y0 : y0 + ch, x0 : x0 + cw]
    if inst.masks is not None:
        vis = changes["masks"]
        nonempty = vis.flatten(1).any(1)
        boxes[nonempty] = masks_to_boxes(vis[nonempty])
    out = inst.replace(image_size=(ch, cw), boxes=boxes, **changes)
    return img.contiguous(), _drop_vanished(out)


def _resize_masks(masks: Tensor, size: tuple[int, int]) -> Tensor:
    if masks.shape[0] == 0:
        return masks.new_zeros((0, *size))
    out = F.interpolate(masks[None].to(torch.uint8), size=size, mode="nearest-exact")[0]
    return out.bool()


def _drop_vanished(inst: Instances) -> Instances:
    """Keep instances with a non-empty visible or amodal mask; without masks, a box with area."""
    if inst.masks is None and inst.amodal_masks is None:
        keep = (inst.boxes[:, 2] > inst.boxes[:, 0]) & (inst.boxes[:, 3] > inst.boxes[:, 1])
    else:
        keep = torch.zeros(len(inst), dtype=torch.bool)
        for m in (inst.masks, inst.amodal_masks):
            if m is not None:
                keep |= m.flatten(1).any(1)
    return inst if bool(keep.all()) else inst[keep]


def build_transforms(
    *,
    train: bool,
    min_size: int | tuple[int, ...],
    max_size: int,
    sample: Literal["choice", "range"] = "choice",
    flip: bool = True,
    flip_prob: float = 0.5,
    crop_size: tuple[float, float] | None = None,
    crop_kind: Literal["absolute", "relative"] = "relative",
) -> Compose:
    """Standard pipeline. Train: [RandomCrop] -> ResizeShortestEdge(min_size, sample) ->
    RandomHorizontalFlip(flip_prob) (left out when ``flip`` is False). Test:
    ResizeShortestEdge(max(min_size)) only (deterministic)."""
    if not train:
        edge = min_size if isinstance(min_size, int) else max(min_size)
        return Compose([ResizeShortestEdge(short_edges=edge, max_size=max_size)])
    ts: list[Transform] = []
    if crop_size is not None:
        ts.append(RandomCrop(size=crop_size, kind=crop_kind))
    ts.append(ResizeShortestEdge(short_edges=min_size, max_size=max_size, sample=sample))
    if flip and flip_prob > 0:
        ts.append(RandomHorizontalFlip(p=flip_prob))
    return Compose(ts)
