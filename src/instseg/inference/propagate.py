"""Old import path of first-frame mask propagation helpers (only what scripts/train_*.py
imports); new code imports from :mod:`instseg.inference.mask_propagation` and
:mod:`instseg.models.video.mask_propagation`."""

from __future__ import annotations

# moved to instseg.inference.mask_propagation; kept for scripts/train_*.py until merged
from instseg.inference.mask_propagation import BackboneFeatures, feature_stride

# moved to instseg.models.video.mask_propagation; kept for scripts/train_*.py until merged
from instseg.models.video.mask_propagation import coverage, object_ids_of

__all__ = ["BackboneFeatures", "coverage", "feature_stride", "object_ids_of"]
