"""Per-image results and targets as one typed structure.

An :class:`Instances` holds N instances of one image of size (H, W):

- ``boxes``: float32 (N, 4), absolute xyxy pixels
- ``labels``: int64 (N,), contiguous class indices (0..num_classes-1)
- ``scores``: float32 (N,), optional (targets have none)
- ``masks``: bool (N, H, W), optional: visible (modal) masks
- ``occluder_masks``: bool (N, H, W), optional: union of the instances occluding each one
- ``amodal_masks``: bool (N, H, W), optional: full object extent incl. occluded parts
- ``track_ids``: int64 (N,), optional: identities in a video
- ``depth``: int64 (N,), optional: depth order (0 = nearest the camera)
- ``has_mask``: bool (N,), optional (targets): mask supervision available (False: box only, e.g.
  novel classes in partially supervised training); None = every instance has its mask
- ``mask_logits``: float (N, K, M, M), optional (predictions): the mask head's logits on the
  RoI grid (K = 1 class-agnostic, else one per class), when asked for
- ``extra``: dict of other per-instance tensors (first dim N), e.g. ``iscrowd``, ``ids``
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

__all__ = ["Instances"]

_OPTIONAL = (
    "scores",
    "masks",
    "occluder_masks",
    "amodal_masks",
    "track_ids",
    "depth",
    "has_mask",
    "mask_logits",
)


@dataclass
class Instances:
    image_size: tuple[int, int]
    boxes: Tensor
    labels: Tensor
    scores: Tensor | None = None
    masks: Tensor | None = None
    occluder_masks: Tensor | None = None
    amodal_masks: Tensor | None = None
    track_ids: Tensor | None = None
    depth: Tensor | None = None
    has_mask: Tensor | None = None
    mask_logits: Tensor | None = None
    extra: dict[str, Tensor] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.image_size = (int(self.image_size[0]), int(self.image_size[1]))
        n = self.boxes.shape[0]
        if self.boxes.ndim != 2 or self.boxes.shape[1] != 4:
            raise ValueError(f"boxes must be (N, 4), got {tuple(self.boxes.shape)}")
        for name, value in self._fields():
            if value.shape[0] != n:
                raise ValueError(f"{name} has {value.shape[0]} rows, boxes have {n}")

    @staticmethod
    def empty(image_size: tuple[int, int], *, with_masks: bool = True) -> Instances:
        h, w = image_size
        return Instances(
            image_size=image_size,
            boxes=torch.zeros(0, 4),
            labels=torch.zeros(0, dtype=torch.long),
            scores=torch.zeros(0),
            masks=torch.zeros(0, h, w, dtype=torch.bool) if with_masks else None,
        )

    def _fields(self) -> list[tuple[str, Tensor]]:
        out = [("boxes", self.boxes), ("labels", self.labels)]
        out += [(k, getattr(self, k)) for k in _OPTIONAL if getattr(self, k) is not None]
        out += [(f"extra.{k}", v) for k, v in self.extra.items()]
        return out

    def __len__(self) -> int:
        return int(self.boxes.shape[0])

    def _map(self, fn: Any) -> Instances:
        kw = {k: (fn(v) if v is not None else None) for k, v in self._tensor_items()}
        kw["extra"] = {k: fn(v) for k, v in self.extra.items()}
        return Instances(image_size=self.image_size, **kw)

    def _tensor_items(self) -> list[tuple[str, Tensor | None]]:
        names = ("boxes", "labels") + _OPTIONAL
        return [(k, getattr(self, k)) for k in names]

    def __getitem__(self, index: int | slice | Tensor | list[int]) -> Instances:
        """Select instances by int, slice, bool mask or index tensor/list."""
        if isinstance(index, int):
            if not -len(self) <= index < len(self):
                raise IndexError(f"instance index {index} out of range for {len(self)}")
            index = slice(index, index + 1 if index != -1 else None)
        if isinstance(index, list):
            index = torch.as_tensor(index, dtype=torch.long)
        return self._map(lambda t: t[index])

    def to(self, *args: Any, **kwargs: Any) -> Instances:
        """Move every tensor (``.to(device)``); dtypes are kept unless a dtype is given (floats
        only)."""

        def move(t: Tensor) -> Tensor:
            if t.is_floating_point():
                return t.to(*args, **kwargs)
            dev = kwargs.get(
                "device", next((a for a in args if not isinstance(a, torch.dtype)), None)
            )
            return t.to(dev) if dev is not None else t

        return self._map(move)

    @staticmethod
    def cat(items: list[Instances]) -> Instances:
        """Concatenate instances of the same image. Optional fields must be present in all
        items or in none."""
        if not items:
            raise ValueError("Instances.cat needs at least one item")
        size = items[0].image_size
        if any(i.image_size != size for i in items):
            raise ValueError("Instances.cat: all items must have the same image_size")
        kw: dict[str, Any] = {}
        for name, _ in items[0]._tensor_items():
            vals = [getattr(i, name) for i in items]
            present = [v is not None for v in vals]
            if any(present) and not all(present):
                raise ValueError(f"Instances.cat: field '{name}' present in some items only")
            kw[name] = torch.cat(vals) if all(present) else None
        keys = set(items[0].extra)
        if any(set(i.extra) != keys for i in items):
            raise ValueError("Instances.cat: extra fields differ")
        kw["extra"] = {k: torch.cat([i.extra[k] for i in items]) for k in keys}
        return Instances(image_size=size, **kw)

    def replace(self, **changes: Any) -> Instances:
        return dataclasses.replace(self, **changes)

    def __repr__(self) -> str:
        fields = ", ".join(n for n, _ in self._fields())
        return f"Instances(num={len(self)}, image_size={self.image_size}, fields=[{fields}])"
