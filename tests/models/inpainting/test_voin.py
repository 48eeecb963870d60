"""VOIN pipeline: temporal windows, stage switches, composition of the outputs."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from instseg.models.inpainting.flow_completion import FlowCompletionNet
from instseg.models.inpainting.generator import OcclusionAwareGenerator
from instseg.models.inpainting.shape_completion import AmodalShapeCompletion
from instseg.models.inpainting.voin import VOIN, VOIN_VARIANTS, temporal_windows


def _clip(t_len=6, h=40, w=48, seed=0):
    """Smooth texture translating by (2, 1) px/frame; a box object moving with it, its lower
    part hidden by a grey occluder band."""
    rng = np.random.default_rng(seed)
    big = cv2.resize(
        (rng.random((20, 24, 3)) * 255).astype(np.uint8),
        (w + 40, h + 40),
        interpolation=cv2.INTER_CUBIC,
    )
    frames = np.stack([big[20 - t : 20 - t + h, 20 - 2 * t : 20 - 2 * t + w] for t in range(t_len)])
    amodal = np.zeros((t_len, h, w), bool)
    for t in range(t_len):
        amodal[t, 10 + t : 26 + t, 12 + 2 * t : 28 + 2 * t] = True
    occ = np.zeros_like(amodal)
    occ[:, 20:30, :] = True
    frames = frames.copy()
    frames[occ] = 128
    return frames, amodal & ~occ, amodal


@pytest.mark.parametrize("t_len,window,overlap", [(10, 4, 2), (11, 5, 1), (3, 8, 2), (9, 3, 0)])
def test_temporal_windows_partition_the_video(t_len, window, overlap):
    wins = temporal_windows(t_len, window, overlap)
    kept = [f for _, _, k0, k1 in wins for f in range(k0, k1)]
    assert kept == list(range(t_len))
    for s, e, k0, k1 in wins:
        assert 0 <= s <= k0 < k1 <= e <= t_len and e - s == min(window, t_len)
    if t_len > window:
        # interior frames are never kept at a window edge when a more central window exists
        assert all(k0 == s or k0 >= s + overlap // 2 for s, _, k0, _ in wins)


def test_propagation_then_telea_with_given_amodal():
    frames, visible, amodal = _clip()
    res = VOIN(progress=False, use_generator=False)(frames, visible, amodal=amodal)
    holes = amodal & ~visible
    assert np.array_equal(res.holes, holes) and np.array_equal(res.amodal, amodal)
    assert not (res.propagated & res.fallback).any()
    assert np.array_equal(res.propagated | res.fallback, holes)
    assert res.propagated.any()  # the object's hidden rows are visible in other frames
    assert np.array_equal(res.frames[~holes], frames[~holes])
    assert not res.generated.any()


def test_generator_only_in_windows_and_shape_net():
    frames, visible, amodal = _clip(t_len=10)
    torch.manual_seed(0)
    gen = OcclusionAwareGenerator(base_channels=8, dilations=(2,))
    shape = AmodalShapeCompletion(
        num_classes=2, embed_dim=16, num_layers=1, num_heads=2, decoder_dim=8
    )
    flow_net = FlowCompletionNet(base_channels=4, depth=2)
    voin = VOIN(
        shape_net=shape,
        flow_net=flow_net,
        generator=gen,
        use_flow=False,
        window=4,
        overlap=2,
        canvas_size=32,
        generator_max_side=16,
        progress=False,
    )
    res = voin(frames, visible, amodal=amodal)
    holes = amodal & ~visible
    assert np.array_equal(res.generated, holes) and not res.propagated.any()
    assert np.array_equal(res.frames[~holes], frames[~holes])
    assert res.frames.dtype == np.uint8
    # predicted amodal masks always contain the visible ones
    res2 = voin(frames, visible, label=1)
    assert (res2.amodal >= visible).all()
    assert np.array_equal(res2.holes, res2.amodal & ~visible)
    with pytest.raises(ValueError, match="label"):
        voin(frames, visible)
    # the flow stage with a flow network runs too
    voin.use_flow = True
    res3 = voin(frames, visible, amodal=amodal)
    assert np.array_equal(res3.propagated | res3.generated, holes)


def test_bad_inputs():
    frames, visible, amodal = _clip()
    with pytest.raises(ValueError, match="overlap"):
        VOIN(window=4, overlap=4)
    with pytest.raises(ValueError, match="visible"):
        VOIN(progress=False)(frames, visible[:, :-1])
    with pytest.raises(ValueError, match="shape network"):
        VOIN(progress=False)(frames, visible)


@pytest.mark.parametrize("variant", sorted(VOIN_VARIANTS))
def test_variants_forward_backward(variant):
    torch.manual_seed(0)
    nets = VOIN_VARIANTS[variant](num_classes=3)
    t_len = 2
    vis = torch.zeros(1, t_len, 1, 64, 64)
    vis[..., 20:40, 16:30] = 1
    logits = nets.shape_net(vis, torch.tensor([2]))
    img = torch.rand(1, 3, 16, 16)
    flow = nets.flow_net(
        img, img, torch.zeros(1, 2, 16, 16), torch.ones(1, 1, 16, 16), torch.ones(1, 1, 16, 16)
    )
    frames = torch.rand(1, t_len, 3, 16, 16) * 2 - 1
    hole = torch.zeros(1, t_len, 1, 16, 16)
    hole[..., 4:9, 5:11] = 1
    out = nets.generator.inpaint(frames, hole, hole, hole)
    total = logits.mean() + flow.mean() + out.mean()
    total.backward()
    assert torch.isfinite(total)
    for net in (nets.shape_net, nets.flow_net, nets.generator):
        grads = [p.grad for p in net.parameters() if p.requires_grad]
        assert all(g is not None and torch.isfinite(g).all() for g in grads)


def _davis_root() -> Path:
    return Path(__file__).resolve().parents[3] / ".." / "shared" / "data" / "davis2016-train-subset"


@pytest.mark.parametrize("stage", ["shape", "flow", "generator"])
def test_train_script_runs_tiny(stage, tmp_path):
    root = _davis_root()
    if not (root / "JPEGImages").is_dir():
        pytest.skip(f"DAVIS subset not found at {root}")
    path = Path(__file__).resolve().parents[3] / "scripts" / "train_voin.py"
    spec = importlib.util.spec_from_file_location("train_voin", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    argv = [
        "--stage",
        stage,
        "--tiny",
        "--iters",
        "2",
        "--out",
        str(tmp_path),
        "--batch",
        "1",
        "--davis-root",
        str(root),
        "--device",
        "cpu",
    ]
    assert mod.main(argv) == 0
    state = torch.load(tmp_path / "model_final.pth", weights_only=True)["model"]
    nets = VOIN_VARIANTS["small"](num_classes=1)
    net = {"shape": nets.shape_net, "flow": nets.flow_net, "generator": nets.generator}[stage]
    net.load_state_dict(state)  # plain network weights, loadable into the VOIN builders
