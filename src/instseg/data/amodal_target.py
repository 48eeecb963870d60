"""Amodal mask supervision (survey ch. 3.3, KINS / COCOA): train the mask head on amodal masks.

:class:`UseAmodalMasks` is a transform that makes the amodal mask the main target of an
:class:`~instseg.structures.Instances`: ``masks`` <- amodal masks and ``boxes`` <- their tight
boxes, so the detector learns amodal boxes (a mask is pasted inside its box: a visible box
would cut the occluded part off) and the mask head, e.g. BCNet's occludee branch, learns the
full object extent. The occluder targets of BCNet's first layer are computed from the *visible*
masks before the swap (when the data does not carry them already): what hides an object is the
visible part of the objects in front of it.
"""

from __future__ import annotations

import torch
from torch import Tensor

from instseg.structures import Instances, masks_to_boxes

__all__ = ["UseAmodalMasks"]


class UseAmodalMasks:
    """Transform ``t(image, instances, *, generator=None) -> (image, instances)``.

    In: ``masks`` bool (N, H, W) visible, ``amodal_masks`` bool (N, H, W), optional
    ``occluder_masks`` and ``depth``. Out: ``masks`` = ``amodal_masks`` = amodal | visible
    (an amodal mask always contains the visible one; an instance without an amodal mask keeps
    its visible mask), ``boxes`` float32 (N, 4) tight xyxy boxes of those masks,
    ``occluder_masks`` (N, H, W) from the visible masks (kept when given). Put it last in the
    training ``Compose`` (after crops/resizes, so the boxes fit the final masks).

    Raises ValueError when the instances have masks but no amodal masks (a plain COCO file).
    """

    def __call__(
        self, image: Tensor, inst: Instances, *, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Instances]:
        if inst.masks is None:
            return image, inst  # boxes only: nothing to supervise
        if inst.amodal_masks is None:
            raise ValueError(
                "model.mask_target=amodal needs amodal masks; the data has none (use a "
                "synthetic, KINS or COCOA layout file)"
            )
        visible = inst.masks.bool()
        occ = inst.occluder_masks
        if occ is None:
            from instseg.data.occlusion import compute_occluder_masks

            occ = compute_occluder_masks(
                visible, inst.boxes, depth=inst.depth, amodal_masks=inst.amodal_masks.bool()
            )
        amodal = inst.amodal_masks.bool() | visible
        boxes = masks_to_boxes(amodal).to(inst.boxes.dtype) if len(inst) else inst.boxes
        return image, inst.replace(
            masks=amodal, amodal_masks=amodal, boxes=boxes, occluder_masks=occ
        )

    def __repr__(self) -> str:
        return "UseAmodalMasks()"
