"""Semi-supervised propagation (instance prototypes, feature-NN and DIS-flow baselines) on toy
feature maps with known motion."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from instseg.inference.propagate import (
    FeatureNNPropagator,
    PrototypePropagator,
    coverage,
    flow_propagate,
    probs_to_labels,
    propagate_features,
    spatial_window,
)


def _toy_clip(frames: int = 8, size: int = 24, seed: int = 0):
    """Two objects with their own (noisy) feature directions moving right over a background
    of two textures -> (feature maps (C, h, w) per frame, label maps (h, w) per frame)."""
    g = torch.Generator().manual_seed(seed)
    c = 16
    dirs = F.normalize(torch.randn(4, c, generator=g), dim=1)  # bg a, bg b, obj 1, obj 2
    feats, labels = [], []
    for t in range(frames):
        lab = np.zeros((size, size), np.uint8)
        lab[4:12, 2 + t : 10 + t] = 1
        lab[14:20, 12 - t // 2 : 18 - t // 2] = 2
        kind = torch.zeros(size, size, dtype=torch.long)
        kind[:, size // 2 :] = 1
        kind[torch.from_numpy(lab == 1)] = 2
        kind[torch.from_numpy(lab == 2)] = 3
        f = dirs[kind].permute(2, 0, 1) + 0.15 * torch.randn(c, size, size, generator=g)
        feats.append(F.normalize(f, dim=0))
        labels.append(lab)
    return feats, labels


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
def test_propagators_follow_two_moving_objects(make) -> None:  # noqa: ANN001
    feats, gts = _toy_clip()
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


def test_lost_object_keeps_its_prototypes_and_window() -> None:
    feats, gts = _toy_clip(frames=2)
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


def test_backbone_features_with_a_propagation_embedding(tmp_path) -> None:  # noqa: ANN001
    """A propagation-embedding weights file is applied on top of the ImageNet features (an
    untrained one changes nothing); a file without a backbone or embedding is refused."""
    from instseg.engine.checkpoint import CheckpointError
    from instseg.inference.propagate import BackboneFeatures
    from instseg.models.video.propagation_embedding import PropagationEmbedding

    emb = PropagationEmbedding(channels=152, hidden=8)
    path = tmp_path / "emb.pt"
    meta = {"kind": "propagation_embedding", "channels": 152, "hidden": 8}
    torch.save({"model": emb.state_dict(), "meta": meta}, path)
    frame = (np.random.default_rng(0).random((64, 96, 3)) * 255).astype(np.uint8)
    torch.manual_seed(0)  # the same random backbone twice
    plain = BackboneFeatures(pretrained=False)(frame)
    torch.manual_seed(0)
    with_emb = BackboneFeatures(pretrained=False, weights=path)
    assert with_emb.embedding is not None
    assert torch.allclose(with_emb(frame), plain, atol=1e-5)
    bad = tmp_path / "bad.pt"
    torch.save({"model": {"x": torch.zeros(1)}, "meta": {}}, bad)
    with pytest.raises(CheckpointError, match="bad.pt: no EfficientNet-Lite0 backbone"):
        BackboneFeatures(pretrained=False, weights=bad)


def test_shipped_propagation_embedding_loads(release_file) -> None:  # noqa: ANN001
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "src/instseg/weights/propagation_default.pt"
    obj = release_file(path)
    assert obj["meta"]["kind"] == "propagation_embedding"
    assert not set(obj["meta"]["sequences"]) & {"bus", "soccerball", "mallard-fly"}
    assert all(v.dtype == torch.float16 for v in obj["model"].values())
