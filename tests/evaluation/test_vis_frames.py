"""Per-frame mask AP on a subset of frames (the corrupted frames of synthetic videos)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from instseg.cli.main import main
from instseg.data.ytvis import load_ytvis_dataset
from instseg.evaluation.vis import (
    YTVISEvaluator,
    evaluate_vis_frames,
    read_frame_subset,
)
from instseg.structures import Instances, mask_to_rle

H = W = 20


def _box(y0: int, x0: int) -> np.ndarray:
    m = np.zeros((H, W), bool)
    m[y0 : y0 + 8, x0 : x0 + 8] = True
    return m


def _rle(m: np.ndarray) -> dict:
    r = mask_to_rle(m)
    return {"size": list(r["size"]), "counts": r["counts"]}


@pytest.fixture()
def case(tmp_path: Path) -> tuple[Path, Path, list[np.ndarray]]:
    """One 4-frame video, one GT track at the same place; the prediction misses it only in
    frame 2, the one listed as corrupted."""
    gt_masks = [_box(2, 2)] * 4
    pred = [_box(2, 2), _box(2, 2), _box(11, 11), _box(2, 2)]
    gt = {
        "videos": [{"id": 1, "width": W, "height": H, "length": 4,
                    "file_names": [f"v/{t}.png" for t in range(4)],
                    "corrupted_frames": [2], "patched_frames": []}],
        "annotations": [{"id": 1, "video_id": 1, "category_id": 1, "iscrowd": 0,
                         "segmentations": [_rle(m) for m in gt_masks]}],
        "categories": [{"id": 1, "name": "object"}],
    }  # fmt: skip
    res = [{"video_id": 1, "category_id": 1, "score": 0.9,
            "segmentations": [_rle(m) for m in pred]}]  # fmt: skip
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "res.json").write_text(json.dumps(res))
    return tmp_path / "gt.json", tmp_path / "res.json", pred


def test_subset_ap(case: tuple[Path, Path, list[np.ndarray]]) -> None:
    gt_json, res_json, _ = case
    gt = load_ytvis_dataset(gt_json, Path("."))
    res = json.loads(res_json.read_text())
    assert read_frame_subset(gt_json) == {1: [2]}
    assert read_frame_subset(gt_json, "patched_frames") == {1: []}
    bad = evaluate_vis_frames(gt, res, {1: [2]})
    good = evaluate_vis_frames(gt, res, {1: [0, 1, 3]})
    every = evaluate_vis_frames(gt, res)
    assert bad["num_frames"] == 1 and bad["AP"] == 0.0
    assert good["num_frames"] == 3 and good["AP"] == pytest.approx(100.0)
    assert every["num_frames"] == 4 and 0.0 < every["AP"] < 100.0
    with pytest.raises(ValueError, match="outside"):
        evaluate_vis_frames(gt, res, {1: [4]})
    with pytest.raises(ValueError, match="no video lists"):
        read_frame_subset(gt_json, "nothing")


def test_evaluator_frame_subsets(case: tuple[Path, Path, list[np.ndarray]]) -> None:
    gt_json, _, pred = case
    ev = YTVISEvaluator(
        gt_json, category_ids=[1], frame_subsets={"corrupted": read_frame_subset(gt_json)}
    )
    for t, m in enumerate(pred):
        inst = Instances(
            image_size=(H, W), boxes=torch.zeros(1, 4), labels=torch.zeros(1, dtype=torch.long),
            scores=torch.tensor([0.9]), masks=torch.from_numpy(m)[None],
            track_ids=torch.tensor([5]),
        )  # fmt: skip
        ev.process_frame(f"v/{t}.png", inst)
    out = ev.evaluate()
    assert out["frames"]["corrupted"]["AP"] == 0.0
    assert out["frames"]["all"]["num_frames"] == 4


def test_cli_frames_flag(case: tuple[Path, Path, list[np.ndarray]], tmp_path: Path) -> None:
    gt_json, res_json, _ = case
    out = tmp_path / "m.json"
    argv = ["evaluate", "vis", "--gt", str(gt_json), "--results", str(res_json)]
    assert main([*argv, "--frames", "corrupted_frames", "--out", str(out)]) == 0
    metrics = json.loads(out.read_text())
    assert metrics["frames"]["corrupted_frames"]["AP"] == 0.0
    assert metrics["frames"]["all"]["num_frames"] == 4
