"""Non-learned inpainting baselines for the VOIN table.

- :func:`inpaint_opencv`: per-frame OpenCV image inpainting, Telea (fast marching) or
  Navier-Stokes (``cv2.inpaint``), no temporal information.
- :func:`propagation_baseline`: flow-guided pixel propagation (:func:`propagate_pixels`) and
  then Telea for the pixels propagation could not reach. The result is *flagged*: ``fallback``
  marks the pixels that came from Telea, so the numbers are reported as "propagation + Telea",
  never as pure propagation (DFVI / FGVC do the same with DeepFill for the leftovers).
- :func:`hull_amodal`: the non-learned amodal guess used without a shape network (convex hull
  of the visible mask clipped to the occluder).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np

from instseg.models.inpainting.flow_guided_propagation import propagate_pixels

__all__ = ["inpaint_opencv", "PropagationBaselineResult", "propagation_baseline", "hull_amodal"]


def inpaint_opencv(
    frames: np.ndarray,
    holes: np.ndarray,
    *,
    method: Literal["telea", "ns"] = "telea",
    radius: float = 5.0,
) -> np.ndarray:
    """Inpaint each frame independently.

    Args:
        frames: (T, H, W, 3) or (T, H, W) uint8; holes: (T, H, W) bool.
    Returns:
        (T, H, W[, 3]) uint8; pixels outside the holes are unchanged.
    """
    flags = {"telea": cv2.INPAINT_TELEA, "ns": cv2.INPAINT_NS}
    if method not in flags:
        raise ValueError(f"method must be 'telea' or 'ns', got {method!r}")
    frames = np.asarray(frames)
    if frames.dtype != np.uint8:
        raise TypeError(f"cv2.inpaint needs uint8 frames, got {frames.dtype}")
    if frames.shape[:3] != np.shape(holes):
        raise ValueError(f"frames {frames.shape[:3]} vs holes {np.shape(holes)}")
    out = frames.copy()
    for t, (f, m) in enumerate(zip(frames, holes, strict=False)):
        if m.any():
            res = cv2.inpaint(np.ascontiguousarray(f), m.astype(np.uint8), radius, flags[method])
            out[t][m] = res[m]
    return out


@dataclass
class PropagationBaselineResult:
    """``frames`` (T, H, W, 3) uint8; ``propagated`` (T, H, W) bool, hole pixels filled by
    propagation; ``fallback`` (T, H, W) bool, hole pixels filled by Telea instead;
    ``propagated_fraction`` share of hole pixels filled by propagation (NaN without holes)."""

    frames: np.ndarray
    propagated: np.ndarray
    fallback: np.ndarray
    propagated_fraction: float


def propagation_baseline(
    frames: np.ndarray,
    holes: np.ndarray,
    forward: np.ndarray,
    backward: np.ndarray,
    *,
    amodal: np.ndarray | None = None,
    cycle_threshold: float = 5.0,
    radius: float = 5.0,
) -> PropagationBaselineResult:
    """Propagate along the flows, then Telea-inpaint whatever is left (see module docstring).

    ``forward``/``backward`` (T-1, H, W, 2) follow the ``instseg.models.inpainting.flow``
    convention. Hole pixels outside ``amodal`` are never propagated (they go to Telea).
    """
    holes = np.asarray(holes, bool)
    res = propagate_pixels(
        frames, holes, forward, backward, amodal=amodal, cycle_threshold=cycle_threshold
    )
    out = inpaint_opencv(res.frames, res.unfilled, method="telea", radius=radius)
    n = holes.sum()
    frac = float(res.filled.sum() / n) if n else float("nan")
    return PropagationBaselineResult(
        frames=out, propagated=res.filled, fallback=res.unfilled, propagated_fraction=frac
    )


def hull_amodal(visible: np.ndarray, occluder: np.ndarray) -> np.ndarray:
    """Non-learned amodal guess: per frame, ``visible | (convex_hull(visible) & occluder)``;
    (T, H, W) bool x2 -> (T, H, W) bool."""
    out = np.asarray(visible, bool).copy()
    occluder = np.asarray(occluder, bool)
    for t, v in enumerate(visible):
        ys, xs = np.nonzero(v)
        if len(xs) < 3:
            continue
        hull = cv2.convexHull(np.stack([xs, ys], 1).astype(np.int32))
        poly = np.zeros(v.shape, np.uint8)
        cv2.fillConvexPoly(poly, hull, 1)
        out[t] |= poly.astype(bool) & occluder[t]
    return out
