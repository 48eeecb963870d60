"""Mask gating in PCAN inference (issue 15, deliverable 7): on the shipped model and a short
synthetic clip, the mask head and pasting run up front only for detections scoring at least
the tracker's ``mask_score_thresh`` (plus the few lower-scored ones whose masks the tracker's
painting rule reads), and the tracked outputs equal those of running it on every detection."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
WEIGHTS = ROOT / "src" / "instseg" / "weights" / "pcan_default.pt"
pytestmark = pytest.mark.skipif(not WEIGHTS.is_file(), reason="no shipped PCAN model")


@pytest.fixture(scope="module")
def runs() -> dict:
    """The clip tracked without gating (``mask_score=0``) and with it (default), recording per
    frame the detector's output and the boxes of every mask-head call."""
    from instseg.data.synthetic import SceneConfig
    from instseg.data.synthetic_video import VideoConfig, make_video
    from instseg.inference.video_predictor import VideoPredictor, load_video_model

    cfg = VideoConfig(
        scene=SceneConfig(image_size=(192, 288), min_objects=3, max_objects=6, occlusion=0.3),
        num_frames=5,
    )
    frames, _ = make_video(np.random.default_rng([777, 2]), cfg)
    model, meta = load_video_model(WEIGHTS)
    seg = model.segmenter
    rec: dict = {}
    detect = seg.detector.predict

    def recorded(*a, **kw):  # noqa: ANN002, ANN003, ANN202
        d = detect(*a, **kw)
        rec["dets"].append(d[0])
        rec["calls"].append([])
        return d

    seg.detector.predict = recorded
    # the TSM's instance RoIs may use the same pooler (instance_rois="mask"): not mask-head calls
    in_tsm = {"on": False}
    inst_rois = model._inst_rois

    def tsm_rois(*a, **kw):  # noqa: ANN002, ANN003, ANN202
        in_tsm["on"] = True
        try:
            return inst_rois(*a, **kw)
        finally:
            in_tsm["on"] = False

    model._inst_rois = tsm_rois
    seg.mask_roi_pool.register_forward_hook(
        lambda m, i, o: None if in_tsm["on"] else rec["calls"][-1].append(i[1][0].detach().clone())
    )
    seg.mask_head.register_forward_hook(lambda m, i, o: rec["heads"].append(len(i[0])))
    out: dict = {}
    for name, mask_score in (("ungated", 0.0), ("gated", None)):
        pred = VideoPredictor(model, meta=meta, device="cpu", amp="none", mask_score=mask_score)
        rec = out[name] = {"dets": [], "calls": [], "heads": []}
        rec["outputs"], rec["states"] = [], []
        for f in frames:
            rec["outputs"].append(pred(f))
            rec["states"].append(pred.state.tracks)
        out["thresh"] = pred.tracker.mask_score_thresh
        out["gate"] = pred.tracker.obj_score_thresh
    return out


def test_gated_tracking_equals_ungated(runs: dict) -> None:
    """Tracked outputs (ids, boxes, scores, labels, masks) and the tracker's state, frame by
    frame, are those of running the mask head on every detection."""
    a, b = runs["ungated"]["outputs"], runs["gated"]["outputs"]
    assert sum(len(x) for x in a) >= 10  # the clip has tracked objects to compare
    for x, y in zip(a, b, strict=True):
        assert len(x) == len(y)
        assert torch.equal(x.track_ids, y.track_ids)
        assert torch.equal(x.boxes, y.boxes) and torch.equal(x.scores, y.scores)
        assert torch.equal(x.labels, y.labels) and torch.equal(x.masks, y.masks)
    # the tracker's state too: below-gate detections (backdrops) and track embeddings
    for x, y in zip(runs["ungated"]["states"], runs["gated"]["states"], strict=True):
        assert x.next_id == y.next_id and sorted(x.tracks) == sorted(y.tracks)
        for k in x.tracks:
            assert torch.equal(x.tracks[k].embedding, y.tracks[k].embedding)
        for bx, by in zip(x.backdrops, y.backdrops, strict=True):
            assert torch.equal(bx.boxes, by.boxes) and torch.equal(bx.embeddings, by.embeddings)


def _rows(boxes: torch.Tensor, det_boxes: torch.Tensor) -> list[int]:
    """Index in ``det_boxes`` of each row of ``boxes`` (exact match)."""
    eq = (boxes[:, None, :] == det_boxes[None, :, :]).all(-1)
    assert bool(eq.any(1).all())
    return eq.float().argmax(1).tolist()


def test_mask_head_runs_on_the_gated_detections_only(runs: dict) -> None:
    """Ungated: one mask-head call per frame with every detection (~100). Gated: first the
    detections >= the tracker's threshold, then only below-gate detections (those the
    painting rule reads, in rounds), each detection at most once; a fraction of the RoIs."""
    thresh, gate = runs["thresh"], runs["gate"]
    ung, gat = runs["ungated"], runs["gated"]
    for d, calls in zip(ung["dets"], ung["calls"], strict=True):
        assert len(calls) == 1 and len(calls[0]) == len(d)
    total_gated = 0
    for d, calls in zip(gat["dets"], gat["calls"], strict=True):
        first = _rows(calls[0], d.boxes)
        assert sorted(first) == torch.nonzero(d.scores >= thresh).flatten().tolist()
        later = [i for c in calls[1:] for i in _rows(c, d.boxes)]
        assert all(float(d.scores[i]) < gate for i in later)
        assert len(set(first + later)) == len(first) + len(later)
        total_gated += len(first) + len(later)
    assert sum(gat["heads"]) == total_gated  # every pooled RoI went through the head once
    total = sum(len(d) for d in ung["dets"])
    assert sum(ung["heads"]) == total >= 300
    print(f"mask-head RoIs: gated {total_gated} / ungated {total}")
    assert total_gated < 0.35 * total
