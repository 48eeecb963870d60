"""Class splits for partially supervised and few-shot instance segmentation (survey ch. 4.3).

- COCO: ``voc`` = the 20 PASCAL VOC categories (by COCO name, :data:`VOC_CLASSES`), ``non_voc``
  = the other 60. Both directions are used: ``voc->non_voc`` (masks for VOC classes, novel
  non-VOC classes get boxes only) and ``non_voc->voc`` (Table 4.1; also the few-shot setting of
  Table 4.2, with VOC as the novel classes).
- Synthetic scenes (:mod:`instseg.data.synthetic`): ``base->novel`` from each category's
  ``"split"`` tag (``"base"`` | ``"novel"``).

:func:`resolve_split` turns a direction into (base category ids, novel category ids);
:class:`PartialMaskSupervision` is the transform that marks which instances keep mask
supervision: ``Instances.has_mask`` bool (N,), True only for base classes. The
:class:`~instseg.models.segmenter.InstanceSegmenter` reads it when it builds
:class:`~instseg.models.heads.base.MaskTargets`, so novel instances still train the detector
(boxes, classes) but give no mask-branch loss.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import Tensor

from instseg.structures import Instances

__all__ = ["VOC_CLASSES", "SPLITS", "resolve_split", "PartialMaskSupervision"]

#: the 20 PASCAL VOC categories, spelled as COCO category names
VOC_CLASSES: tuple[str, ...] = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "boat", "bird", "cat",
    "dog", "horse", "sheep", "cow", "bottle", "chair", "couch", "potted plant", "dining table",
    "tv",
)  # fmt: skip

#: the directions :func:`resolve_split` understands ("base side -> novel side")
SPLITS: tuple[str, ...] = ("voc->non_voc", "non_voc->voc", "base->novel")


def resolve_split(categories: Sequence[dict[str, Any]], name: str) -> tuple[list[int], list[int]]:
    """(base category ids, novel category ids), each sorted, for a direction in :data:`SPLITS`.

    Args:
        categories: COCO ``categories`` entries (``id``, ``name``; ``split`` for ``base->novel``).
        name: ``"voc->non_voc"``, ``"non_voc->voc"`` or ``"base->novel"`` (``-`` and ``_`` are
            interchangeable in the side names, e.g. ``"voc->non-voc"``).

    Raises ValueError for an unknown direction, categories without ``id``/``name``, a
    ``base->novel`` category without a valid ``split`` tag, or a split with an empty side.
    VOC names are matched exactly (COCO spelling); VOC classes absent from ``categories`` are
    simply not used (a subset of COCO is fine).
    """
    direction = name.replace(" ", "").replace("-", "_").replace("_>", "->")
    if direction not in SPLITS:
        raise ValueError(f"unknown class split {name!r}; valid: {', '.join(SPLITS)}")
    cats = _check_categories(categories)
    if direction == "base->novel":
        base, novel = _tagged(cats)
    else:
        voc = sorted(c["id"] for c in cats if c["name"] in VOC_CLASSES)
        non_voc = sorted(c["id"] for c in cats if c["name"] not in VOC_CLASSES)
        base, novel = (voc, non_voc) if direction == "voc->non_voc" else (non_voc, voc)
    if not base or not novel:
        side = "base" if not base else "novel"
        raise ValueError(
            f"class split {name!r} leaves no {side} category among {len(cats)} categories "
            f"(names: {', '.join(sorted(c['name'] for c in cats)[:8])}...)"
        )
    return base, novel


class PartialMaskSupervision:
    """Transform that sets ``instances.has_mask`` = (label is a base class).

    ``t(image, instances, *, generator=None) -> (image, instances)``, like every transform in
    :mod:`instseg.data.transforms`; put it last in a ``Compose`` (or anywhere: it only reads
    ``labels``). Labels are the dataset's contiguous indices; build from COCO category ids with
    :meth:`from_category_ids`.

    Args:
        base_labels: labels (0..K-1) whose instances keep mask supervision.
    """

    def __init__(self, *, base_labels: Iterable[int]) -> None:
        self.base_labels = sorted({int(v) for v in base_labels})
        if any(v < 0 for v in self.base_labels):
            raise ValueError(f"base_labels must be >= 0, got {self.base_labels}")

    @classmethod
    def from_category_ids(
        cls, category_ids: Sequence[int], base_ids: Iterable[int]
    ) -> PartialMaskSupervision:
        """category_ids: the dataset's ids in label order (``CocoInstanceDataset.category_ids``);
        base_ids: COCO ids of the base classes (e.g. from :func:`resolve_split`)."""
        base = {int(c) for c in base_ids}
        unknown = sorted(base - {int(c) for c in category_ids})
        if unknown:
            raise ValueError(f"base category ids {unknown} are not among the dataset's categories")
        return cls(base_labels=[i for i, c in enumerate(category_ids) if int(c) in base])

    def __call__(
        self, image: Tensor, inst: Instances, *, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Instances]:
        base = torch.tensor(self.base_labels, dtype=inst.labels.dtype, device=inst.labels.device)
        has_mask = torch.isin(inst.labels, base)
        return image, inst.replace(has_mask=has_mask)

    def __repr__(self) -> str:
        return f"PartialMaskSupervision(base_labels={self.base_labels})"


# -------------------------------------------------------------------- helpers


def _check_categories(categories: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for i, c in enumerate(categories):
        if not isinstance(c, dict) or "id" not in c or "name" not in c:
            raise ValueError(f"categories[{i}] needs 'id' and 'name', got {c!r}")
        out.append({**c, "id": int(c["id"]), "name": str(c["name"])})
    return out


def _tagged(cats: list[dict[str, Any]]) -> tuple[list[int], list[int]]:
    base, novel = [], []
    for c in cats:
        tag = c.get("split")
        if tag not in ("base", "novel"):
            raise ValueError(
                f"category {c['id']} ({c['name']!r}) has split={tag!r}; 'base->novel' needs "
                "every category tagged 'base' or 'novel' (synthetic scenes carry the tag)"
            )
        (base if tag == "base" else novel).append(c["id"])
    return sorted(base), sorted(novel)
