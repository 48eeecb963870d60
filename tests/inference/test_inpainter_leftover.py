"""Inference with a leftover generator (issue 16): the weights file's ``generator_mode`` builds
the residual generator, which gets the propagated frames with Telea-filled leftovers at exactly
its trained crop scale (``stage_sizes['generator']``); untrained it reproduces propagation +
Telea exactly."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from instseg.engine.weights import read_weights_file
from instseg.inference.inpainter import (
    Inpainter,
    InpaintOptions,
    generator_mode,
    load_voin_weights,
    save_voin_weights,
)
from instseg.models.inpainting.voin import VOIN_VARIANTS

KW = {"variant": "small", "num_classes": 1, "canvas_size": 32, "trained": False}


def _clip(t=6, h=40, w=48, seed=0):
    """Random smooth texture translating 2 px/frame, a box object moving with it; a grey band
    hides its lower part in every frame (some pixels are never seen: leftovers)."""
    rng = np.random.default_rng(seed)
    big = (rng.random((h + 40, w + 40, 3)) * 255).astype(np.uint8)
    frames = np.stack([big[20 - i : 20 - i + h, 20 - 2 * i : 20 - 2 * i + w] for i in range(t)])
    amodal = np.zeros((t, h, w), bool)
    for i in range(t):
        amodal[i, 10 + i : 26 + i, 12 + 2 * i : 28 + 2 * i] = True
    occ = np.zeros_like(amodal)
    occ[:, 20:30, :] = True
    frames = frames.copy()
    frames[occ] = 128
    return frames, amodal & ~occ, amodal


def _leftover_file(tmp_path, size=16, name="g.pt", **extra):
    torch.manual_seed(0)
    nets = VOIN_VARIANTS["small"](num_classes=1, generator_mode="leftover")
    sizes = {"shape": 48, "flow": 48, "generator": size}
    return save_voin_weights(nets, tmp_path / name, stage_sizes=sizes, **KW, **extra)


def test_meta_round_trip_and_unknown_mode(tmp_path):
    path = _leftover_file(tmp_path)
    nets, meta = load_voin_weights(path)
    assert generator_mode(meta) == "leftover" and nets.generator.residual
    old = save_voin_weights(VOIN_VARIANTS["small"](num_classes=1), tmp_path / "old.pt", **KW)
    assert "generator_mode" not in read_weights_file(old, task="voin")[1].model
    assert generator_mode(load_voin_weights(old)[1]) == "hole"
    data = torch.load(path, weights_only=True)
    data["meta"]["model"]["generator_mode"] = "dream"
    torch.save(data, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="bad.pt: unknown generator_mode"):
        load_voin_weights(tmp_path / "bad.pt")


def test_untrained_leftover_generator_equals_propagation_plus_telea(tmp_path):
    frames, visible, amodal = _clip()
    inp = Inpainter.from_weights(
        _leftover_file(tmp_path),
        options=InpaintOptions(use_generator=True, use_flow_net=False, window=4, overlap=1),
        progress=False,
    )
    assert "leftover generator" in inp.describe()
    ref = Inpainter(model=None, options=InpaintOptions(window=4, overlap=1), progress=False)
    got, want = (i.inpaint(frames, visible, amodal=amodal) for i in (inp, ref))
    assert want.fallback.any() and np.array_equal(got.generated, want.fallback)
    assert np.array_equal(got.propagated, want.propagated)
    assert np.array_equal(got.frames, want.frames)


@pytest.mark.parametrize("size", [16, 64])  # the 48-px crop scaled down / up to the trained size
def test_leftover_generator_is_fed_exactly_its_trained_scale(tmp_path, size):
    frames, visible, amodal = _clip(h=64, w=80)
    inp = Inpainter.from_weights(
        _leftover_file(tmp_path, size=size),
        options=InpaintOptions(use_flow=False, use_generator=True),
        progress=False,
    )
    assert inp.generator_max_side == size
    seen: list[tuple[int, ...]] = []
    inp.model.generator.register_forward_pre_hook(lambda _m, a: seen.append(tuple(a[0].shape)))
    res = inp.inpaint(frames, visible, amodal=amodal)
    assert res.generated.any() and seen
    assert {max(s[-2:]) for s in seen} == {size}, seen
