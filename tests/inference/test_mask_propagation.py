"""First-frame mask propagation over a video: the drivers (frame 0 as given, frames without
objects, features computed per frame) and the feature loader (propagation embedding, backbone
of a trained model, shipped embedding)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from instseg.engine.checkpoint import CheckpointError
from instseg.inference.mask_propagation import (
    BackboneFeatures,
    feature_stride,
    propagate_features,
    propagate_labels,
)
from instseg.models.video.mask_propagation import PrototypePropagator
from instseg.models.video.propagation_embedding import PropagationEmbedding


def test_drivers_keep_frame_zero_and_handle_empty_inputs() -> None:
    feats = [torch.nn.functional.normalize(torch.randn(8, 4, 5), dim=0) for _ in range(3)]
    first = np.zeros((32, 40), np.uint8)
    first[8:20, 8:24] = 5
    out = list(
        propagate_features(
            feats, first, propagator=PrototypePropagator(num_fg=2, num_bg=2), stride=8.0
        )
    )
    assert len(out) == 3 and np.array_equal(out[0], first)
    assert all(
        o.shape == (32, 40) and o.dtype == np.uint8 and set(np.unique(o)) <= {0, 5} for o in out
    )
    none = list(
        propagate_features(
            feats, np.zeros_like(first), propagator=PrototypePropagator(), stride=8.0
        )
    )
    assert len(none) == 3 and not any(o.any() for o in none)
    assert list(propagate_features([], first, propagator=PrototypePropagator(), stride=8.0)) == []


def test_feature_stride_follows_the_shrunk_frame() -> None:
    assert feature_stride((480, 854), None) == 8.0
    assert feature_stride((480, 854), 427) == pytest.approx(16.0)
    assert feature_stride((100, 120), 854) == 8.0  # never enlarged


def test_propagate_labels_runs_the_features_per_frame() -> None:
    torch.manual_seed(0)
    features = BackboneFeatures(pretrained=False, max_side=64)
    rng = np.random.default_rng(0)
    frames = [(rng.random((48, 64, 3)) * 255).astype(np.uint8)] * 3
    first = np.zeros((48, 64), np.uint8)
    first[10:30, 20:40] = 1
    out = list(
        propagate_labels(
            frames, first, propagator=PrototypePropagator(num_fg=4, num_bg=4), features=features
        )
    )
    assert len(out) == 3 and np.array_equal(out[0], first)
    # identical frames: the object stays (mostly) where it was
    inter = ((out[2] == 1) & (first == 1)).sum()
    assert inter / (first == 1).sum() > 0.7


def test_backbone_features_with_a_propagation_embedding(tmp_path) -> None:  # noqa: ANN001
    """A propagation-embedding weights file is applied on top of the ImageNet features (an
    untrained one changes nothing); a file without a backbone or embedding is refused."""
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
    path = Path(__file__).resolve().parents[2] / "src/instseg/weights/propagation_default.pt"
    obj = release_file(path)
    assert obj["meta"]["kind"] == "propagation_embedding"
    assert not set(obj["meta"]["sequences"]) & {"bus", "soccerball", "mallard-fly"}
    assert all(v.dtype == torch.float16 for v in obj["model"].values())
