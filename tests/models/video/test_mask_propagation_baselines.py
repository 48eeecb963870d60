"""Baselines of first-frame mask propagation: chained DIS-flow warping of the first mask."""

from __future__ import annotations

import numpy as np

from instseg.models.video.mask_propagation_baselines import flow_propagate


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max(1, (a | b).sum()))


def test_flow_propagate_follows_a_translating_square() -> None:
    rng = np.random.default_rng(0)
    tex = (rng.random((120, 160, 3)) * 255).astype(np.uint8)
    tex = np.ascontiguousarray(np.kron(tex[::4, ::4], np.ones((4, 4, 1), np.uint8)))
    frames, gts = [], []
    for t in range(4):
        f = np.roll(tex, 0, axis=1).copy()
        lab = np.zeros((120, 160), np.uint8)
        x0 = 40 + 3 * t
        f[40:80, x0 : x0 + 40] = np.roll(tex, 37, axis=0)[40:80, 40 - 3 * t : 80 - 3 * t][::-1]
        lab[40:80, x0 : x0 + 40] = 1
        frames.append(f)
        gts.append(lab)
    preds = list(flow_propagate(frames, gts[0], preset="medium"))
    assert np.array_equal(preds[0], gts[0])
    assert _iou(preds[-1] == 1, gts[-1] == 1) > 0.8
