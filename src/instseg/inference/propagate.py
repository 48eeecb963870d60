"""Old import path of the first-frame mask propagation helpers.

# moved to instseg.inference.mask_propagation (BackboneFeatures, feature_stride) and
# instseg.models.video.mask_propagation (coverage, object_ids_of); kept for
# scripts/train_*.py until merged
"""

from __future__ import annotations

# moved to instseg.inference.mask_propagation / instseg.models.video.mask_propagation;
# kept for scripts/train_*.py until merged
from instseg.inference.mask_propagation import BackboneFeatures, feature_stride
from instseg.models.video.mask_propagation import coverage, object_ids_of

__all__ = ["BackboneFeatures", "coverage", "feature_stride", "object_ids_of"]
