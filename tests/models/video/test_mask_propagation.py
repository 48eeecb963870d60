"""First-frame mask propagation with instance prototypes (and the feature-NN baseline, for
comparison) on toy feature maps with known motion."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from instseg.inference.mask_propagation import propagate_features
from instseg.models.video.mask_propagation import (
    PrototypePropagator,
    coverage,
    probs_to_labels,
    spatial_window,
)
from instseg.models.video.mask_propagation_baselines import FeatureNNPropagator


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max(1, (a | b).sum()))


@pytest.mark.parametrize(
    "make",
    [
        lambda: PrototypePropagator(num_fg=8, num_bg=16),
        lambda: PrototypePropagator(num_fg=8, num_bg=16, update="momentum"),
        lambda: PrototypePropagator(num_fg=8, num_bg=16, update="initial", window=0),
        lambda: FeatureNNPropagator(topk=5),
    ],
)
def test_propagators_follow_two_moving_objects(make, toy_clip) -> None:  # noqa: ANN001
    feats, gts = toy_clip()
    preds = list(propagate_features(feats, gts[0], propagator=make(), stride=1.0))
    assert len(preds) == len(gts) and np.array_equal(preds[0], gts[0])
    for p, g in zip(preds[1:], gts[1:], strict=True):
        for k in (1, 2):
            assert _iou(p == k, g == k) > 0.8, (k, _iou(p == k, g == k))


def test_prototype_values_carry_soft_boundary_labels() -> None:
    """Eq. 5.4 value prototypes: a prototype of cells half covered by the object carries ~0.5,
    so the read gives a fractional probability there (sub-cell boundaries after upsampling)."""
    c = 4
    feats = torch.zeros(c, 1, 3)
    feats[0, 0, 0], feats[1, 0, 1], feats[2, 0, 2] = 1.0, 1.0, 1.0  # three distinct cells
    cover = torch.tensor([[[1.0, 0.5, 0.0]]])  # object covers cell 0 and half of cell 1
    prop = PrototypePropagator(num_fg=2, num_bg=2, sigma=0.05, window=0)
    state = prop.init(feats, cover)
    vals = torch.cat([state.first.fg_values, state.first.bg_values], 1).flatten()
    assert torch.allclose(vals.sort().values, torch.tensor([0.0, 0.5, 0.5, 1.0]), atol=1e-3)
    probs, _ = prop.step(feats, state)
    assert torch.allclose(probs[0, 0], torch.tensor([1.0, 0.5, 0.0]), atol=1e-2)


def test_lost_object_keeps_its_prototypes_and_window(toy_clip) -> None:  # noqa: ANN001
    feats, gts = toy_clip(frames=2)
    prop = PrototypePropagator(num_fg=4, num_bg=8)
    state = prop.init(feats[0], coverage(gts[0], [1, 2], (24, 24), 1.0))
    objects = torch.from_numpy(gts[0] > 0)
    blank = torch.where(objects, feats[0][:, :1, :1], feats[0])  # the objects vanished
    _, nxt = prop.step(blank, state)
    assert torch.equal(nxt.prev, state.prev)
    assert torch.equal(nxt.running.fg_keys, state.running.fg_keys)


def test_spatial_window_minimum_radius() -> None:
    prev = torch.zeros(1, 40, 40, dtype=torch.bool)
    prev[0, 20, 20] = True  # a one-cell object
    tight, wide = spatial_window(prev, 1.0, 2.0), spatial_window(prev, 1.0, 10.0)
    assert tight[0, 20, 20] == 1 and wide[0, 20, 20] == 1
    assert tight[0, 20, 29] < 0.01 and wide[0, 20, 29] == 1  # 9 cells away
    assert torch.equal(spatial_window(prev, 0.0), torch.ones(1, 40, 40))


def test_probs_to_labels_picks_most_probable_object_above_half() -> None:
    probs = torch.tensor([[[0.9, 0.6, 0.2]], [[0.1, 0.7, 0.3]]])  # (M=2, 1, 3)
    lab = probs_to_labels(probs, [3, 7], (1, 3), 1.0)
    assert lab.tolist() == [[3, 7, 0]]
