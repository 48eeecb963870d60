"""Typed structures and conversions shared by all methods."""

from instseg.structures.instances import Instances
from instseg.structures.masks import (
    mask_iou,
    mask_to_polygons,
    mask_to_rle,
    masks_to_boxes,
    polygons_to_mask,
    rle_to_mask,
    segmentation_to_mask,
)

__all__ = [
    "Instances",
    "mask_iou",
    "mask_to_polygons",
    "mask_to_rle",
    "masks_to_boxes",
    "polygons_to_mask",
    "rle_to_mask",
    "segmentation_to_mask",
]
