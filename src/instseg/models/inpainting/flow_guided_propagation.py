"""Flow-guided pixel propagation (paper Sect. 5.4.3, following DFVI / FGVC): VOIN's
"propagation", colours carried along optical flow into the holes (not the first-frame *mask*
propagation of :mod:`instseg.models.video.mask_propagation`).

For every hole pixel of frame ``t`` a trajectory is followed through consecutive flows, forward
(``t -> t+1 -> ...``) and backward (``t -> t-1 -> ...``), until it lands where the colour is
known. Each step is checked with the forward-backward cycle: from position ``p`` in frame ``s``
with step flow ``f = flow_{s->s'}(p)``, the reverse flow ``b = flow_{s'->s}(p + f)`` must bring
it back, ``||f + b|| <= cycle_threshold`` (5 px in the paper); a trajectory that fails (or
leaves the image) stops and does not propagate. The two directions are blended by temporal
distance; pixels reached by neither are returned as ``unfilled`` for the generator.

Choices where the paper is silent (documented here):

- Flows are sampled bilinearly at sub-pixel positions; the colour at the landing point is
  sampled bilinearly from the *known* neighbours only: a landing point counts as "known" only if
  every pixel with non-zero bilinear weight is outside that frame's hole (and, with ``amodal``,
  inside that frame's object). Otherwise the trajectory continues.
- With ``amodal`` ("warp only pixels within the foreground object region"): only hole pixels
  inside the amodal mask are targets (others stay ``unfilled``), and a trajectory whose landing
  point is known but *outside* the source frame's amodal mask stops (it would copy background
  into the object).
- Blending: with a forward candidate at distance ``d_f`` frames and a backward one at ``d_b``,
  weights are ``d_b / (d_f + d_b)`` and ``d_f / (d_f + d_b)`` (the nearer frame counts more);
  one candidate is used as is. ``max_steps`` caps the trajectory length (default: whole clip).
- Propagated values come from the *input* frames only (no iterative re-use of filled pixels).

Everything is vectorised with numpy over the hole pixels of a frame; the loop is over frames,
directions and steps.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

__all__ = ["PixelPropagationResult", "propagate_pixels"]


@dataclass
class PixelPropagationResult:
    """``frames`` (T, H, W, C) same dtype as the input, holes filled where propagation reached;
    ``filled`` (T, H, W) bool, hole pixels filled by propagation; ``unfilled`` (T, H, W) bool,
    hole pixels still missing (for the generator / an image inpainter);
    ``distance`` (T, H, W) float, mean temporal distance of the sources used (0 elsewhere)."""

    frames: np.ndarray
    filled: np.ndarray
    unfilled: np.ndarray
    distance: np.ndarray


def propagate_pixels(
    frames: np.ndarray,
    holes: np.ndarray,
    forward: np.ndarray,
    backward: np.ndarray,
    *,
    amodal: np.ndarray | None = None,
    cycle_threshold: float = 5.0,
    max_steps: int | None = None,
    targets: Iterable[int] | None = None,
) -> PixelPropagationResult:
    """Fill ``holes`` in ``frames`` by following flows to frames where the pixel is known.

    Args:
        frames: (T, H, W, C) or (T, H, W) uint8/float; values inside the holes are ignored.
        holes: (T, H, W) bool, True = missing.
        forward: (T-1, H, W, 2) flows ``t -> t+1``; backward: (T-1, H, W, 2) ``t+1 -> t``
            (any float dtype; float16 storage is read as float32).
        amodal: optional (T, H, W) bool object masks (see module docstring).
        cycle_threshold: max forward-backward error in pixels per step.
        max_steps: longest trajectory in frames (None: T-1).
        targets: the frames whose holes are filled (None: all); the other frames are only
            sources (their holes stay unfilled in the result). Filling frames ``a..b`` of a
            long video this way from the span ``a - R .. b + R`` with ``max_steps = R`` gives
            exactly what propagating over the whole video with ``max_steps = R`` gives them.
    """
    frames = np.asarray(frames)
    squeeze = frames.ndim == 3
    data = (frames[..., None] if squeeze else frames).astype(np.float32)
    holes = np.asarray(holes, bool)
    t_len, h, w = holes.shape
    _check(data, holes, forward, backward, amodal)
    steps = t_len - 1 if max_steps is None else min(max_steps, t_len - 1)
    target = holes if amodal is None else holes & amodal
    known = ~holes if amodal is None else ~holes & amodal
    out = data.copy()
    filled = np.zeros_like(holes)
    dist_map = np.zeros(holes.shape, np.float32)
    for t in range(t_len) if targets is None else targets:
        if not 0 <= t < t_len:
            raise ValueError(f"propagate_pixels: target frame {t} outside 0..{t_len - 1}")
        ys, xs = np.nonzero(target[t])
        if ys.size == 0:
            continue
        pts = np.stack([xs, ys], 1).astype(np.float32)
        cands = [
            _follow(pts, t, d, steps, data, holes, known, forward, backward, cycle_threshold)
            for d in (1, -1)
        ]
        (cf, df), (cb, db) = cands
        ok_f, ok_b = df > 0, db > 0
        wf = np.where(ok_f & ok_b, db / np.maximum(df + db, 1), ok_f.astype(np.float32))
        wb = np.where(ok_f & ok_b, df / np.maximum(df + db, 1), ok_b.astype(np.float32))
        any_ok = ok_f | ok_b
        val = wf[:, None] * cf + wb[:, None] * cb
        out[t, ys[any_ok], xs[any_ok]] = val[any_ok]
        filled[t, ys[any_ok], xs[any_ok]] = True
        dist_map[t, ys, xs] = np.where(any_ok, (wf * df + wb * db), 0.0)
    if np.issubdtype(frames.dtype, np.integer):
        info = np.iinfo(frames.dtype)
        out = np.clip(np.rint(out), info.min, info.max)
    out = out.astype(frames.dtype)
    return PixelPropagationResult(
        frames=out[..., 0] if squeeze else out,
        filled=filled,
        unfilled=holes & ~filled,
        distance=dist_map,
    )


# ----------------------------------------------------------------------------------- helpers
def _follow(
    pts: np.ndarray,
    t: int,
    direction: int,
    steps: int,
    data: np.ndarray,
    holes: np.ndarray,
    known: np.ndarray,
    forward: np.ndarray,
    backward: np.ndarray,
    thr: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Follow ``pts`` (N, 2) of frame ``t`` in ``direction``; returns colours (N, C) and the
    distance in frames where found (0 = not found)."""
    n, c = len(pts), data.shape[-1]
    h, w = holes.shape[1:]
    colour = np.zeros((n, c), np.float32)
    dist = np.zeros(n, np.float32)
    alive = np.arange(n)
    p = pts.copy()
    s = t
    for k in range(1, steps + 1):
        s_next = s + direction
        if alive.size == 0 or not 0 <= s_next < len(holes):
            break
        if direction > 0:
            step, reverse = forward[s], backward[s]
        else:
            step, reverse = backward[s - 1], forward[s - 1]
        f = _bilinear(step, p)
        q = p + f
        inside = (q[:, 0] >= 0) & (q[:, 0] <= w - 1) & (q[:, 1] >= 0) & (q[:, 1] <= h - 1)
        b = _bilinear(reverse, np.clip(q, 0, [w - 1, h - 1]))
        ok = inside & (np.linalg.norm(f + b, axis=1) <= thr)
        alive, q = alive[ok], q[ok]
        is_known = _all_neighbours(known[s_next], q)
        in_hole = _any_neighbour(holes[s_next], q)
        found = is_known
        colour[alive[found]] = _bilinear(data[s_next], q[found])
        dist[alive[found]] = k
        # stop where found, or where the point is outside the hole but not usable (background)
        cont = ~found & in_hole
        alive, p, s = alive[cont], q[cont], s_next
    return colour, dist


def _corners(img_hw: tuple[int, int], pts: np.ndarray):
    h, w = img_hw
    x0 = np.clip(np.floor(pts[:, 0]).astype(np.int64), 0, w - 1)
    y0 = np.clip(np.floor(pts[:, 1]).astype(np.int64), 0, h - 1)
    fx = np.clip(pts[:, 0] - x0, 0.0, 1.0).astype(np.float32)
    fy = np.clip(pts[:, 1] - y0, 0.0, 1.0).astype(np.float32)
    x1, y1 = np.minimum(x0 + 1, w - 1), np.minimum(y0 + 1, h - 1)
    return x0, y0, x1, y1, fx, fy


def _bilinear(arr: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Sample ``arr`` (H, W, C) at float (x, y) ``pts`` (N, 2) -> (N, C) float32."""
    x0, y0, x1, y1, fx, fy = _corners(arr.shape[:2], pts)
    fx, fy = fx[:, None], fy[:, None]
    return (
        (arr[y0, x0] * (1 - fx) + arr[y0, x1] * fx) * (1 - fy)
        + (arr[y1, x0] * (1 - fx) + arr[y1, x1] * fx) * fy
    ).astype(np.float32)


_EPS = 1e-4


def _neighbours(mask: np.ndarray, pts: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """(value, has_weight) for the 4 bilinear neighbours of each point."""
    x0, y0, x1, y1, fx, fy = _corners(mask.shape, pts)
    wx1, wy1 = fx > _EPS, fy > _EPS
    wx0, wy0 = fx < 1 - _EPS, fy < 1 - _EPS
    return [
        (mask[y0, x0], wx0 & wy0),
        (mask[y0, x1], wx1 & wy0),
        (mask[y1, x0], wx0 & wy1),
        (mask[y1, x1], wx1 & wy1),
    ]


def _all_neighbours(mask: np.ndarray, pts: np.ndarray) -> np.ndarray:
    res = np.ones(len(pts), bool)
    for val, used in _neighbours(mask, pts):
        res &= val | ~used
    return res


def _any_neighbour(mask: np.ndarray, pts: np.ndarray) -> np.ndarray:
    res = np.zeros(len(pts), bool)
    for val, used in _neighbours(mask, pts):
        res |= val & used
    return res


def _check(data, holes, forward, backward, amodal) -> None:
    t_len, h, w = holes.shape
    if data.shape[:3] != holes.shape:
        raise ValueError(f"propagate_pixels: frames {data.shape[:3]} vs holes {holes.shape}")
    for name, f in (("forward", forward), ("backward", backward)):
        if np.shape(f) != (t_len - 1, h, w, 2):
            raise ValueError(
                f"propagate_pixels: {name} flow shape {np.shape(f)} != {(t_len - 1, h, w, 2)}"
            )
    if amodal is not None and np.shape(amodal) != holes.shape:
        raise ValueError(f"propagate_pixels: amodal {np.shape(amodal)} vs holes {holes.shape}")
