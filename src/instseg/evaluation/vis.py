"""YouTube-VIS video instance segmentation AP / AR, as the official YouTube-VIS API
(``youtubevos/cocoapi``, ``ytvoseval.py``) computes them.

- IoU of a predicted track and a GT track is spatio-temporal: the sum over frames of the
  intersections over the sum over frames of the unions; a frame where one of the two is
  ``null`` adds that one's area to the union; frames where both are ``null`` are ignored;
  IoU is 0 when the union is 0.
- Matching and accumulation are COCO's: per (video, category), detections sorted by score
  (stable), greedy matching at IoU thresholds 0.50:0.05:0.95, crowd GT (``iscrowd``) and GT
  outside the area range are ignored, 101-point interpolated precision, max detections
  1/10/100 per video.
- Areas: a track's area is the mean of its per-frame areas where present (non-null and
  non-zero); ranges are YouTube-VIS's: small < 128^2 <= medium < 256^2 <= large.
- Unlike COCO, a crowd GT's IoU is the plain IoU (the official tool does not use IoA there).

Metric keys (percent): ``AP AP50 AP75 APs APm APl AR1 AR10 AR100 ARs ARm ARl`` (the official
``summarize()`` order); NaN where the official tool reports -1 (no GT in that setting).
With a single-frame video the IoU is the mask IoU, so the numbers equal pycocotools' segm AP
(given the same area ranges and no crowd GT) — the tests check this to 1e-6.

Per-frame mask AP on a subset of frames (:func:`evaluate_vis_frames`, e.g. the corrupted
frames a synthetic video JSON lists in ``videos[].corrupted_frames``, see
:func:`read_frame_subset`): every listed (video, frame) becomes a one-frame video whose GT are
the tracks present in that frame and whose detections are the predicted tracks' masks in that
frame, with the track's score; so the numbers are COCO mask AP over those frames.
"""

from __future__ import annotations

import math
import warnings
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pycocotools.mask as mask_util
import torch

from instseg.data.ytvis import (
    VideoResult,
    YTVISDataset,
    load_ytvis_dataset,
    normalize_segmentation,
    save_ytvis_results,
)
from instseg.evaluation.coco import rescale_instances
from instseg.evaluation.evaluator import DatasetEvaluator, is_main_process
from instseg.structures import Instances, mask_to_rle
from instseg.structures.batch import Batch
from instseg.utils.io import read_json

__all__ = [
    "METRIC_KEYS",
    "YTVIS_AREA_RANGES",
    "COCO_AREA_RANGES",
    "YTVISEvaluator",
    "evaluate_vis",
    "evaluate_vis_frames",
    "evaluate_ytvis",
    "read_frame_subset",
    "video_iou",
]

METRIC_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl",
               "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")  # fmt: skip
YTVIS_AREA_RANGES = ((0.0, 1e10), (0.0, 128.0**2), (128.0**2, 256.0**2), (256.0**2, 1e10))
COCO_AREA_RANGES = ((0.0, 1e10), (0.0, 32.0**2), (32.0**2, 96.0**2), (96.0**2, 1e10))
IOU_THRS = np.linspace(0.5, 0.95, 10)
REC_THRS = np.linspace(0.0, 1.0, 101)
MAX_DETS = (1, 10, 100)

RLE = dict[str, Any]


@dataclass
class _Track:
    id: int
    score: float
    segs: list[dict | None]  # pycocotools RLEs (bytes counts) or None
    areas: list[float]  # per-frame area (0 where absent)
    avg_area: float
    crowd: bool = False


# ----------------------------------------------------------------------------- IoU
def video_iou(dt: Sequence[RLE | None], gt: Sequence[RLE | None]) -> float:
    """Spatio-temporal IoU of two tracks (lists of per-frame RLE or None, same length)."""
    d = [_coco_rle(s) for s in dt]
    g = [_coco_rle(s) for s in gt]
    return float(_iou_matrix([_track(0, 0.0, d)], [_track(0, 0.0, g)])[0, 0])


def _iou_matrix(dts: list[_Track], gts: list[_Track]) -> np.ndarray:
    ious = np.zeros((len(dts), len(gts)))
    for i, d in enumerate(dts):
        for j, g in enumerate(gts):
            inter = 0.0
            for a, b in zip(d.segs, g.segs, strict=True):
                if a is not None and b is not None:
                    inter += float(mask_util.area(mask_util.merge([a, b], intersect=True)))
            union = sum(d.areas) + sum(g.areas) - inter
            ious[i, j] = inter / union if union > 0 else 0.0
    return ious


# ----------------------------------------------------------------------------- matching
def _match(dts: list[_Track], gts: list[_Track], ious: np.ndarray, a_rng: tuple[float, float]):
    """COCO ``evaluateImg`` for one (video, category, area range) with all (<=100) dets."""
    g_ignore = np.array([g.crowd or not a_rng[0] <= g.avg_area <= a_rng[1] for g in gts], bool)
    g_order = np.argsort(g_ignore, kind="mergesort")
    g_ignore = g_ignore[g_order]
    crowd = np.array([gts[k].crowd for k in g_order], bool)
    ious = ious[:, g_order] if ious.size else ious
    n_t, n_d, n_g = len(IOU_THRS), len(dts), len(gts)
    gt_matched = np.zeros((n_t, n_g), bool)
    dt_matched = np.zeros((n_t, n_d), bool)
    dt_ignore = np.zeros((n_t, n_d), bool)
    if n_d and n_g:
        for ti, thr in enumerate(IOU_THRS):
            for di in range(n_d):
                best, m = min(thr, 1 - 1e-10), -1
                for gi in range(n_g):
                    if gt_matched[ti, gi] and not crowd[gi]:
                        continue
                    if m > -1 and not g_ignore[m] and g_ignore[gi]:
                        break
                    if ious[di, gi] < best:
                        continue
                    best, m = ious[di, gi], gi
                if m == -1:
                    continue
                dt_ignore[ti, di] = g_ignore[m]
                dt_matched[ti, di] = True
                gt_matched[ti, m] = True
    out_of_range = np.array([not a_rng[0] <= d.avg_area <= a_rng[1] for d in dts], bool)
    dt_ignore |= ~dt_matched & out_of_range[None, :]
    return {
        "scores": np.array([d.score for d in dts], dtype=np.float64),
        "dt_matched": dt_matched,
        "dt_ignore": dt_ignore,
        "gt_ignore": g_ignore,
    }


def _accumulate(evals: list[dict], max_det: int) -> tuple[np.ndarray, np.ndarray] | None:
    """Precision (T, R) and recall (T,) over the videos of one category / area range, or None
    when there is no non-ignored GT."""
    if not evals:
        return None
    scores = np.concatenate([e["scores"][:max_det] for e in evals])
    order = np.argsort(-scores, kind="mergesort")
    dtm = np.concatenate([e["dt_matched"][:, :max_det] for e in evals], axis=1)[:, order]
    dti = np.concatenate([e["dt_ignore"][:, :max_det] for e in evals], axis=1)[:, order]
    n_pos = int(np.count_nonzero(~np.concatenate([e["gt_ignore"] for e in evals])))
    if n_pos == 0:
        return None
    tps = np.cumsum(dtm & ~dti, axis=1, dtype=np.float64)
    fps = np.cumsum(~dtm & ~dti, axis=1, dtype=np.float64)
    precision = np.zeros((len(IOU_THRS), len(REC_THRS)))
    recall = np.zeros(len(IOU_THRS))
    for t in range(len(IOU_THRS)):
        tp, fp = tps[t], fps[t]
        rc = tp / n_pos
        pr = tp / (fp + tp + np.spacing(1))
        recall[t] = rc[-1] if len(tp) else 0.0
        pr = np.maximum.accumulate(pr[::-1])[::-1] if len(pr) else pr
        idx = np.searchsorted(rc, REC_THRS, side="left")
        valid = idx < len(pr)
        precision[t, valid] = pr[idx[valid]]
    return precision, recall


# ----------------------------------------------------------------------------- evaluation
def evaluate_vis(
    gt: YTVISDataset,
    results: Sequence[Mapping[str, Any] | VideoResult],
    *,
    video_ids: Sequence[int] | None = None,
    area_ranges: Sequence[tuple[float, float]] = YTVIS_AREA_RANGES,
    source: str = "results",
) -> dict[str, Any]:
    """Metrics (percent) of ``results`` against ``gt``; only ``video_ids`` (default: all GT
    videos) are scored. Also returns ``per_category``: category name -> AP."""
    if len(area_ranges) != 4:
        raise ValueError("area_ranges must be 4 (lo, hi) pairs: all, small, medium, large")
    videos = {v.id: v for v in gt.videos}
    vids = sorted(videos) if video_ids is None else sorted(set(int(v) for v in video_ids))
    cat_ids = sorted(gt.categories)
    gts: dict[tuple[int, int], list[_Track]] = defaultdict(list)
    for v in vids:
        for a in videos[v].annotations:
            segs = [_coco_rle(s) for s in a.segmentations]
            tr = _track(a.id, 0.0, segs, areas=a.areas)
            tr.crowd = bool(a.iscrowd)
            gts[v, a.category_id].append(tr)
    dts = _parse_results(results, videos, set(cat_ids), source)
    n_a = len(area_ranges)
    prec = -np.ones((len(IOU_THRS), len(REC_THRS), len(cat_ids), n_a, len(MAX_DETS)))
    rec = -np.ones((len(IOU_THRS), len(cat_ids), n_a, len(MAX_DETS)))
    for k, c in enumerate(cat_ids):
        per_area: list[list[dict]] = [[] for _ in range(n_a)]
        for v in vids:
            g, d = gts.get((v, c), []), dts.get((v, c), [])
            if not g and not d:
                continue
            d = sorted(d, key=lambda x: -x.score)[: MAX_DETS[-1]]  # stable, like mergesort
            ious = _iou_matrix(d, g) if g and d else np.zeros((0, 0))
            for a, rng in enumerate(area_ranges):
                per_area[a].append(_match(d, g, ious, rng))
        for a in range(n_a):
            for m, max_det in enumerate(MAX_DETS):
                acc = _accumulate(per_area[a], max_det)
                if acc is not None:
                    prec[:, :, k, a, m], rec[:, k, a, m] = acc
    out = _summarize(prec, rec)
    out["per_category"] = {
        gt.categories[c]: _mean(prec[:, :, k, 0, -1]) * 100 for k, c in enumerate(cat_ids)
    }
    return out


def evaluate_vis_frames(
    gt: YTVISDataset,
    results: Sequence[Mapping[str, Any] | VideoResult],
    frames: Mapping[int, Sequence[int]] | None = None,
    *,
    video_ids: Sequence[int] | None = None,
    area_ranges: Sequence[tuple[float, float]] = YTVIS_AREA_RANGES,
    source: str = "results",
) -> dict[str, Any]:
    """Per-frame mask AP (percent, the :func:`evaluate_vis` keys) over the frames
    ``frames[video_id]`` (default: every frame) of ``video_ids`` (default: the videos in
    ``frames``, else all); adds ``num_frames``, the frames scored."""
    videos = {v.id: v for v in gt.videos}
    if video_ids is None:
        video_ids = sorted(frames) if frames is not None else sorted(videos)
    pairs = []
    for v in sorted(set(int(i) for i in video_ids)):
        if v not in videos:
            raise ValueError(f"video id {v} is not in the ground truth")
        ts = range(videos[v].length) if frames is None else frames.get(v, ())
        for t in sorted(set(int(t) for t in ts)):
            if not 0 <= t < videos[v].length:
                raise ValueError(f"frame {t} is outside video {v} ({videos[v].length} frames)")
            pairs.append((v, t))
    new_id = {pair: i + 1 for i, pair in enumerate(pairs)}
    one_frame = []
    for (v, t), i in new_id.items():
        src = videos[v]
        anns = [
            replace(a, video_id=i, segmentations=[a.segmentations[t]],
                    bboxes=[a.bboxes[t] if a.bboxes else None],
                    areas=[a.areas[t] if a.areas else None])
            for a in src.annotations
            if a.segmentations[t] is not None
        ]  # fmt: skip
        one_frame.append(
            replace(src, id=i, file_names=[src.file_names[t]],
                    frame_paths=[src.frame_paths[t]], annotations=anns)
        )  # fmt: skip
    dts = []
    for r in results:
        r = r.to_json() if isinstance(r, VideoResult) else r
        v = int(r["video_id"])
        for t in frames.get(v, ()) if frames is not None else range(len(r["segmentations"])):
            if (v, int(t)) in new_id and r["segmentations"][int(t)] is not None:
                dts.append({**r, "video_id": new_id[v, int(t)],
                            "segmentations": [r["segmentations"][int(t)]]})  # fmt: skip
    sub = YTVISDataset(videos=one_frame, categories=gt.categories)
    out = evaluate_vis(sub, dts, area_ranges=area_ranges, source=source) if pairs else {}
    out["num_frames"] = len(pairs)
    return out


def read_frame_subset(gt_json: str | Path, key: str = "corrupted_frames") -> dict[int, list[int]]:
    """``{video id: frame indices}`` from the ``videos[].<key>`` lists of a YouTube-VIS JSON
    (the synthetic generator's ``corrupted_frames`` / ``patched_frames``); videos without the
    key list no frame. Raises ``ValueError`` when no video has it."""
    data = read_json(gt_json)
    videos = data.get("videos") if isinstance(data, dict) else None
    if not isinstance(videos, list):
        raise ValueError(f"{gt_json}: no 'videos' list")
    if not any(isinstance(v, dict) and key in v for v in videos):
        raise ValueError(f"{gt_json}: no video lists '{key}' (made without effects?)")
    return {int(v["id"]): [int(t) for t in v.get(key) or []] for v in videos}


def evaluate_ytvis(
    gt_json: str | Path,
    results_json: str | Path,
    *,
    area_ranges: Sequence[tuple[float, float]] = YTVIS_AREA_RANGES,
) -> dict[str, Any]:
    """YouTube-VIS metrics (percent) of a results JSON against a GT JSON, all GT videos."""
    gt = load_ytvis_dataset(gt_json, Path("."))
    results = read_json(results_json)
    if not isinstance(results, list):
        raise ValueError(f"{results_json}: results must be a JSON list of tracks")
    return evaluate_vis(gt, results, area_ranges=area_ranges, source=str(results_json))


def _parse_results(results, videos, cat_ids, source) -> dict[tuple[int, int], list[_Track]]:
    dts: dict[tuple[int, int], list[_Track]] = defaultdict(list)
    for i, r in enumerate(results):
        r = r.to_json() if isinstance(r, VideoResult) else r
        where = f"{source}[{i}]"
        if not isinstance(r, Mapping):
            raise ValueError(f"{where}: expected an object, got {type(r).__name__}")
        missing = [k for k in ("video_id", "category_id", "score", "segmentations") if k not in r]
        if missing:
            raise ValueError(f"{where}: missing key(s) {missing}")
        vid = videos.get(int(r["video_id"]))
        if vid is None:
            raise ValueError(f"{where}: video_id {r['video_id']} is not in the ground truth")
        if int(r["category_id"]) not in cat_ids:
            warnings.warn(
                f"{where}: category_id {r['category_id']} not in GT; ignored", stacklevel=3
            )
            continue
        segs = r["segmentations"]
        if not isinstance(segs, list) or len(segs) != vid.length:
            raise ValueError(f"{where}: 'segmentations' must list {vid.length} frames")
        try:
            rles = [_coco_rle(normalize_segmentation(s, vid.height, vid.width)) for s in segs]
        except ValueError as e:
            raise ValueError(f"{where}: {e}") from e
        dts[vid.id, int(r["category_id"])].append(_track(i + 1, float(r["score"]), rles))
    return dts


def _summarize(prec: np.ndarray, rec: np.ndarray) -> dict[str, float]:
    m100 = len(MAX_DETS) - 1
    t50, t75 = 0, 5
    vals = [
        _mean(prec[:, :, :, 0, m100]),
        _mean(prec[t50, :, :, 0, m100]),
        _mean(prec[t75, :, :, 0, m100]),
        _mean(prec[:, :, :, 1, m100]),
        _mean(prec[:, :, :, 2, m100]),
        _mean(prec[:, :, :, 3, m100]),
        _mean(rec[:, :, 0, 0]),
        _mean(rec[:, :, 0, 1]),
        _mean(rec[:, :, 0, m100]),
        _mean(rec[:, :, 1, m100]),
        _mean(rec[:, :, 2, m100]),
        _mean(rec[:, :, 3, m100]),
    ]
    return {k: v * 100 for k, v in zip(METRIC_KEYS, vals, strict=True)}


def _mean(x: np.ndarray) -> float:
    x = x[x > -1]
    return float(np.mean(x)) if x.size else math.nan


def _coco_rle(rle: RLE | None) -> dict | None:
    if rle is None:
        return None
    c = rle["counts"]
    return {"size": list(rle["size"]), "counts": c.encode("ascii") if isinstance(c, str) else c}


def _track(id_: int, score: float, segs: list, areas: Sequence[Any] | None = None) -> _Track:
    per_frame = [0.0 if s is None else float(mask_util.area(s)) for s in segs]
    # union sums use mask areas; the area range uses the file's areas for GT (as the API does)
    listed = per_frame if areas is None else [a for a in areas]
    present = [float(a) for a in listed if a]
    avg = float(np.mean(present)) if present else 0.0
    return _Track(id=id_, score=score, segs=segs, areas=per_frame, avg_area=avg)


# ----------------------------------------------------------------------------- evaluator
class YTVISEvaluator(DatasetEvaluator):
    """YouTube-VIS AP of per-frame predictions with track ids.

    ``process(batch, outputs)``: each image of the batch is a frame; its video and frame
    index come from ``batch.file_names[i]`` matched (by its last path components) against
    the GT ``file_names``. ``outputs[i]`` needs ``masks``, ``scores``, ``labels`` (contiguous;
    ``category_ids[label]`` gives the GT category) and ``track_ids``. Predictions are rescaled
    from ``batch.image_sizes[i]`` to the video size when they differ.

    A track's score is the mean of its per-frame scores; its category the most frequent label
    (ties: larger summed score). ``add_video_results`` takes ready-made tracks instead. Only
    the videos seen are scored. ``evaluate()`` returns the metrics dict of
    :func:`evaluate_vis` (and writes ``out_dir/results.json`` when ``out_dir`` is given).

    ``frame_subsets``: name -> ``{video id: frame indices}`` (e.g. ``{"corrupted":
    read_frame_subset(gt_json)}``); ``evaluate()`` then adds ``frames``: per-frame mask AP
    (:func:`evaluate_vis_frames`) on each subset and on ``all`` frames of the seen videos.
    """

    def __init__(
        self,
        gt: str | Path | YTVISDataset,
        *,
        category_ids: Sequence[int],
        out_dir: str | Path | None = None,
        area_ranges: Sequence[tuple[float, float]] = YTVIS_AREA_RANGES,
        frame_subsets: Mapping[str, Mapping[int, Sequence[int]]] | None = None,
    ) -> None:
        self.frame_subsets = dict(frame_subsets or {})
        self.gt = gt if isinstance(gt, YTVISDataset) else load_ytvis_dataset(gt, Path("."))
        unknown = sorted(set(category_ids) - set(self.gt.categories))
        if unknown:
            raise ValueError(f"category_ids {unknown} are not GT categories")
        self.category_ids = list(category_ids)
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.area_ranges = area_ranges
        self._videos = {v.id: v for v in self.gt.videos}
        self._frame_of: dict[str, tuple[int, int]] = {}
        for v in self.gt.videos:
            for t, name in enumerate(v.file_names):
                self._frame_of[Path(name).as_posix()] = (v.id, t)
        self._depth = max((len(Path(k).parts) for k in self._frame_of), default=1)
        self.reset()

    def reset(self) -> None:
        # video id -> track id -> frame -> (rle, score, label)
        self._frames: dict[int, dict[int, dict[int, tuple]]] = defaultdict(
            lambda: defaultdict(dict)
        )
        self._ready: list[dict[str, Any]] = []
        self._seen: set[int] = set()

    def process(self, batch: Batch, outputs: list[Instances]) -> None:
        for i, inst in enumerate(outputs):
            size = tuple(batch.image_sizes[i]) if batch.image_sizes else None
            self.process_frame(batch.file_names[i] if batch.file_names else "", inst, size=size)

    def process_frame(
        self, file_name: str, inst: Instances, *, size: tuple[int, int] | None = None
    ) -> None:
        """One frame's tracked predictions; ``file_name`` locates the video and frame,
        ``size`` is the valid (h, w) of ``inst`` (default: ``inst.image_size``)."""
        vid, t = self._locate(file_name)
        video = self._videos[vid]
        if inst.masks is None or inst.scores is None or inst.track_ids is None:
            raise ValueError("YTVISEvaluator needs masks, scores and track_ids")
        inst = inst.to("cpu")
        size = tuple(size) if size is not None else inst.image_size
        inst = inst.replace(image_size=size, masks=inst.masks[:, : size[0], : size[1]])
        if size != (video.height, video.width):
            inst = rescale_instances(inst, (video.height, video.width))
        self._seen.add(vid)
        rows = zip(
            inst.masks,
            inst.scores.tolist(),
            inst.labels.tolist(),
            inst.track_ids.tolist(),
            strict=True,
        )
        for m, s, lab, tid in rows:
            self._frames[vid][int(tid)][t] = (mask_to_rle(m), float(s), int(lab))

    def add_video_results(self, tracks: Sequence[VideoResult | Mapping[str, Any]]) -> None:
        for tr in tracks:
            d = tr.to_json() if isinstance(tr, VideoResult) else dict(tr)
            self._ready.append(d)
            self._seen.add(int(d["video_id"]))

    def tracks(self) -> list[dict[str, Any]]:
        """All predicted tracks in results-file form."""
        lengths = {v.id: v.length for v in self.gt.videos}
        out = list(self._ready)
        for vid, per_track in self._frames.items():
            for frames in per_track.values():
                labels = Counter(lab for _, _, lab in frames.values())
                by_score = defaultdict(float)
                for _, s, lab in frames.values():
                    by_score[lab] += s
                label = max(labels, key=lambda k: (labels[k], by_score[k]))
                segs = [frames[t][0] if t in frames else None for t in range(lengths[vid])]
                score = float(np.mean([s for _, s, _ in frames.values()]))
                out.append(VideoResult(vid, self.category_ids[label], score, segs).to_json())
        return out

    def evaluate(self) -> dict[str, Any]:
        tracks, seen = self.tracks(), sorted(self._seen)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            parts: list[Any] = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(parts, (tracks, seen))
            tracks = [t for p in parts for t in p[0]]
            seen = sorted({v for p in parts for v in p[1]})
        if not is_main_process():
            return {}
        if not seen:
            warnings.warn("YTVISEvaluator: no video was processed", stacklevel=2)
            return {}
        if self.out_dir is not None:
            save_ytvis_results(tracks, self.out_dir / "results.json")
        out = evaluate_vis(self.gt, tracks, video_ids=seen, area_ranges=self.area_ranges)
        if self.frame_subsets:
            subsets = {"all": None, **self.frame_subsets}
            out["frames"] = {
                name: evaluate_vis_frames(
                    self.gt,
                    tracks,
                    None if fs is None else {v: fs.get(v, ()) for v in seen},
                    video_ids=seen,
                    area_ranges=self.area_ranges,
                )  # fmt: skip
                for name, fs in subsets.items()
            }
        return out

    def _locate(self, file_name: str) -> tuple[int, int]:
        parts = Path(file_name).parts
        for depth in range(min(self._depth, len(parts)), 0, -1):
            key = Path(*parts[-depth:]).as_posix()
            if key in self._frame_of:
                return self._frame_of[key]
        raise ValueError(f"frame '{file_name}' does not match any GT video file_names")
