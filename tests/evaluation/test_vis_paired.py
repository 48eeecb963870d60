"""Oracle association and the paired per-video bootstrap (issue 15's ablation statistics)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from instseg.data.ytvis import Video, VideoAnnotation, YTVISDataset
from instseg.evaluation.vis import evaluate_vis, evaluate_vis_frames
from instseg.evaluation.vis_paired import (
    oracle_association,
    paired_video_bootstrap,
    resample_videos,
)
from instseg.structures import mask_to_rle

H = W = 24
T = 4


def _box(y0: int, x0: int, s: int = 8) -> dict:
    m = np.zeros((H, W), bool)
    m[y0 : y0 + s, x0 : x0 + s] = True
    r = mask_to_rle(m)
    return {"size": list(r["size"]), "counts": r["counts"]}


A, B = (1, 1), (14, 14)  # two far-apart objects: top-left and bottom-right


def _video(vid: int) -> Video:
    anns = [
        VideoAnnotation(id=10 * vid + k, video_id=vid, category_id=1,
                        segmentations=[_box(*p)] * T, areas=[64.0] * T)
        for k, p in enumerate((A, B))
    ]  # fmt: skip
    names = [f"v{vid}/{t}.jpg" for t in range(T)]
    return Video(vid, f"v{vid}", W, H, names, [Path(n) for n in names], anns)


def _gt(n: int = 3) -> YTVISDataset:
    return YTVISDataset(videos=[_video(v) for v in range(1, n + 1)], categories={1: "object"})


def _swapped(vid: int) -> list[dict]:
    """Perfect masks, but the tracker swapped the two identities after frame 1."""
    return [
        {"video_id": vid, "category_id": 1, "score": 0.9,
         "segmentations": [_box(*A), _box(*A), _box(*B), _box(*B)]},
        {"video_id": vid, "category_id": 1, "score": 0.8,
         "segmentations": [_box(*B), _box(*B), _box(*A), _box(*A)]},
    ]  # fmt: skip


def _perfect(vid: int) -> list[dict]:
    return [
        {"video_id": vid, "category_id": 1, "score": s, "segmentations": [_box(*p)] * T}
        for s, p in ((0.9, A), (0.8, B))
    ]


def test_oracle_association_removes_identity_switches_only() -> None:
    gt = _gt(1)
    res = _swapped(1)
    assert evaluate_vis(gt, res)["AP"] < 50  # every track is half right: IoU 0.5
    fixed = oracle_association(gt, res)
    assert len(fixed) == 2 and evaluate_vis(gt, fixed)["AP"] == pytest.approx(100.0)
    # a mask far from every object stays a false positive of its own (with its track's score)
    fp = {"video_id": 1, "category_id": 1, "score": 0.95,
          "segmentations": [None, _box(8, 1, 4), None, None]}  # fmt: skip
    fixed = oracle_association(gt, [*res, fp])
    assert len(fixed) == 3 and evaluate_vis(gt, fixed)["AP"] < 100.0
    # a poor mask (IoU 1/3 with A) is A's attempt; at iou_thresh 0.5 it matches nothing and
    # stays with the GT track its own track was linked to: never a false positive of its own
    poor = [dict(r) for r in _perfect(1)]
    poor[0]["segmentations"] = [_box(*A), _box(1, 5), _box(*A), _box(*A)]
    for th in (0.1, 0.5):
        fixed = oracle_association(gt, poor, iou_thresh=th)
        assert len(fixed) == 2 and fixed[0]["segmentations"][1] == _box(1, 5)
    # a track whose masks match no GT track (a duplicate of A, after A's better mask) stays whole
    dup = [*_perfect(1), {"video_id": 1, "category_id": 1, "score": 0.5,
                          "segmentations": [_box(*A), _box(8, 1, 4), None, None]}]  # fmt: skip
    fixed = oracle_association(gt, dup)
    assert len(fixed) == 3 and fixed[2]["segmentations"][1] == _box(8, 1, 4)
    with pytest.raises(ValueError, match="video_id 9"):
        oracle_association(gt, [{**fp, "video_id": 9}])


def test_resample_videos_repeats_and_renumbers() -> None:
    gt = _gt(3)
    res = [r for v in (1, 2, 3) for r in (_perfect(v) if v != 2 else _swapped(v))]
    sub, (mapped,), frames = resample_videos(gt, [2, 2, 3], [res], {2: [0, 3], 3: [1]})
    assert [v.id for v in sub.videos] == [1, 2, 3]
    assert all(a.video_id == v.id for v in sub.videos for a in v.annotations)
    assert sorted(r["video_id"] for r in mapped) == [1, 1, 2, 2, 3, 3]
    assert frames == {1: [0, 3], 2: [0, 3], 3: [1]}
    # identity draw: same metric; a video drawn twice scores like itself alone
    same, (m2,), _ = resample_videos(gt, [1, 2, 3], [res])
    assert evaluate_vis(same, m2)["AP"] == pytest.approx(evaluate_vis(gt, res)["AP"])
    twice, (m3,), _ = resample_videos(gt, [2, 2], [res])
    assert evaluate_vis(twice, m3)["AP"] == pytest.approx(
        evaluate_vis(gt, res, video_ids=[2])["AP"]
    )
    with pytest.raises(ValueError, match="video id 7"):
        resample_videos(gt, [7])


def test_paired_video_bootstrap_interval() -> None:
    gt = _gt(6)
    good = [r for v in range(1, 7) for r in _perfect(v)]
    bad = [r for v in range(1, 7) for r in (_swapped(v) if v % 2 else _perfect(v))]

    def ap(g, r, f):
        return evaluate_vis(g, r)["AP"]

    same = paired_video_bootstrap(gt, [good, good], [good, good], ap, resamples=30)
    assert same.mean == 0 and same.low == 0 and same.high == 0 and same.n == 6
    iv = paired_video_bootstrap(gt, [good], [bad], ap, resamples=50, seed=1)
    assert iv.mean > 0 and iv.excludes_zero() and iv.low <= iv.mean <= iv.high
    assert iv == paired_video_bootstrap(gt, [good], [bad], ap, resamples=50, seed=1)

    # the frame subset follows the resampled videos: per-frame AP on frame 0 only, where the
    # swapped tracks are still right, shows no difference
    def frame_ap(g, r, f):
        return evaluate_vis_frames(g, r, f)["AP"]

    frames = {v: [0] for v in range(1, 7)}
    iv0 = paired_video_bootstrap(gt, [good], [bad], frame_ap, frames=frames, resamples=20)
    assert iv0.mean == pytest.approx(0.0) and iv0.high == pytest.approx(0.0)
    with pytest.raises(ValueError, match="seeds"):
        paired_video_bootstrap(gt, [good], [], ap)


def test_bootstrap_draws_score_each_run_once_per_draw() -> None:
    from instseg.evaluation.vis_paired import interval_of, video_bootstrap_draws

    gt = _gt(4)
    good = [r for v in range(1, 5) for r in _perfect(v)]
    bad = [r for v in range(1, 5) for r in (_swapped(v) if v % 2 else _perfect(v))]
    calls = []

    def ap(g, r, f):
        calls.append(1)
        return evaluate_vis(g, r)["AP"]

    draws = video_bootstrap_draws(gt, {"g": [good, good], "b": [bad, good]}, ap, resamples=10)
    assert draws["g"].shape == draws["b"].shape == (11, 2) and len(calls) == 11 * 4
    assert np.allclose(draws["g"], 100.0) and draws["b"][0, 0] < 100.0
    iv = interval_of(draws["g"], draws["b"], n=4)
    assert iv.mean == pytest.approx((100.0 - draws["b"][0, 0]) / 2) and iv.low <= iv.high
    # the same draws as the pairwise function (same seed, same videos drawn)
    same = paired_video_bootstrap(gt, [good, good], [bad, good], ap, resamples=10)
    assert same == iv
    with pytest.raises(ValueError, match="shapes"):
        interval_of(draws["g"][:1], draws["b"][:1])
