"""Explain panels (survey Fig. 3.7): head maps of BCNet / CPMask RoIs and `predict --explain`."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from instseg.cli.main import main
from instseg.engine.checkpoint import save_weights
from instseg.inference.explain import explain_panel, head_maps, save_explanations
from instseg.models.build import ModelConfig, build_model_from_config
from instseg.structures import Instances


def test_bilayer_maps_are_the_sigmoids_of_each_layer_in_fig_3_7_order():
    g = torch.Generator().manual_seed(0)
    extra = {k: torch.randn(3, 1, 28, 28, generator=g) for k in ("mask", "contour")}
    extra["occluder_mask"] = torch.randn(3, 1, 28, 28, generator=g)
    extra["occluder_contour"] = torch.randn(3, 1, 28, 28, generator=g)
    maps, pixel = head_maps(extra, 2, label=0)
    assert list(maps) == ["occluder contour", "occluder mask", "occludee contour", "occludee mask"]
    np.testing.assert_allclose(maps["occluder mask"], extra["occluder_mask"][2, 0].sigmoid())
    np.testing.assert_allclose(maps["occludee mask"], extra["mask"][2, 0].sigmoid())
    assert pixel is None
    # class-aware occludee mask: the label's channel
    extra["mask"] = torch.randn(3, 4, 28, 28, generator=g)
    maps, _ = head_maps(extra, 1, label=3)
    np.testing.assert_allclose(maps["occludee mask"], extra["mask"][1, 3].sigmoid())


def test_cpmask_affinity_of_the_most_confident_pixel():
    r, side = 2, 14
    mask = torch.full((r, 1, 28, 28), -5.0)
    mask[1, 0, 20:24, 4:8] = 5.0  # confident block -> grid cells rows 10-11, cols 2-3
    aff = torch.softmax(torch.randn(r, side * side, side * side), dim=-1)
    extra = {"mask": mask, "boundary": torch.zeros(r, 1, 28, 28), "affinity": aff}
    maps, pixel = head_maps(extra, 1, label=0)
    assert list(maps) == ["boundary", "affinity", "mask"]
    assert 10 <= pixel[0] <= 11 and 2 <= pixel[1] <= 3
    row = aff[1, pixel[0] * side + pixel[1]].reshape(side, side)
    np.testing.assert_allclose(maps["affinity"], (row / row.max()).numpy(), rtol=1e-5)
    np.testing.assert_allclose(maps["boundary"], 0.5)
    maps, pixel = head_maps(extra, 0, label=0, pixel=(0, 13))
    assert pixel == (0, 13)
    row = aff[0, 13].reshape(side, side)
    np.testing.assert_allclose(maps["affinity"], (row / row.max()).numpy(), rtol=1e-5)


def test_panel_layout_and_final_mask_overlay():
    crop = np.zeros((30, 50, 3), np.uint8)
    final = np.zeros((30, 50), bool)
    final[:, :25] = True
    maps = {"a": np.zeros((28, 28)), "b": np.ones((28, 28))}
    panel = explain_panel(crop, maps, final, tile=64)
    assert panel.shape == (80, 64 * 4, 3) and panel.dtype == np.uint8
    over = panel[16:, 3 * 64 :]
    assert over[:, :30, 0].mean() > 100 and over[:, 40:, 0].max() == 0  # red on the left half
    # JET: 0 -> dark blue, 1 -> dark red
    assert panel[40, 64 + 10, 2] > panel[40, 64 + 10, 0]
    assert panel[40, 128 + 10, 0] > panel[40, 128 + 10, 2]


def test_save_explanations_needs_head_outputs(tmp_path):
    inst = Instances(
        image_size=(20, 20),
        boxes=torch.tensor([[2.0, 2, 10, 10]]),
        labels=torch.tensor([0]),
        scores=torch.tensor([0.5]),
    )
    with pytest.raises(ValueError, match="return_head_outputs"):
        save_explanations(tmp_path, "x", np.zeros((20, 20, 3), np.uint8), inst)
    assert save_explanations(tmp_path, "x", np.zeros((20, 20, 3), np.uint8), inst[:0]) == []


@pytest.mark.parametrize(("model", "tiles"), [("effl0_fcos_bcnet", 6), ("effl0_fcos_cpmask", 5)])
def test_predict_explain_writes_one_panel_per_top_roi(model, tiles, tmp_path):
    torch.manual_seed(0)
    mcfg = ModelConfig(name=model, pretrained=False, frozen_bn=True)
    net = build_model_from_config(mcfg, num_classes=2, score_thresh=0.0)
    meta = {
        "task": "image",
        "model": {"name": model, "pretrained": False, "frozen_bn": True},
        "num_classes": 2,
        "category_ids": [1, 2],
        "class_names": ["a", "b"],
        "test_min_size": 64,
        "max_size": 96,
    }
    weights = tmp_path / "model.pt"
    save_weights(net, weights, meta=meta)
    src = tmp_path / "imgs"
    src.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (64, 80, 3), dtype=np.uint8)).save(src / "7.png")
    out = tmp_path / "out"
    rc = main(
        ["predict", "--weights", str(weights), "--source", str(src), "--out", str(out),
         "--explain", "--score-thresh", "0", "--amp", "none"]
    )  # fmt: skip
    assert rc == 0
    panels = sorted((out / "explain").glob("7_roi*.png"))
    assert [p.name for p in panels] == ["7_roi0.png", "7_roi1.png", "7_roi2.png"]
    img = np.asarray(Image.open(panels[0]))
    assert img.shape == (112 + 16, 112 * tiles, 3)
