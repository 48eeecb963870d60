"""Comparing video segmenters fairly: oracle association and paired per-video bootstrap.

- :func:`oracle_association` re-links a results file's per-frame masks by the ground truth's
  identities, so that YouTube-VIS AP measures segmentation quality with association taken
  out (issue 15's "oracle-association VIS AP"): the predicted masks of a frame are matched
  one-to-one to its GT tracks (same category) so that the total mask IoU is largest (Hungarian
  assignment), a pair counting if its IoU is >= ``iou_thresh`` (default 0.1: a mask that
  covers a tenth of an object is that object's attempt, however poor);
  a GT track's matched masks become one predicted track (score: the mean of their tracks'
  scores); a mask that matches nothing stays with the GT track its own track was mostly
  linked to (if that one has no mask in its frame), else in a track of its own, grouped as the
  tracker grouped them. Association errors then cost nothing; missed, extra and poor masks
  still do. It is not an upper bound of the tracker's AP: where two tracks followed one object
  (a duplicate), the oracle track takes the best mask of each frame and the masks it leaves form
  a fragment per original track, so one duplicate can become two false positives (on issue 15's
  held-out videos the oracle AP is within +-1.6 of the tracker's).
- :func:`resample_videos` / :func:`paired_video_bootstrap`: intervals for the difference of a
  dataset-level metric (AP is not a mean over videos) between two models, resampling videos
  with replacement: each resample builds a ground truth of the drawn videos (a video drawn
  twice appears twice, under new ids) and re-scores both models' results on it. With several
  training seeds per model the statistic is the mean over seeds of (a_seed - b_seed), seeds
  paired by index, the same resampled videos for all.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import pycocotools.mask as mask_util
from scipy.optimize import linear_sum_assignment

from instseg.data.ytvis import VideoResult, YTVISDataset
from instseg.evaluation.head_metrics import PairedInterval

__all__ = [
    "interval_of",
    "oracle_association",
    "paired_video_bootstrap",
    "resample_videos",
    "video_bootstrap_draws",
]

Results = Sequence[Mapping[str, Any]]
Frames = Mapping[int, Sequence[int]]


def _json(r: Mapping[str, Any] | VideoResult) -> dict[str, Any]:
    return r.to_json() if isinstance(r, VideoResult) else dict(r)


def _rle(s: Mapping[str, Any]) -> dict[str, Any]:
    c = s["counts"]
    return {"size": list(s["size"]), "counts": c.encode("ascii") if isinstance(c, str) else c}


def oracle_association(
    gt: YTVISDataset, results: Sequence[Mapping[str, Any] | VideoResult], *, iou_thresh: float = 0.1
) -> list[dict[str, Any]]:
    """``results`` (YouTube-VIS result dicts, RLE masks per frame) re-associated by the GT
    identities (see the module docstring). Matching is per frame (largest total IoU within a
    category); a track's masks that were matched to different GT tracks are split between them.

    Returns result dicts in the same format (``segmentations`` lists of the video's length)."""
    if not 0.0 < iou_thresh <= 1.0:
        raise ValueError(f"iou_thresh must be in (0, 1], got {iou_thresh}")
    videos = {v.id: v for v in gt.videos}
    by_video: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for r in results:
        r = _json(r)
        if int(r["video_id"]) not in videos:
            raise ValueError(f"oracle_association: video_id {r['video_id']} is not in the GT")
        by_video[int(r["video_id"])].append(r)
    out: list[dict[str, Any]] = []
    for vid, tracks in by_video.items():
        video = videos[vid]
        n = video.length
        # (gt annotation index) -> frame -> (mask, score of its track)
        linked: dict[int, dict[int, tuple[Any, float]]] = defaultdict(dict)
        rest: list[list[Any]] = [[None] * n for _ in tracks]
        votes: list[Counter[int]] = [Counter() for _ in tracks]  # track -> GT it was linked to
        for t in range(n):
            dets = [k for k, tr in enumerate(tracks) if tr["segmentations"][t] is not None]
            gts = [j for j, a in enumerate(video.annotations) if a.segmentations[t] is not None]
            iou = np.zeros((len(dets), len(gts)))
            if dets and gts:
                iou = mask_util.iou(
                    [_rle(tracks[k]["segmentations"][t]) for k in dets],
                    [_rle(video.annotations[j].segmentations[t]) for j in gts],
                    [0] * len(gts),
                )
                same = np.array(
                    [[int(tracks[k]["category_id"]) == video.annotations[j].category_id
                      for j in gts] for k in dets]
                )  # fmt: skip
                iou = np.where(same, iou, 0.0)
            rows, cols = linear_sum_assignment(iou, maximize=True)
            matched = {
                dets[r]: gts[c] for r, c in zip(rows, cols, strict=True) if iou[r, c] >= iou_thresh
            }
            for k in dets:
                seg = tracks[k]["segmentations"][t]
                if k in matched:
                    linked[matched[k]][t] = (seg, float(tracks[k]["score"]))
                    votes[k][matched[k]] += 1
                else:
                    rest[k][t] = seg
        # a track's unmatched masks stay with the GT track it was mostly linked to (where that
        # one has no mask yet): the tracker's grouping is kept wherever the GT cannot decide,
        # so the oracle never turns part of a track into a false positive of its own
        for k, tr in enumerate(tracks):
            if not votes[k]:
                continue
            j = votes[k].most_common(1)[0][0]
            for t, seg in enumerate(rest[k]):
                if seg is not None and t not in linked[j]:
                    linked[j][t] = (seg, float(tr["score"]))
                    rest[k][t] = None
        for j, frames in sorted(linked.items()):
            segs = [frames[t][0] if t in frames else None for t in range(n)]
            score = float(np.mean([s for _, s in frames.values()]))
            cat = video.annotations[j].category_id
            out.append({"video_id": vid, "category_id": cat, "score": score, "segmentations": segs})
        for tr, segs in zip(tracks, rest, strict=True):
            if any(s is not None for s in segs):
                out.append({**tr, "segmentations": segs})
    return out


def resample_videos(
    gt: YTVISDataset,
    draw: Sequence[int],
    results: Sequence[Results] = (),
    frames: Frames | None = None,
) -> tuple[YTVISDataset, list[list[dict[str, Any]]], dict[int, list[int]] | None]:
    """The ground truth of the videos ``draw`` (video ids, repeats allowed): the i-th drawn
    video gets id ``i + 1``; each results list in ``results`` and the frame subset ``frames``
    (video id -> frame indices) are mapped to the new ids (a result of a video drawn twice
    appears twice). Results of videos not drawn are dropped."""
    videos = {v.id: v for v in gt.videos}
    new_ids: dict[int, list[int]] = defaultdict(list)
    drawn = []
    for i, v in enumerate(draw):
        if int(v) not in videos:
            raise ValueError(f"resample_videos: video id {v} is not in the GT")
        src = videos[int(v)]
        anns = [replace(a, video_id=i + 1) for a in src.annotations]
        drawn.append(replace(src, id=i + 1, annotations=anns))
        new_ids[int(v)].append(i + 1)
    mapped = []
    for res in results:
        mapped.append(
            [
                {**r, "video_id": j}
                for r in map(_json, res)
                for j in new_ids.get(int(r["video_id"]), ())
            ]
        )
    sub = None
    if frames is not None:
        sub = {j: list(frames.get(v, ())) for v, js in new_ids.items() for j in js}
    return YTVISDataset(videos=drawn, categories=dict(gt.categories)), mapped, sub


Metric = Callable[[YTVISDataset, list[dict[str, Any]], dict[int, list[int]] | None], float]


def video_bootstrap_draws(
    gt: YTVISDataset,
    runs: Mapping[str, Sequence[Results]],
    metric: Metric,
    *,
    frames: Frames | None = None,
    resamples: int = 200,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """``metric`` of every results list of ``runs`` (name -> one list per training seed) on the
    full GT (row 0) and on ``resamples`` sets of the GT videos drawn with replacement (rows
    1..), the same draws for every run (deterministic for ``seed``): name -> (1 + resamples,
    seeds) array. Differences of two names' arrays, averaged over seeds, are paired bootstrap
    statistics (:func:`interval_of`); each run is scored once per draw."""
    ids = [v.id for v in gt.videos]
    rng = np.random.default_rng(seed)
    draws = [ids] + [
        rng.choice(ids, size=len(ids), replace=True).tolist() for _ in range(resamples)
    ]
    names = list(runs)
    flat = [r for n in names for r in runs[n]]
    out = {n: np.zeros((len(draws), len(runs[n]))) for n in names}
    for d, draw in enumerate(draws):
        sub, res, fr = resample_videos(gt, draw, flat, frames)
        k = 0
        for n in names:
            for s in range(len(runs[n])):
                out[n][d, s] = metric(sub, res[k], fr)
                k += 1
    return out


def interval_of(a: np.ndarray, b: np.ndarray, *, level: float = 0.95, n: int = 0) -> PairedInterval:
    """Paired interval of mean over seeds of a - b from two :func:`video_bootstrap_draws`
    arrays (row 0: the full set, the point estimate; rows 1..: the resamples)."""
    if a.shape != b.shape or a.ndim != 2 or a.shape[0] < 2:
        raise ValueError(f"interval_of: shapes {a.shape} vs {b.shape}")
    stats = (a - b).mean(axis=1)
    rest = stats[1:][~np.isnan(stats[1:])]
    tail = (1.0 - level) / 2.0 * 100.0
    low, high = np.percentile(rest, [tail, 100.0 - tail]) if rest.size else (np.nan, np.nan)
    return PairedInterval(float(stats[0]), float(low), float(high), n)


def paired_video_bootstrap(
    gt: YTVISDataset,
    a: Sequence[Results],
    b: Sequence[Results],
    metric: Metric,
    *,
    frames: Frames | None = None,
    resamples: int = 200,
    level: float = 0.95,
    seed: int = 0,
) -> PairedInterval:
    """Interval of mean over seeds of ``metric(a[s]) - metric(b[s])`` (``a``, ``b``: one
    results list per training seed, paired by index), resampling the GT videos with
    replacement (``resamples`` times, deterministic for ``seed``). ``metric(gt, results,
    frames)`` scores one results list on a (resampled) GT; ``frames`` is the frame subset
    mapped to the resampled ids (None when none was given). ``n`` is the number of videos."""
    if len(a) != len(b) or not a:
        raise ValueError(f"paired_video_bootstrap: {len(a)} vs {len(b)} seeds")
    draws = video_bootstrap_draws(
        gt, {"a": a, "b": b}, metric, frames=frames, resamples=resamples, seed=seed
    )
    return interval_of(draws["a"], draws["b"], level=level, n=len(gt.videos))
