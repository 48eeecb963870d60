"""VOIN networks: the variants train end to end, the torch-level stages of a window
(:class:`VOINModel`), the stage training script."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from instseg.models.inpainting.voin import VOIN_VARIANTS, VOINModel


def test_voin_model_stages_tensors_in_tensors_out():
    torch.manual_seed(0)
    model = VOINModel.from_nets(VOIN_VARIANTS["small"](num_classes=2)).eval()
    t, s, h, w = 3, 32, 20, 28
    canvas = torch.zeros(t, s, s)
    canvas[:, 8:20, 10:22] = 1
    logits = model.shape_logits(canvas, label=1)
    assert logits.shape == (t, s, s) and logits.dtype == torch.float32
    with pytest.raises(ValueError, match="class-aware"):
        model.shape_logits(canvas)
    frames = torch.rand(t, 3, h, w)
    flows = torch.randn(t - 1, 2, h, w)
    masks = torch.zeros(t, 1, h, w)
    masks[..., 5:15, 6:20] = 1
    fwd, bwd = model.refine_flows(frames, flows, -flows, masks, masks)
    assert fwd.shape == bwd.shape == (t - 1, 2, h, w)
    # residual: the refinement is the network's output for that pair, pair by pair
    ref = model.flow_net(frames[:1], frames[1:2], flows[:1], masks[:1], masks[:1])
    torch.testing.assert_close(fwd[:1], ref)
    gen = model.generate(frames * 2 - 1, masks, masks, masks, max_side=16)
    assert gen.shape == (t, 3, h, w) and gen.abs().max() <= 1
    # the same crop at full resolution goes to the generator as is (multiple of 4)
    full = model.generator(*(x[None] for x in (frames * 2 - 1, *[masks] * 3)))
    torch.testing.assert_close(
        model.generate(frames * 2 - 1, masks, masks, masks, max_side=256), full[0]
    )
    # the weights file's layout
    assert {k.split(".")[0] for k in model.state_dict()} == {"shape_net", "flow_net", "generator"}


def test_voin_model_without_networks():
    empty = VOINModel()
    assert not empty.class_aware and list(empty.state_dict()) == []
    for call, arg in (
        (empty.shape_logits, (torch.zeros(1, 8, 8),)),
        (
            empty.refine_flows,
            (torch.zeros(2, 3, 4, 4),)
            + (torch.zeros(1, 2, 4, 4),) * 2
            + (torch.zeros(2, 1, 4, 4),) * 2,
        ),
    ):
        with pytest.raises(ValueError, match="no "):
            call(*arg)


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


def test_small_wide_differs_from_small_in_the_generator_only():
    """``small_wide`` (issue 16's width experiment): a ``small`` file's shape and flow networks
    load into it unchanged; its generator is c 16 with one more dilated block."""
    small, wide = (VOIN_VARIANTS[v](num_classes=1) for v in ("small", "small_wide"))
    for name in ("shape_net", "flow_net"):
        a, b = getattr(small, name).state_dict(), getattr(wide, name).state_dict()
        assert {k: v.shape for k, v in a.items()} == {k: v.shape for k, v in b.items()}, name
    g_small = sum(p.numel() for p in small.generator.parameters())
    g_wide = sum(p.numel() for p in wide.generator.parameters())
    assert len(wide.generator.middle) == len(small.generator.middle) + 1
    assert wide.generator.out.in_channels == 2 * small.generator.out.in_channels
    assert g_wide > 3 * g_small


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
