"""Inpainter (the VOIN pipeline): weights round trip, fallback rules, hull heuristic, temporal
windows, stage switches, streaming = in-memory."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from instseg.engine.checkpoint import save_weights
from instseg.inference.inpainter import (
    Inpainter,
    InpaintOptions,
    load_voin_weights,
    recommended_stages,
    save_voin_weights,
    temporal_windows,
)
from instseg.models.inpainting.baselines import hull_amodal
from instseg.models.inpainting.flow_completion import FlowCompletionNet
from instseg.models.inpainting.generator import OcclusionAwareGenerator
from instseg.models.inpainting.shape_completion import AmodalShapeCompletion
from instseg.models.inpainting.voin import VOIN_VARIANTS, VOINModel


def _clip(t: int = 5, h: int = 48, w: int = 64) -> tuple[np.ndarray, ...]:
    """Smooth texture moving right 1 px/frame with a disc object on it; a grey bar moving down
    3 px/frame occludes part of the disc (so every hole pixel is seen in some other frame)."""
    rng = np.random.default_rng(0)
    tex = cv2.GaussianBlur((rng.random((h, w + t, 3)) * 255).astype(np.uint8), (5, 5), 0)
    frames = np.stack([tex[:, t - i : t - i + w] for i in range(t)])
    yy, xx = np.mgrid[:h, :w]
    obj = np.stack([(yy - 24) ** 2 + (xx - 30 - i) ** 2 < 12**2 for i in range(t)])
    occ = np.zeros_like(obj)
    for i in range(t):
        occ[i, 14 + 3 * i : 20 + 3 * i] = True
    frames[occ] = 128
    return frames, obj & ~occ, obj & occ, occ


@pytest.fixture()
def weights(tmp_path) -> Path:
    torch.manual_seed(0)
    nets = VOIN_VARIANTS["small"](num_classes=1)
    return save_voin_weights(
        nets,
        tmp_path / "w.pt",
        variant="small",
        num_classes=1,
        canvas_size=32,
        trained=False,
        meta={"seed": 0},
    )


def test_weights_round_trip_fp16(weights):
    raw = torch.load(weights, weights_only=True)
    assert raw["meta"]["task"] == "voin" and raw["meta"]["training"]["seed"] == 0
    assert all(v.dtype == torch.float16 for v in raw["model"].values() if v.is_floating_point())
    nets, meta = load_voin_weights(weights)
    assert meta.model["variant"] == "small" and meta.model["canvas_size"] == 32
    p = nets.generator.out.weight
    assert p.dtype == torch.float32
    torch.testing.assert_close(p, raw["model"]["generator.out.weight"].float())


def test_load_rejects_other_files(tmp_path):
    other = save_weights(torch.nn.Linear(2, 2), tmp_path / "img.pt", meta={"task": "image"})
    with pytest.raises(ValueError, match="img.pt: weights are for task 'image', not 'voin'"):
        load_voin_weights(other)
    nets = VOIN_VARIANTS["small"](num_classes=1)
    path = save_voin_weights(
        nets, tmp_path / "v.pt", variant="small", num_classes=1, canvas_size=32, trained=False
    )
    data = torch.load(path, weights_only=True)
    data["meta"]["model"]["variant"] = "paper"  # small tensors under the paper variant's name
    torch.save(data, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="do not match VOIN variant 'paper'"):
        load_voin_weights(tmp_path / "bad.pt")


def test_from_weights_defaults(tmp_path, monkeypatch, weights):
    import instseg.inference.inpainter as mod

    monkeypatch.setattr(mod, "DEFAULT_WEIGHTS", tmp_path / "absent.pt")
    fb = Inpainter.from_weights(None, progress=False)
    assert not fb.learned and fb.model.generator is None and not fb.generates
    monkeypatch.setattr(mod, "DEFAULT_WEIGHTS", weights)
    inp = Inpainter.from_weights(None, progress=False)
    assert inp.learned and inp.canvas_size == 32 and inp.source == str(weights)
    assert inp.generates and inp.model.class_aware
    with pytest.raises(FileNotFoundError):  # an explicit file must exist
        Inpainter.from_weights(tmp_path / "absent.pt")


def test_hull_amodal_golden():
    vis = np.zeros((1, 9, 9), bool)
    vis[0, 1:8, 1:3] = vis[0, 1:8, 6:8] = True  # two bars: the hull spans 1..7 x 1..7
    occ = np.zeros_like(vis)
    occ[0, 4, :] = True  # a horizontal line through the gap and beyond the hull
    am = hull_amodal(vis, occ)
    expect = vis.copy()
    expect[0, 4, 1:8] = True
    np.testing.assert_array_equal(am, expect)


def test_fallback_and_switches_in_memory(weights):
    frames, vis, holes, occ = _clip()
    fb = Inpainter(model=None, progress=False)
    res = fb.inpaint(frames, vis, holes=holes)
    assert res.propagated.any() and not res.generated.any()
    np.testing.assert_array_equal(res.propagated | res.fallback, holes)
    with pytest.raises(ValueError, match="pass --holes"):
        fb.inpaint(frames, vis)
    nets, meta = load_voin_weights(weights)
    model = VOINModel.from_nets(nets)

    def inpainter(**options) -> Inpainter:
        return Inpainter(model=model, meta=meta, options=InpaintOptions(**options), progress=False)

    no_flow = inpainter(use_flow=False)
    r = no_flow.inpaint(frames, vis, holes=holes)
    assert not r.propagated.any() and (r.generated == holes).all()
    no_gen = inpainter(use_generator=False)
    r = no_gen.inpaint(frames, vis, holes=holes)
    assert not r.generated.any() and (r.propagated | r.fallback == holes).all()
    # shape completion path: amodal is a superset of visible, clipped to the occluder
    r = inpainter().inpaint(frames, vis, occluder=occ)
    assert (r.amodal >= vis).all() and not (r.amodal & ~vis & ~occ).any()


@pytest.mark.parametrize("prop_range", [None, 2])
def test_streaming_run_equals_in_memory(tmp_path, prop_range):
    frames, vis, holes, _ = _clip(t=7)
    for kind, arr in (("frames", frames), ("visible", vis), ("holes", holes)):
        (tmp_path / kind).mkdir()
        for i, a in enumerate(arr):
            img = a if a.dtype == np.uint8 else a.astype(np.uint8) * 255
            Image.fromarray(img).save(tmp_path / kind / f"f{i:03d}.png")
    opts = InpaintOptions(window=3, overlap=1, propagation_range=prop_range)
    inp = Inpainter(model=None, options=opts, progress=False)
    s = inp.run(
        tmp_path / "frames", tmp_path / "visible", tmp_path / "out", holes_dir=tmp_path / "holes"
    )
    ref = inp.inpaint(frames, vis, holes=holes)  # the same windows, in memory
    assert s.num_frames == 7 and s.hole_pixels == holes.sum()
    assert s.propagated + s.telea == s.hole_pixels and s.generated == 0
    for i in range(7):
        got = np.asarray(Image.open(tmp_path / "out" / "frames" / f"f{i:03d}.png"))
        np.testing.assert_array_equal(got, ref.frames[i])
    assert (tmp_path / "out" / "video.mp4").stat().st_size > 0
    manifest = json.loads((tmp_path / "out" / "inpaint.json").read_text())  # for instseg report
    assert manifest["frames"] == [f"f{i:03d}" for i in range(7)]
    assert manifest["source"] == str((tmp_path / "frames").resolve())
    assert manifest["holes_masks"] == str((tmp_path / "holes").resolve())
    assert manifest["occluder_masks"] is None
    # how it was made: the resolved options (the occlusion-aware leftover fill by default)
    assert manifest["options"]["leftover_context"] == "object"
    assert manifest["pipeline"] == inp.describe()


def _box_clip(t_len=6, h=40, w=48, seed=0):
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
    frames, visible, amodal = _box_clip()
    fb = Inpainter(model=None, options=InpaintOptions(use_generator=False), progress=False)
    res = fb.inpaint(frames, visible, amodal=amodal)
    holes = amodal & ~visible
    assert np.array_equal(res.holes, holes) and np.array_equal(res.amodal, amodal)
    assert not (res.propagated & res.fallback).any()
    assert np.array_equal(res.propagated | res.fallback, holes)
    assert res.propagated.any()  # the object's hidden rows are visible in other frames
    assert np.array_equal(res.frames[~holes], frames[~holes])
    assert not res.generated.any()


def test_generator_only_in_windows_and_shape_net():
    frames, visible, amodal = _box_clip(t_len=10)
    torch.manual_seed(0)
    gen = OcclusionAwareGenerator(base_channels=8, dilations=(2,))
    shape = AmodalShapeCompletion(
        num_classes=2, embed_dim=16, num_layers=1, num_heads=2, decoder_dim=8
    )
    flow_net = FlowCompletionNet(base_channels=4, depth=2)
    model = VOINModel(shape_net=shape, flow_net=flow_net, generator=gen)
    opts = InpaintOptions(
        use_flow=False, window=4, overlap=2, canvas_size=32, generator_max_side=16
    )
    voin = Inpainter(model=model, options=opts, progress=False)
    res = voin.inpaint(frames, visible, amodal=amodal)
    holes = amodal & ~visible
    assert np.array_equal(res.generated, holes) and not res.propagated.any()
    assert np.array_equal(res.frames[~holes], frames[~holes])
    assert res.frames.dtype == np.uint8
    # predicted amodal masks always contain the visible ones
    res2 = voin.inpaint(frames, visible, label=1)
    assert (res2.amodal >= visible).all()
    assert np.array_equal(res2.holes, res2.amodal & ~visible)
    with pytest.raises(ValueError, match="label"):
        voin.inpaint(frames, visible, label=None)
    # the flow stage with a flow network runs too
    voin = Inpainter(model=model, options=replace(opts, use_flow=True), progress=False)
    res3 = voin.inpaint(frames, visible, amodal=amodal)
    assert np.array_equal(res3.propagated | res3.generated, holes)


def test_bad_inputs():
    frames, visible, amodal = _box_clip()
    with pytest.raises(ValueError, match="overlap"):
        InpaintOptions(window=4, overlap=4)
    fb = Inpainter(model=None, progress=False)
    with pytest.raises(ValueError, match="visible"):
        fb.inpaint(frames, visible[:, :-1])
    with pytest.raises(ValueError, match="either holes or amodal"):
        fb.inpaint(frames, visible, holes=amodal, amodal=amodal)
    with pytest.raises(ValueError, match="shape network"):
        fb.complete_shape(visible)


# ------------------------------------------------------------- propagation range vs windows
def _slow_band_clip(t_len=20, h=40, w=48):
    """Static smooth texture with a static box object; a grey band 8 rows high moves down
    1 px/frame over it, so each hidden object pixel stays hidden 8 consecutive frames (longer
    than a 4-frame window) and is visible in some frame of the clip."""
    rng = np.random.default_rng(1)
    tex = cv2.resize(
        (rng.random((10, 12, 3)) * 255).astype(np.uint8), (w, h), interpolation=cv2.INTER_CUBIC
    )
    frames = np.repeat(tex[None], t_len, 0)
    amodal = np.zeros((t_len, h, w), bool)
    amodal[:, 10:31, 12:36] = True
    occ = np.zeros_like(amodal)
    for t in range(t_len):
        occ[t, 5 + t : 13 + t] = True
    clean = frames.copy()
    frames[occ] = 128
    return frames, amodal & ~occ, amodal, clean


def _windowed(inp: Inpainter, frames, visible, amodal) -> tuple[np.ndarray, np.ndarray]:
    """What the pipeline did before propagation was decoupled from the window: each window
    inpainted on its own (propagation only inside it), each frame kept from its window.
    Returns the frames and the leftover (not propagated) hole pixels."""
    o = inp.options
    out, left = frames.copy(), np.zeros_like(visible)
    for s, e, k0, k1 in temporal_windows(len(frames), o.window, o.overlap):
        r = inp.inpaint(frames[s:e], visible[s:e], amodal=amodal[s:e])
        left[k0:k1] = (r.holes & ~r.propagated)[k0 - s : k1 - s]
        out[k0:k1] = r.frames[k0 - s : k1 - s]
    return out, left


def test_whole_clip_propagation_leaves_less_than_windows():
    frames, visible, amodal, clean = _slow_band_clip()
    holes = amodal & ~visible
    opts = InpaintOptions(use_generator=False, window=4, overlap=1)
    whole = Inpainter(model=None, options=opts, progress=False)
    res = whole.inpaint(frames, visible, amodal=amodal)
    left_whole = (res.holes & ~res.propagated).sum() / holes.sum()
    windowed, left = _windowed(whole, frames, visible, amodal)
    left_windows = left.sum() / holes.sum()
    assert left_windows > 0.3  # a 4-frame window cannot see past an 8-frame occlusion
    assert left_whole < 0.05 < left_windows
    err_whole = np.abs(res.frames.astype(int) - clean)[holes].mean()
    err_windows = np.abs(windowed.astype(int) - clean)[holes].mean()
    assert err_whole < 0.5 * err_windows
    # a longer range never leaves more; a range as long as the clip is the whole clip
    lefts = []
    for r in (1, 3, 8, 19):
        o = replace(opts, propagation_range=r)
        rr = Inpainter(model=None, options=o, progress=False).inpaint(
            frames, visible, amodal=amodal
        )
        lefts.append((rr.holes & ~rr.propagated).sum())
    assert lefts == sorted(lefts, reverse=True) and lefts[0] > lefts[-1]
    np.testing.assert_array_equal(rr.frames, res.frames)


def test_propagation_range_equals_propagating_the_whole_clip_with_max_steps():
    """Holding only window + 2 R frames changes nothing: the result equals propagating over
    the whole clip with trajectories of at most R frames (streamed from disk too)."""
    from instseg.models.inpainting.flow import clip_flows, fill_clip_flows
    from instseg.models.inpainting.flow_guided_propagation import propagate_pixels

    frames, visible, amodal, _ = _slow_band_clip(t_len=14)
    holes = amodal & ~visible
    opts = InpaintOptions(
        use_generator=False, window=4, overlap=1, propagation_range=3, flow_dtype="float32"
    )
    res = Inpainter(model=None, options=opts, progress=False).inpaint(
        frames, visible, amodal=amodal
    )
    fwd, bwd = fill_clip_flows(*clip_flows(frames), holes, visible)
    ref = propagate_pixels(frames, holes, fwd, bwd, amodal=amodal, max_steps=3)
    np.testing.assert_array_equal(res.propagated, ref.filled)
    np.testing.assert_array_equal(res.frames[ref.filled], ref.frames[ref.filled])
    # float16 flow storage: same filled pixels here, colours within rounding
    half = Inpainter(model=None, options=replace(opts, flow_dtype="float16"), progress=False)
    res16 = half.inpaint(frames, visible, amodal=amodal)
    assert np.abs(res16.frames.astype(int) - res.frames).max() <= 1


def test_flow_net_switch(weights, monkeypatch):
    frames, vis, holes, _ = _clip()
    nets, meta = load_voin_weights(weights)
    model = VOINModel.from_nets(nets)
    calls = []
    monkeypatch.setattr(model, "refine_flows", lambda *a: calls.append(1) or a[1:3])
    for on in (True, False):
        inp = Inpainter(
            model=model, meta=meta, options=InpaintOptions(use_flow_net=on), progress=False
        )
        assert inp.refines_flow is on and f"flow net {'on' if on else 'off'}" in inp.describe()
        n = len(calls)
        inp.inpaint(frames, vis, holes=holes)
        assert (len(calls) > n) is on


def test_weights_file_recommends_the_stage_switches(tmp_path, monkeypatch):
    """Switches left at None take the file's ``model.defaults``; explicit ones win; a file
    without defaults (or no file) runs every stage it has; bad defaults are refused."""
    frames, vis, amodal = _box_clip()  # propagation leaves part of the hole
    torch.manual_seed(0)
    nets = VOIN_VARIANTS["small"](num_classes=1)
    kw = {"variant": "small", "num_classes": 1, "canvas_size": 32, "trained": False}
    off = {"use_flow_net": False, "use_generator": False}
    rec = save_voin_weights(nets, tmp_path / "rec.pt", defaults=off, **kw)
    plain = save_voin_weights(nets, tmp_path / "plain.pt", **kw)
    assert recommended_stages(load_voin_weights(rec)[1]) == off
    assert recommended_stages(load_voin_weights(plain)[1]) == {}
    assert InpaintOptions().use_flow_net is None and InpaintOptions().use_generator is None
    for path, options, on in (
        (rec, {}, (False, False)),
        (rec, {"use_generator": True}, (False, True)),
        (rec, {"use_flow_net": True, "use_generator": True}, (True, True)),
        (plain, {}, (True, True)),
        (plain, {"use_generator": False}, (True, False)),
    ):
        inp = Inpainter.from_weights(path, options=InpaintOptions(**options), progress=False)
        assert (inp.options.use_flow_net, inp.options.use_generator) == on
        assert (inp.refines_flow, inp.generates) == on
        assert set(inp.file_defaults) == ({"use_flow_net", "use_generator"} - set(options)
                                          if path == rec else set())  # fmt: skip
        assert ("as the weights file recommends" in inp.describe()) is bool(inp.file_defaults)
        res = inp.inpaint(frames, vis, amodal=amodal)
        assert bool(res.generated.any()) is on[1] and bool(res.fallback.any()) is not on[1]
    assert Inpainter(model=None, progress=False).options.use_generator is True  # no generator
    for bad in ({"use_flow": False}, {"use_generator": 0}):
        with pytest.raises(ValueError, match="stage switches"):
            save_voin_weights(nets, tmp_path / "bad.pt", defaults=bad, **kw)
    data = torch.load(rec, weights_only=True)
    data["meta"]["model"]["defaults"] = {"use_generator": "no"}
    torch.save(data, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="bad.pt: meta defaults"):
        load_voin_weights(tmp_path / "bad.pt")


# ------------------------------------------------------------------ generator input scale
def _record_generator_inputs(model: VOINModel) -> list[tuple[int, int]]:
    seen: list[tuple[int, int]] = []
    model.generator.register_forward_pre_hook(lambda _m, a: seen.append(tuple(a[0].shape[-2:])))
    return seen


def test_generator_is_fed_the_scale_it_was_trained_at(tmp_path):
    frames, visible, amodal = _box_clip(h=64, w=80)
    torch.manual_seed(0)
    nets = VOIN_VARIANTS["small"](num_classes=1)
    kw = {"variant": "small", "num_classes": 1, "canvas_size": 32, "trained": False}
    path = save_voin_weights(
        nets, tmp_path / "g.pt", stage_sizes={"shape": 48, "flow": 48, "generator": 16}, **kw
    )
    assert load_voin_weights(path)[1].model["stage_sizes"]["generator"] == 16
    old = save_voin_weights(nets, tmp_path / "old.pt", **kw)  # a file without stage sizes
    for weights, options, side, longest in (
        (path, {}, 16, 16),  # the trained scale from the file
        (path, {"generator_max_side": 24}, 24, 24),  # an explicit option wins
        (old, {}, 256, 56),  # unknown: the old limit (the 48 x 56 crop is not scaled)
    ):
        inp = Inpainter.from_weights(
            weights, options=InpaintOptions(use_flow=False, **options), progress=False
        )
        assert inp.generator_max_side == side
        seen = _record_generator_inputs(inp.model)
        res = inp.inpaint(frames, visible, amodal=amodal)
        assert res.generated.any() and seen
        assert {max(hw) for hw in seen} == {longest}, seen


def test_bad_new_options():
    with pytest.raises(ValueError, match="propagation_range"):
        InpaintOptions(propagation_range=0)
    with pytest.raises(ValueError, match="flow_dtype"):
        InpaintOptions(flow_dtype="float64")
    with pytest.raises(ValueError, match="generator_max_side"):
        InpaintOptions(generator_max_side=2)


def test_leftover_fill_draws_on_the_object_only_by_default():
    """Issue 16: the leftovers' Telea fill (``leftover_context="object"``, the default) draws
    on the object's own known pixels, not on the occluder around the hole; ``"frame"`` is plain
    Telea. A static clip (nothing to propagate: every hole pixel is a leftover): object colour
    A on columns 0-29, an occluder of colour B over columns 20-39."""
    a, b = np.array([200, 60, 40], np.uint8), np.array([20, 210, 30], np.uint8)
    frames = np.zeros((3, 40, 48, 3), np.uint8)
    frames[:, :, 30:] = (90, 90, 90)
    frames[:, :, :30] = a
    frames[:, :, 20:40] = b
    obj = np.zeros((3, 40, 48), bool)
    obj[:, :, :30] = True
    occ = np.zeros_like(obj)
    occ[:, :, 20:40] = True
    visible = obj & ~occ
    with pytest.raises(ValueError, match="leftover_context"):
        InpaintOptions(leftover_context="image")
    assert InpaintOptions().leftover_context == "object"
    out = {}
    for ctx in ("object", "frame"):
        inp = Inpainter(model=None, options=InpaintOptions(leftover_context=ctx), progress=False)
        res = inp.inpaint(frames, visible, amodal=obj)
        np.testing.assert_array_equal(res.fallback, obj & occ)  # all leftovers, Telea-filled
        out[ctx] = np.abs(res.frames[obj & occ].astype(int) - a.astype(int)).max(-1)
        assert ("object's pixels" in inp.describe()) == (ctx == "object")
    assert out["object"].max() <= 4  # Telea rounding
    assert (out["frame"] > 60).mean() > 0.2
