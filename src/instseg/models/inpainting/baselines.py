"""Non-learned inpainting baselines for the VOIN table.

- :func:`inpaint_opencv`: per-frame OpenCV image inpainting, Telea (fast marching) or
  Navier-Stokes (``cv2.inpaint``), no temporal information; with ``source`` it draws only on
  the given pixels (VOIN's occlusion-aware leftover fill: the object's own known pixels, never
  the occluder that surrounds the hole).
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
    source: np.ndarray | None = None,
) -> np.ndarray:
    """Inpaint each frame independently.

    Args:
        frames: (T, H, W, 3) or (T, H, W) uint8; holes: (T, H, W) bool.
        source: (T, H, W) bool or None: the only pixels the fill may draw on (``cv2.inpaint``
            then also treats every other pixel as unknown, inside the box of ``holes | source``
            plus ``radius``; only the hole pixels are written). VOIN passes the object's known
            pixels (``amodal & ~holes``): the hole is the occluded part of the object, and the
            pixels around it that are not the object are mostly the occluder itself. A frame
            whose ``source`` has no pixel outside its holes is filled from all its pixels.
            None: every pixel outside the holes (plain Telea / Navier-Stokes).
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
    if source is not None and np.shape(source) != np.shape(holes):
        raise ValueError(f"source {np.shape(source)} vs holes {np.shape(holes)}")
    out = frames.copy()
    for t, (f, m) in enumerate(zip(frames, holes, strict=False)):
        if not m.any():
            continue
        m = np.asarray(m, bool)
        src = None if source is None else np.asarray(source[t], bool) & ~m
        if src is None or not src.any():
            res = cv2.inpaint(np.ascontiguousarray(f), m.astype(np.uint8), radius, flags[method])
            out[t][m] = res[m]
            continue
        ys, xs = np.nonzero(m | src)
        pad = int(np.ceil(radius)) + 1
        y0, y1 = max(ys.min() - pad, 0), min(ys.max() + 1 + pad, m.shape[0])
        x0, x1 = max(xs.min() - pad, 0), min(xs.max() + 1 + pad, m.shape[1])
        box = (slice(y0, y1), slice(x0, x1))
        unknown = (~src[box]).astype(np.uint8)  # the holes and every non-source pixel
        res = cv2.inpaint(np.ascontiguousarray(f[box]), unknown, radius, flags[method])
        region = out[t][box]
        region[m[box]] = res[m[box]]
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
    object_context: bool = False,
) -> PropagationBaselineResult:
    """Propagate along the flows, then Telea-inpaint whatever is left (see module docstring).

    ``forward``/``backward`` (T-1, H, W, 2) follow the ``instseg.models.inpainting.flow``
    convention. Hole pixels outside ``amodal`` are never propagated (they go to Telea).
    ``object_context``: Telea draws on the object's known pixels only (``amodal`` minus what
    is left, VOIN's occlusion-aware fill; needs ``amodal``); False: on every known pixel.
    """
    holes = np.asarray(holes, bool)
    if object_context and amodal is None:
        raise ValueError("propagation_baseline: object_context needs the amodal masks")
    res = propagate_pixels(
        frames, holes, forward, backward, amodal=amodal, cycle_threshold=cycle_threshold
    )
    src = np.asarray(amodal, bool) & ~res.unfilled if object_context else None
    out = inpaint_opencv(res.frames, res.unfilled, method="telea", radius=radius, source=src)
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
