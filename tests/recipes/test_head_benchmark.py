"""The cached-RoI mask-head benchmark (issue 14): RoI cache, paired training, metrics, report."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils
from torchvision.ops import box_iou

from instseg.evaluation.head_metrics import box_rle
from instseg.models.heads.base import MaskHead
from instseg.models.zoo import build_model
from instseg.recipes.head_benchmark import (
    HEADS,
    FeatureNorm,
    HeadBenchConfig,
    benchmark_scenes,
    build_head,
    build_roi_set,
    evaluate_head,
    format_report,
    run_benchmark,
    train_head,
)

CFG = HeadBenchConfig(
    weights="unused",
    heads=("maskrcnn", "bcnet"),
    seeds=(0, 1),
    train_images=6,
    test_images=4,
    image_size=96,
    min_objects=2,
    max_objects=4,
    iters=3,
    roi_batch=16,
    warmup_iters=1,
    bootstrap=50,
    davis=False,
)


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model("effl0_fcos_maskrcnn", num_classes=1, pretrained=False).eval()


@pytest.fixture(scope="module")
def train_set(model):
    return build_roi_set(model, benchmark_scenes("train", CFG), jitter_per_gt=2, seed=0)


@pytest.fixture(scope="module")
def test_set(model):
    return build_roi_set(model, benchmark_scenes("test", CFG), keep_rles=True)


def test_roi_cache_shapes_and_jittered_boxes(train_set):
    r = train_set
    n = len(r)
    assert r.features.shape == (n, 64, 14, 14) and r.features.dtype == torch.float16
    for t in (r.masks, r.occluder, r.amodal):
        assert t.shape == (n, 28, 28) and t.dtype == torch.uint8
    assert 0 < int(r.is_gt.sum()) < n  # GT boxes plus jittered ones
    # every jittered box overlaps its image's GT box of the same instance at IoU >= 0.5
    for img in torch.unique(r.image_index).tolist():
        sel = r.image_index == img
        gt, jit = r.boxes[sel & r.is_gt], r.boxes[sel & ~r.is_gt]
        if len(jit):
            assert (box_iou(jit, gt).max(dim=1).values >= 0.5).all()
    # the visible target lies inside the amodal one; occluded instances have occluder targets
    assert (r.masks <= r.amodal).all()
    occluded = (r.occlusion_ratio > 0.3) & r.is_gt
    assert occluded.any()
    assert (r.occluder[occluded].flatten(1).sum(1) > 0).float().mean() > 0.9


def test_evaluation_set_keeps_gt_boxes_and_masks(test_set):
    r = test_set
    assert r.is_gt.all()
    assert len(r.visible_rle) == len(r.occluder_rle) == len(r)
    # the GT box is the visible mask's box
    for k in range(len(r)):
        x, y, w, h = mask_utils.toBbox(r.visible_rle[k])
        assert r.boxes[k].tolist() == pytest.approx([x, y, x + w, y + h], abs=1e-4)


class _Full(MaskHead):
    """Predicts every pixel of the box: IoU = visible / box area, share on the occluder =
    occluder pixels in the box / box area."""

    def forward(self, x):
        return {"mask": torch.full((x.shape[0], 1, 28, 28), 20.0)}


def test_evaluate_head_matches_direct_mask_arithmetic(test_set):
    r = test_set
    norm = FeatureNorm(mean=torch.zeros(64), std=torch.ones(64))
    out = evaluate_head(_Full(), r, norm)
    for k in range(len(r)):
        h, w = r.image_sizes[int(r.image_index[k])]
        box = box_rle(r.boxes[k].tolist(), h, w)
        want = mask_utils.area(r.visible_rle[k]) / mask_utils.area(box)
        assert out["iou"][k] == pytest.approx(want, abs=0.06)
        occ_in_box = mask_utils.area(mask_utils.merge([r.occluder_rle[k], box], intersect=True))
        if mask_utils.area(r.occluder_rle[k]) > 0:
            assert out["on_occluder"][k] == pytest.approx(
                occ_in_box / mask_utils.area(box), abs=0.06
            )
    assert np.isnan(out["occluder_iou"]).all()  # the head has no occluder output
    assert set(out["mask_ap"]) == {"AP", "AP50", "AP75"}


def test_same_seed_same_batches_same_result(train_set):
    norm = FeatureNorm.fit(train_set.features)
    cfg = HeadBenchConfig(weights="unused", iters=4, roi_batch=16, warmup_iters=1)
    a, b = (build_head("maskrcnn", in_channels=64, seed=3) for _ in range(2))
    ra = train_head(a, train_set, norm, cfg, seed=5)
    rb = train_head(b, train_set, norm, cfg, seed=5)
    assert ra["loss_first"] == rb["loss_first"] and ra["loss_last"] == rb["loss_last"]
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)


def test_loss_falls_on_a_tiny_overfit(train_set):
    norm = FeatureNorm.fit(train_set.features)
    cfg = HeadBenchConfig(weights="unused", iters=60, roi_batch=32, lr=3e-3, warmup_iters=5)
    rec = train_head(build_head("bcnet", in_channels=64, seed=0), train_set, norm, cfg, seed=0)
    assert rec["loss_last"] < 0.8 * rec["loss_first"]
    # every loss term trains something on the first batch
    assert set(rec["term_grad_norm"]) == {
        "loss_mask", "loss_contour", "loss_occluder_mask", "loss_occluder_contour"
    }  # fmt: skip
    assert all(v > 0 for v in rec["term_grad_norm"].values())


def test_loss_weights_scale_the_named_term_only(train_set):
    norm = FeatureNorm.fit(train_set.features)
    base = dict(weights="unused", iters=1, roi_batch=16, warmup_iters=1)
    grads = {}
    for w in (1.0, 0.25, 0.0):
        cfg = HeadBenchConfig(**base, loss_weights={"affinity": w})
        head = build_head("cpmask", in_channels=64, seed=0)
        grads[w] = train_head(head, train_set, norm, cfg, seed=0)["term_grad_norm"]
    assert grads[0.25]["loss_affinity"] == pytest.approx(0.25 * grads[1.0]["loss_affinity"])
    assert grads[0.0]["loss_affinity"] == 0.0
    for term in ("loss_mask", "loss_boundary"):  # other terms untouched
        assert grads[0.25][term] == pytest.approx(grads[1.0][term])
    with pytest.raises(ValueError, match="unknown loss term"):
        HeadBenchConfig(weights="unused", loss_weights={"afinity": 0.5})
    with pytest.raises(ValueError, match=">= 0"):
        HeadBenchConfig(weights="unused", loss_weights={"affinity": -1.0})


def test_capacity_control_is_near_bcnet_size():
    def size(name: str) -> int:
        return sum(p.numel() for p in build_head(name, in_channels=64, seed=0).parameters())

    assert 0.85 < size("maskrcnn_8conv") / size("bcnet") < 1.0
    assert "single_fcn" not in HEADS  # the same head as "maskrcnn"


def test_run_benchmark_report(model):
    report = run_benchmark(CFG, model=model)
    s = report["sets"]["test"]
    assert set(s["heads"]) == {"maskrcnn", "bcnet"}
    assert "bcnet - maskrcnn" in s["paired"]
    assert set(s["paired"]["bcnet - maskrcnn"]) == {"occluded", "unoccluded", "all"}
    assert s["heads"]["bcnet"]["seeds"] == [0, 1]
    blocks = report["liveness"]["bcnet"]
    assert [b["block"] for b in blocks] == ["occluder.gcn", "occludee.gcn"]
    for b in blocks:
        assert 0 < b["entropy"] <= b["uniform_entropy"] + 1e-5
        assert b["uniform_entropy"] == pytest.approx(math.log(14 * 14))
        assert b["branch_ratio"] > 0.05  # the graph adds something to X
    assert report["liveness"]["maskrcnn"] == []
    assert (
        report["arrays"]["test/bcnet/1/iou"].shape == report["arrays"]["test/occlusion_ratio"].shape
    )
    text = format_report(report)
    assert "| bcnet |" in text and "bcnet - maskrcnn" in text


def test_amodal_mode_uses_amodal_boxes_targets_and_scores(model):
    cfg = HeadBenchConfig(**{**CFG.__dict__, "heads": ("maskrcnn",), "seeds": (0,)})
    cfg.mask_target = "amodal"
    rois = build_roi_set(model, benchmark_scenes("test", cfg), keep_rles=True, box_from="amodal")
    for k in range(len(rois)):  # the boxes are the amodal masks' boxes
        x, y, w, h = mask_utils.toBbox(rois.amodal_rle[k])
        assert rois.boxes[k].tolist() == pytest.approx([x, y, x + w, y + h], abs=1e-4)
    norm = FeatureNorm(mean=torch.zeros(64), std=torch.ones(64))
    out = evaluate_head(_Full(), rois, norm, mask_target="amodal")
    # the whole box covers every hidden pixel of the amodal mask (up to the paste's rounding)
    hidden = out["hidden_recall"][~np.isnan(out["hidden_recall"])]
    assert hidden.size and (hidden > 0.9).all()
    assert np.isnan(evaluate_head(_Full(), rois, norm)["hidden_recall"]).all()
    report = run_benchmark(cfg, model=model)
    assert "amodal" in format_report(report)
    with pytest.raises(ValueError, match="mask_target"):
        HeadBenchConfig(weights="x", mask_target="modal")


def test_roi_set_cache_round_trip_and_reuse(model, test_set, tmp_path, monkeypatch):
    from instseg.recipes import head_benchmark as hb

    hb.save_roi_set(test_set, tmp_path / "s.pt")
    back = hb.load_roi_set(tmp_path / "s.pt")
    assert torch.equal(back.features, test_set.features)
    assert back.visible_rle == test_set.visible_rle and back.image_sizes == test_set.image_sizes
    cfg = HeadBenchConfig(**{**CFG.__dict__, "heads": ("maskrcnn",), "seeds": (0,)})
    first = run_benchmark(cfg, model=model, cache_dir=tmp_path / "cache")
    calls = []
    monkeypatch.setattr(hb, "build_roi_set", lambda *a, **k: calls.append(1))
    again = run_benchmark(cfg, model=model, cache_dir=tmp_path / "cache")
    assert not calls  # every set came from the cache
    assert np.array_equal(
        first["arrays"]["test/maskrcnn/0/iou"], again["arrays"]["test/maskrcnn/0/iou"]
    )


def test_oracle_training_sets_are_concatenated(train_set):
    from instseg.recipes.head_benchmark import _cat_sets

    both = _cat_sets(train_set, train_set)
    assert len(both) == 2 * len(train_set)
    assert both.image_index[len(train_set) :].min() == len(train_set.image_sizes)
    assert len(both.image_sizes) == 2 * len(train_set.image_sizes)


def _compare_script():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "mask_heads_compare.py"
    spec = importlib.util.spec_from_file_location("mask_heads_compare", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_cross_run_comparison_pairs_only_identical_instances(tmp_path):
    cmp = _compare_script()
    rng = np.random.default_rng(0)
    ratio, images = rng.uniform(0, 0.9, 40), np.repeat(np.arange(10), 4)

    def run(name: str, iou: np.ndarray, ratio: np.ndarray = ratio) -> str:
        (tmp_path / name).mkdir()
        arrays = {"unseen/occlusion_ratio": ratio, "unseen/image_index": images}
        for s in (0, 1):
            arrays[f"unseen/h/{s}/iou"] = iou + 0.01 * s
        np.savez(tmp_path / name / "per_instance.npz", **arrays)
        return f"{tmp_path / name}:h"

    base = rng.uniform(0.2, 0.8, 40)
    a, b = run("a", base + 0.05), run("b", base)
    r = cmp.compare(a, b, split="unseen", resamples=200)
    assert r["all"]["mean"] == pytest.approx(0.05) and r["all"]["n"] == 40
    assert r["occluded"]["n"] == int((ratio > 0.3).sum())
    c = run("c", base, ratio=ratio[::-1].copy())  # other instances: refused
    with pytest.raises(SystemExit, match="not pairable"):
        cmp.compare(a, c, split="unseen", resamples=200)
    with pytest.raises(SystemExit, match="no head 'x'"):
        cmp.compare(a, f"{tmp_path / 'b'}:x", split="unseen", resamples=200)
