"""The standard label-propagation protocol (first frame + a queue of recent frames, top-k,
local radius): queue bookkeeping, the radius, tracking two objects, and agreement with the
first-frame feature-NN baseline when the queue is off."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from instseg.evaluation.vos import region_similarity
from instseg.inference.mask_propagation import propagate_features
from instseg.models.video.mask_propagation import coverage
from instseg.models.video.mask_propagation_baselines import FeatureNNPropagator
from instseg.models.video.mask_propagation_labelprop import ContextLabelPropagator


def test_recent_frame_queue_is_bounded_and_ordered(toy_clip) -> None:  # noqa: ANN001
    feats, gts = toy_clip(frames=7, size=12)
    prop = ContextLabelPropagator(num_recent=3, topk=4, radius=3)
    state = prop.init(feats[0], coverage(gts[0], [1, 2], (12, 12), 1.0))
    assert state.recent == ()
    for t in range(1, 7):
        probs, state = prop.step(feats[t], state)
        assert probs.shape == (2, 12, 12)
        assert len(state.recent) == min(t, 3)
        # oldest first, the last one is the frame just propagated (with its soft labels)
        expect = feats[max(1, t - 2) : t + 1]
        for frame, f in zip(state.recent, expect, strict=True):
            assert torch.equal(frame.keys, f.flatten(1).t())
        last = state.recent[-1].labels
        assert torch.allclose(last[:, 1:].t().reshape(2, 12, 12), probs)
        assert torch.allclose(last.sum(1), torch.ones(144), atol=1e-5)
    assert ContextLabelPropagator(num_recent=0).step(feats[1], prop.init(
        feats[0], coverage(gts[0], [1, 2], (12, 12), 1.0)))[1].recent == ()  # fmt: skip


def test_local_radius_excludes_far_pixels() -> None:
    """The only cell of the previous frame resembling the query lies 6 cells away: with radius 3
    it gets no vote (the query takes the label of the dissimilar cells nearby), with radius 8 it
    decides the query's label."""
    c, size = 8, 12
    e = torch.eye(c)
    first = e[0][:, None, None].expand(c, size, size).clone()  # first frame: all background
    masks = torch.zeros(1, size, size)
    prev = first.clone()
    prev[:, 2, 8] = e[1]  # the look-alike of the query cell, 6 cells from (2, 2)
    prev_labels = torch.zeros(size * size, 2)
    prev_labels[:, 0] = 1.0
    prev_labels[2 * size + 8] = torch.tensor([0.0, 1.0])  # ... labelled object 1
    cur = first.clone()
    cur[:, 2, 2] = e[1]
    for radius, expect in ((3.0, 0.0), (8.0, 1.0)):
        prop = ContextLabelPropagator(num_recent=1, topk=1, radius=radius, first_radius=radius)
        state = prop.init(first, masks)
        state = type(state)(
            first=state.first,
            recent=(type(state.first)(keys=prev.flatten(1).t(), labels=prev_labels),),
            grid=state.grid,
        )
        probs, _ = prop.step(cur, state)
        assert probs[0, 2, 2].item() == pytest.approx(expect, abs=1e-6), radius


def test_labelprop_tracks_two_moving_squares(toy_clip) -> None:  # noqa: ANN001
    feats, gts = toy_clip(frames=10, size=24)
    prop = ContextLabelPropagator(num_recent=4, topk=5, radius=6)
    preds = list(propagate_features(feats, gts[0], propagator=prop, stride=1.0))
    assert np.array_equal(preds[0], gts[0])
    for p, g in zip(preds[1:], gts[1:], strict=True):
        for k in (1, 2):
            assert region_similarity(p == k, g == k) > 0.8, k


def test_first_frame_only_equals_feature_nn() -> None:
    g = torch.Generator().manual_seed(3)
    feats = [F.normalize(torch.randn(16, 10, 13, generator=g), dim=0) for _ in range(4)]
    masks = torch.zeros(2, 10, 13)
    masks[0, 2:5, 3:7], masks[1, 6:9, 8:12] = 1.0, 1.0
    masks[0, 5, 3:7] = 0.5  # a soft boundary row
    a = ContextLabelPropagator(num_recent=0, topk=7, tau=0.05)
    b = FeatureNNPropagator(topk=7, tau=0.05, window=0.0)
    sa, sb = a.init(feats[0], masks), b.init(feats[0], masks)
    for f in feats[1:]:
        pa, sa = a.step(f, sa)
        pb, sb = b.step(f, sb)
        assert torch.allclose(pa, pb, atol=1e-6)
    labels = np.zeros((10, 13), np.uint8)
    labels[2:5, 3:7], labels[6:9, 8:12] = 1, 2
    la = list(propagate_features(feats, labels, propagator=a, stride=1.0))
    lb = list(propagate_features(feats, labels, propagator=b, stride=1.0))
    assert all(np.array_equal(x, y) for x, y in zip(la, lb, strict=True))


@pytest.mark.parametrize("tile", [1, 3, 8])
@pytest.mark.parametrize("first_radius", [None, 2.5])
def test_matches_a_brute_force_vote(tile: int, first_radius: float | None) -> None:
    """Tiled local search == the protocol written out cell by cell (any tile size)."""
    g = torch.Generator().manual_seed(tile)
    h, w, c, k, tau, radius = 7, 9, 6, 4, 0.1, 2.0
    feats = [F.normalize(torch.randn(c, h, w, generator=g), dim=0) for _ in range(4)]
    masks = (torch.rand(2, h, w, generator=g) > 0.7).float() * 0.5
    prop = ContextLabelPropagator(
        num_recent=2, topk=k, radius=radius, tau=tau, first_radius=first_radius, tile=tile
    )
    state = prop.init(feats[0], masks)
    fg = masks.flatten(1).t()
    ctx = [(feats[0].flatten(1).t(), torch.cat([1 - fg.sum(1, keepdim=True), fg], 1))]
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    pos = torch.stack([yy.flatten(), xx.flatten()], 1).float()
    for t in range(1, 4):
        probs, state = prop.step(feats[t], state)
        q = feats[t].flatten(1).t()
        out = torch.zeros(h * w, 3)
        for i in range(h * w):
            sims, labs = [], []
            for j, (keys, lab) in enumerate(ctx):
                r = first_radius if j == 0 else radius
                near = torch.ones(h * w, dtype=torch.bool)
                if r is not None:
                    near = ((pos - pos[i]) ** 2).sum(1) <= r * r
                sims.append(keys[near] @ q[i])
                labs.append(lab[near])
            s, lab = torch.cat(sims), torch.cat(labs)
            v, idx = s.topk(min(k, len(s)))
            out[i] = ((v / tau).softmax(0)[:, None] * lab[idx]).sum(0)
        assert torch.allclose(probs, out[:, 1:].t().reshape(2, h, w), atol=1e-5), t
        ctx = [ctx[0], *ctx[1:], (q, out)]
        ctx = [ctx[0], *ctx[1:][-2:]]
