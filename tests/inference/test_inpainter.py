"""Inpainter: weights round trip, fallback rules, hull heuristic, streaming = in-memory."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from instseg.engine.checkpoint import save_weights
from instseg.inference.inpainter import (
    Inpainter,
    hull_amodal,
    load_voin_weights,
    save_voin_weights,
)
from instseg.models.inpainting.voin import VOIN_VARIANTS


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
    with pytest.raises(ValueError, match="not a VOIN weights file"):
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
    assert not fb.learned and fb.voin.generator is None and not fb.voin.use_generator
    monkeypatch.setattr(mod, "DEFAULT_WEIGHTS", weights)
    inp = Inpainter.from_weights(None, progress=False)
    assert inp.learned and inp.voin.canvas_size == 32 and inp.source == str(weights)
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
    fb = Inpainter(nets=None, progress=False)
    res = fb.inpaint(frames, vis, holes=holes)
    assert res.propagated.any() and not res.generated.any()
    np.testing.assert_array_equal(res.propagated | res.fallback, holes)
    with pytest.raises(ValueError, match="pass --holes"):
        fb.inpaint(frames, vis)
    nets, meta = load_voin_weights(weights)
    no_flow = Inpainter(nets=nets, meta=meta, use_flow=False, progress=False)
    r = no_flow.inpaint(frames, vis, holes=holes)
    assert not r.propagated.any() and (r.generated == holes).all()
    no_gen = Inpainter(nets=nets, meta=meta, use_generator=False, progress=False)
    r = no_gen.inpaint(frames, vis, holes=holes)
    assert not r.generated.any() and (r.propagated | r.fallback == holes).all()
    # shape completion path: amodal is a superset of visible, clipped to the occluder
    r = Inpainter(nets=nets, meta=meta, progress=False).inpaint(frames, vis, occluder=occ)
    assert (r.amodal >= vis).all() and not (r.amodal & ~vis & ~occ).any()


def test_streaming_run_equals_in_memory(tmp_path):
    frames, vis, holes, _ = _clip(t=7)
    for kind, arr in (("frames", frames), ("visible", vis), ("holes", holes)):
        (tmp_path / kind).mkdir()
        for i, a in enumerate(arr):
            img = a if a.dtype == np.uint8 else a.astype(np.uint8) * 255
            Image.fromarray(img).save(tmp_path / kind / f"f{i:03d}.png")
    inp = Inpainter(nets=None, window=3, overlap=1, progress=False)
    s = inp.run(
        tmp_path / "frames", tmp_path / "visible", tmp_path / "out", holes_dir=tmp_path / "holes"
    )
    ref = inp.inpaint(frames, vis, holes=holes)  # VOIN windows the whole clip the same way
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
