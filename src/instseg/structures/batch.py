"""The batches that flow from a loader into a model: :class:`Batch` (images) and
:class:`ClipBatch` (frame pairs of videos).

Images are padded to a common size (bottom/right, a multiple of ``size_divisibility``); the model
normalises pixel values itself (each backbone knows its mean/std), so the batch holds raw RGB.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from instseg.structures import Instances

__all__ = ["Batch", "ClipBatch", "collate_images"]


@dataclass
class Batch:
    """A batch of B images.

    - ``images``: float32 (B, 3, Hp, Wp), RGB in [0, 255], zero padded bottom/right
    - ``image_sizes``: B x (h, w), the valid (unpadded) size of each image after transforms
    - ``targets``: B x :class:`Instances` in the transformed image's pixel coordinates
      (masks (N, h, w) bool at the unpadded size), or None at inference
    - ``image_ids``: B ints (COCO image ids; -1 when unknown)
    - ``orig_sizes``: B x (H, W), size of the image file, for mapping predictions back
    - ``file_names``: B strings
    """

    images: Tensor
    image_sizes: list[tuple[int, int]]
    targets: list[Instances] | None = None
    image_ids: list[int] = field(default_factory=list)
    orig_sizes: list[tuple[int, int]] = field(default_factory=list)
    file_names: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def to(self, device: torch.device | str) -> Batch:
        return Batch(
            images=self.images.to(device, non_blocking=True),
            image_sizes=self.image_sizes,
            targets=[t.to(device) for t in self.targets] if self.targets is not None else None,
            image_ids=self.image_ids,
            orig_sizes=self.orig_sizes,
            file_names=self.file_names,
        )


@dataclass
class ClipBatch:
    """B (key, reference) frame pairs; ``key.targets[i]`` and ``reference.targets[i]`` come
    from the same video and carry ``track_ids`` (the same object has the same id in both).
    ``memory``: optional further frames of the same videos, oldest first, read into the PCAM
    memory before the reference (no loss on them, no gradients through them)."""

    key: Batch
    reference: Batch
    memory: tuple[Batch, ...] = ()

    def __len__(self) -> int:
        return len(self.key)

    def to(self, device: torch.device | str) -> ClipBatch:
        return ClipBatch(
            key=self.key.to(device),
            reference=self.reference.to(device),
            memory=tuple(m.to(device) for m in self.memory),
        )


def collate_images(
    images: list[Tensor], size_divisibility: int = 32
) -> tuple[Tensor, list[tuple[int, int]]]:
    """Pad (3, h_i, w_i) float tensors to (B, 3, Hp, Wp); Hp and Wp are multiples of
    ``size_divisibility``."""
    sizes = [(int(im.shape[-2]), int(im.shape[-1])) for im in images]
    hmax = max(s[0] for s in sizes)
    wmax = max(s[1] for s in sizes)
    d = max(1, size_divisibility)
    hp, wp = (hmax + d - 1) // d * d, (wmax + d - 1) // d * d
    out = images[0].new_zeros((len(images), 3, hp, wp))
    for i, im in enumerate(images):
        out[i, :, : im.shape[-2], : im.shape[-1]] = im
    return out, sizes
