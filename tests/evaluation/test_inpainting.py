"""Inpainting metrics: PSNR/SSIM golden values against scikit-image, hole-only masking,
the folder evaluator and CLI, and LPIPS weights handling (clear error without files)."""

from __future__ import annotations

import argparse
import json
import math

import numpy as np
import pytest
import torch
from PIL import Image
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from instseg.cli.evaluate_inpaint import SUBCOMMANDS
from instseg.evaluation.inpainting import (
    LPIPS,
    PSNR_CAP,
    LPIPSUnavailable,
    evaluate_inpainting,
    frame_metrics,
    psnr,
    ssim,
)


def _pair(seed: int = 0, h: int = 40, w: int = 48):
    rng = np.random.default_rng(seed)
    gt = (rng.random((h, w, 3)) * 255).astype(np.uint8)
    pred = np.clip(gt.astype(int) + rng.integers(-20, 21, gt.shape), 0, 255).astype(np.uint8)
    hole = np.zeros((h, w), bool)
    hole[10:25, 12:30] = True
    return pred, gt, hole


def test_frame_psnr_ssim_match_skimage():
    pred, gt, _ = _pair()
    assert psnr(pred, gt) == pytest.approx(peak_signal_noise_ratio(gt, pred, data_range=255))
    ref = structural_similarity(gt, pred, channel_axis=-1, data_range=255)
    assert ssim(pred, gt) == pytest.approx(ref)


def test_hole_psnr_golden_value_and_masking():
    gt = np.full((20, 20, 3), 100, np.uint8)
    pred = gt.copy()
    hole = np.zeros((20, 20), bool)
    hole[5:10, 5:10] = True  # 25 of 400 pixels
    pred[hole] += 10  # MSE 100 inside the hole
    assert psnr(pred, gt, hole) == pytest.approx(10 * math.log10(255**2 / 100))
    assert psnr(pred, gt) == pytest.approx(10 * math.log10(255**2 / (100 * 25 / 400)))
    pred2 = pred.copy()
    pred2[~hole] = 0  # errors outside the hole do not change the hole score
    assert psnr(pred2, gt, hole) == pytest.approx(psnr(pred, gt, hole))
    assert psnr(gt, gt, hole) == math.inf
    assert math.isnan(psnr(pred, gt, np.zeros_like(hole)))


def test_hole_ssim_is_mean_of_skimage_map_over_hole():
    pred, gt, hole = _pair(1)
    _, smap = structural_similarity(gt, pred, channel_axis=-1, data_range=255, full=True)
    assert ssim(pred, gt, hole) == pytest.approx(smap.mean(-1)[hole].mean())
    m = frame_metrics(pred, gt, hole)
    assert m["hole_ssim"] == pytest.approx(ssim(pred, gt, hole))
    assert m["frame_ssim"] == pytest.approx(ssim(pred, gt))
    assert m["hole_psnr"] == pytest.approx(psnr(pred, gt, hole))
    good = gt.copy()
    good[hole] = pred[hole]  # errors only inside the hole: hole SSIM is worse than frame SSIM
    assert ssim(good, gt, hole) < ssim(good, gt) < 1.0


def _write_tree(root, pred, gt, hole):
    for kind, arrs in (("pred", pred), ("gt", gt), ("holes", hole)):
        for seq in ("a", "b"):
            d = root / kind / seq
            d.mkdir(parents=True, exist_ok=True)
            for t, x in enumerate(arrs):
                img = x if x.dtype == np.uint8 else x.astype(np.uint8) * 255
                Image.fromarray(img).save(d / f"{t:05d}.png")


def test_evaluate_inpainting_folders_and_cli(tmp_path):
    p0, g0, h0 = _pair(2)
    p1, g1, h1 = _pair(3)
    perfect = g1.copy()  # frame 1: perfect prediction -> capped PSNR
    _write_tree(tmp_path, [p0, perfect], [g0, g1], [h0, h1])
    res = evaluate_inpainting(tmp_path / "pred", tmp_path / "gt", tmp_path / "holes")
    assert res["num_frames"] == 4 and set(res["per_sequence"]) == {"a", "b"}
    hp = psnr(p0, g0, h0)
    assert res["mean"]["hole_psnr"] == pytest.approx((hp + PSNR_CAP) / 2)
    assert res["per_sequence"]["a"]["frame_ssim"] == pytest.approx((ssim(p0, g0) + 1.0) / 2)
    add_arguments, run = SUBCOMMANDS["inpaint"]
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    out = tmp_path / "m.json"
    args = parser.parse_args(
        [
            "--pred",
            str(tmp_path / "pred"),
            "--gt",
            str(tmp_path / "gt"),
            "--holes",
            str(tmp_path / "holes"),
            "--out",
            str(out),
        ]
    )
    assert run(args) == 0
    saved = json.loads(out.read_text())
    assert saved["mean"]["hole_psnr"] == pytest.approx(res["mean"]["hole_psnr"])
    (tmp_path / "pred" / "b" / "00001.png").unlink()
    with pytest.raises(FileNotFoundError, match="b/00001"):
        evaluate_inpainting(tmp_path / "pred", tmp_path / "gt", tmp_path / "holes")
    assert run(args) == 2  # a user error: one line, exit status 2


def test_lpips_without_weights_raises_clear_error(tmp_path):
    with pytest.raises(LPIPSUnavailable, match="backbone weights"):
        LPIPS(net="alex")
    with pytest.raises(LPIPSUnavailable, match="does not exist"):
        LPIPS(net="vgg", backbone_weights=tmp_path / "vgg.pth", linear_weights=tmp_path / "l")


def test_lpips_loads_user_weight_files(tmp_path):
    """Loader wiring only: the files here are seeded stand-ins written by the test (real use
    needs ImageNet AlexNet + LPIPS linear weights); identical images score 0, others > 0."""
    from torchvision.models import alexnet

    torch.manual_seed(0)
    feats = alexnet(weights=None).features.state_dict()
    torch.save({f"features.{k}": v for k, v in feats.items()}, tmp_path / "alex_backbone.pth")
    lins = {
        f"lin{i}.model.1.weight": torch.rand(1, c, 1, 1)
        for i, c in enumerate((64, 192, 384, 256, 256))
    }
    torch.save(lins, tmp_path / "alex.pth")
    metric = LPIPS(
        net="alex",
        backbone_weights=tmp_path / "alex_backbone.pth",
        linear_weights=tmp_path / "alex.pth",
    )
    a = torch.rand(2, 3, 64, 64)
    b = (a + 0.3 * torch.randn_like(a)).clamp(0, 1)
    assert torch.allclose(metric(a, a), torch.zeros(2), atol=1e-6)
    d = metric(a, b)
    assert d.shape == (2,) and (d > 0).all()
    mask = torch.zeros(2, 1, 64, 64)
    mask[:, :, 16:48, 16:48] = 1
    b2 = a.clone()
    b2[:, :, :8] = b[:, :, :8]  # differences only far outside the mask
    assert (metric(a, b2, mask) < metric(a, b2)).all()
    del lins["lin4.model.1.weight"]
    torch.save(lins, tmp_path / "bad.pth")
    with pytest.raises(LPIPSUnavailable, match="lin4"):
        LPIPS(
            net="alex",
            backbone_weights=tmp_path / "alex_backbone.pth",
            linear_weights=tmp_path / "bad.pth",
        )
