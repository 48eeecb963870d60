"""YouTube-VIS JSON: ground truth reader/writer and the results-file writer.

Ground truth layout (one JSON)::

    videos[]:      {id, file_names: [str] (relative to the image root), width, height,
                    length, name?}
    annotations[]: {id, video_id, category_id, iscrowd?, segmentations: [RLE | polygons | null]
                    (one entry per frame), bboxes?: [[x, y, w, h] | null], areas?: [int | null]}
    categories[]:  {id, name}

Results layout (a JSON list)::

    [{video_id, category_id, score, segmentations: [RLE | null] (one per frame)}]

Masks are kept as COCO RLE (compressed, ``counts`` as str) and decoded only when asked
(:meth:`VideoAnnotation.mask`). Polygons and uncompressed RLE are converted to compressed RLE
at load time so downstream code sees one form.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pycocotools.mask as mask_util
import torch

from instseg.structures import Instances
from instseg.structures.masks import rle_to_mask
from instseg.utils.io import atomic_write_json, read_json, require_lists

__all__ = [
    "tracks_to_video_results",
    "Video",
    "VideoAnnotation",
    "VideoResult",
    "YTVISDataset",
    "class_agnostic",
    "load_ytvis",
    "load_ytvis_dataset",
    "save_ytvis",
    "save_ytvis_results",
    "normalize_segmentation",
]

RLE = dict[str, Any]


@dataclass
class VideoAnnotation:
    """One object track of a video: ``segmentations[t]`` is a compressed RLE or None (absent).

    ``bboxes[t]`` is ``[x, y, w, h]`` or None; ``areas[t]`` an int or None.
    """

    id: int
    video_id: int
    category_id: int
    segmentations: list[RLE | None]
    bboxes: list[list[float] | None] = field(default_factory=list)
    areas: list[float | None] = field(default_factory=list)
    iscrowd: int = 0

    def __len__(self) -> int:
        return len(self.segmentations)

    def present(self, t: int) -> bool:
        return self.segmentations[t] is not None

    def mask(self, t: int) -> np.ndarray | None:
        """Frame ``t`` decoded to (H, W) bool, or None where the object is absent."""
        rle = self.segmentations[t]
        return None if rle is None else rle_to_mask(rle)

    @property
    def avg_area(self) -> float:
        """Mean area over the frames where the object is present (0 when never present), as the
        YouTube-VIS API uses for its area ranges."""
        vals = [a for a in self.areas if a]
        return float(np.mean(vals)) if vals else 0.0


@dataclass
class Video:
    """A video: frame paths (absolute, under the image root) and its object tracks."""

    id: int
    name: str
    width: int
    height: int
    file_names: list[str]
    frame_paths: list[Path]
    annotations: list[VideoAnnotation] = field(default_factory=list)

    @property
    def length(self) -> int:
        return len(self.file_names)

    def __len__(self) -> int:
        return self.length

    def label_map(self, t: int, *, objects: int | None = None) -> np.ndarray:
        """DAVIS-style (H, W) uint8 label map of frame ``t``: 0 = background, k = the k-th
        annotation (of the first ``objects``; all when None) where it is present; a later
        annotation is painted over an earlier one where masks overlap."""
        lab = np.zeros((self.height, self.width), np.uint8)
        for k, a in enumerate(self.annotations[:objects], 1):
            m = a.mask(t)
            if m is not None:
                lab[m] = k
        return lab

    def instances(self, t: int, *, label_of: Mapping[int, int]) -> Instances:
        """Targets of frame ``t`` as :class:`Instances` (tracks present in that frame).

        ``label_of`` maps category id -> contiguous label. Fields: ``boxes`` (N, 4) xyxy,
        ``labels`` (N,), ``masks`` (N, H, W) bool, ``track_ids`` (N,) = annotation ids,
        ``extra["iscrowd"]`` (N,).
        """
        anns = [a for a in self.annotations if a.present(t)]
        h, w = self.height, self.width
        if not anns:
            inst = Instances.empty((h, w))
            inst.scores = None
            inst.track_ids = torch.zeros(0, dtype=torch.long)
            inst.extra["iscrowd"] = torch.zeros(0, dtype=torch.long)
            return inst
        masks = np.stack([a.mask(t) for a in anns])
        boxes = mask_util.toBbox([_bytes(a.segmentations[t]) for a in anns])
        boxes = torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4)
        boxes[:, 2:] += boxes[:, :2]
        return Instances(
            image_size=(h, w),
            boxes=boxes,
            labels=torch.as_tensor([label_of[a.category_id] for a in anns], dtype=torch.long),
            masks=torch.from_numpy(masks),
            track_ids=torch.as_tensor([a.id for a in anns], dtype=torch.long),
            extra={"iscrowd": torch.as_tensor([a.iscrowd for a in anns], dtype=torch.long)},
        )


@dataclass
class YTVISDataset:
    videos: list[Video]
    categories: dict[int, str]  # category id -> name, in file order


def class_agnostic(data: YTVISDataset, *, name: str = "object") -> YTVISDataset:
    """A copy of ``data`` with one category ``{1: name}`` that every track belongs to (for a
    class-agnostic video segmenter, e.g. the shipped default of ``instseg track``)."""
    videos = [
        replace(v, annotations=[replace(a, category_id=1) for a in v.annotations])
        for v in data.videos
    ]
    return YTVISDataset(videos=videos, categories={1: name})


@dataclass
class VideoResult:
    """One predicted track for the results file."""

    video_id: int
    category_id: int
    score: float
    segmentations: list[RLE | None]

    def to_json(self) -> dict[str, Any]:
        return {
            "video_id": int(self.video_id),
            "category_id": int(self.category_id),
            "score": float(self.score),
            "segmentations": [_json_rle(s) for s in self.segmentations],
        }


# ----------------------------------------------------------------------------- reading
def load_ytvis(json_path: str | Path, image_root: str | Path) -> list[Video]:
    """Videos of a YouTube-VIS style JSON (see the module docstring)."""
    return load_ytvis_dataset(json_path, image_root).videos


def load_ytvis_dataset(json_path: str | Path, image_root: str | Path) -> YTVISDataset:
    """Videos and categories; every malformed entry raises ``ValueError`` naming the file, the
    list, the entry index and the key."""
    json_path, image_root = Path(json_path), Path(image_root)
    data = read_json(json_path)
    src = str(json_path)
    require_lists(data, src, ("videos", "annotations", "categories"), fmt="YouTube-VIS format")
    categories = {}
    for i, c in enumerate(data["categories"]):
        _need(c, ("id", "name"), f"{src}: categories[{i}]")
        categories[int(c["id"])] = str(c["name"])
    videos: dict[int, Video] = {}
    for i, v in enumerate(data["videos"]):
        videos_entry = _parse_video(v, f"{src}: videos[{i}]", image_root)
        if videos_entry.id in videos:
            raise ValueError(f"{src}: videos[{i}]: duplicate video id {videos_entry.id}")
        videos[videos_entry.id] = videos_entry
    for i, a in enumerate(data["annotations"]):
        where = f"{src}: annotations[{i}]"
        _need(a, ("video_id", "category_id", "segmentations"), where)
        vid = videos.get(int(a["video_id"]))
        if vid is None:
            raise ValueError(f"{where}: unknown video_id {a['video_id']}")
        if int(a["category_id"]) not in categories:
            raise ValueError(f"{where}: unknown category_id {a['category_id']}")
        vid.annotations.append(_parse_annotation(a, where, vid, default_id=i + 1))
    return YTVISDataset(videos=list(videos.values()), categories=categories)


def _parse_video(v: Any, where: str, image_root: Path) -> Video:
    _need(v, ("id", "file_names", "width", "height"), where)
    names = v["file_names"]
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ValueError(f"{where}: 'file_names' must be a list of strings")
    if "length" in v and int(v["length"]) != len(names):
        raise ValueError(f"{where}: 'length' {v['length']} != len(file_names) {len(names)}")
    name = str(v.get("name") or (Path(names[0]).parent.name if names else v["id"]))
    return Video(
        id=int(v["id"]),
        name=name,
        width=int(v["width"]),
        height=int(v["height"]),
        file_names=list(names),
        frame_paths=[image_root / n for n in names],
    )


def _parse_annotation(a: dict, where: str, vid: Video, *, default_id: int) -> VideoAnnotation:
    segs = a["segmentations"]
    if not isinstance(segs, list) or len(segs) != vid.length:
        n = len(segs) if isinstance(segs, list) else type(segs).__name__
        raise ValueError(f"{where}: 'segmentations' must list {vid.length} frames, got {n}")
    rles = []
    for t, s in enumerate(segs):
        try:
            rles.append(normalize_segmentation(s, vid.height, vid.width))
        except (ValueError, TypeError) as e:
            raise ValueError(f"{where}: segmentations[{t}]: {e}") from e
    areas = a.get("areas")
    if areas is None:
        areas = [None if r is None else float(mask_util.area(_bytes(r))) for r in rles]
    bboxes = a.get("bboxes")
    if bboxes is None:
        bboxes = [None if r is None else mask_util.toBbox(_bytes(r)).tolist() for r in rles]
    for key, vals in (("areas", areas), ("bboxes", bboxes)):
        if not isinstance(vals, list) or len(vals) != vid.length:
            raise ValueError(f"{where}: '{key}' must list {vid.length} frames")
    return VideoAnnotation(
        id=int(a.get("id", default_id)),
        video_id=vid.id,
        category_id=int(a["category_id"]),
        segmentations=rles,
        bboxes=bboxes,
        areas=areas,
        iscrowd=int(a.get("iscrowd", 0) or 0),
    )


def normalize_segmentation(segm: Any, height: int, width: int) -> RLE | None:
    """One frame's segmentation (None, compressed/uncompressed RLE or polygon list) ->
    compressed RLE with str counts, or None. Raises ``ValueError`` on a size mismatch."""
    if segm is None:
        return None
    if isinstance(segm, list):
        if not segm:
            return None
        rles = mask_util.frPyObjects([list(map(float, p)) for p in segm], height, width)
        return _json_rle(mask_util.merge(rles))
    if isinstance(segm, dict):
        if "size" not in segm or "counts" not in segm:
            raise ValueError(f"RLE needs 'size' and 'counts', got keys {sorted(segm)}")
        h, w = int(segm["size"][0]), int(segm["size"][1])
        if (h, w) != (height, width):
            raise ValueError(f"RLE size {[h, w]} != video size {[height, width]}")
        if isinstance(segm["counts"], list):
            if sum(segm["counts"]) != h * w:
                raise ValueError(f"uncompressed RLE counts sum to {sum(segm['counts'])} != {h * w}")
            return _json_rle(mask_util.frPyObjects(segm, h, w))
        return _json_rle(segm)
    raise ValueError(f"unsupported segmentation type {type(segm).__name__}")


# ----------------------------------------------------------------------------- writing
def save_ytvis(videos: Sequence[Video], categories: Mapping[int, str], path: str | Path) -> Path:
    """Write ground truth in YouTube-VIS layout (atomic). ``file_names`` are written as stored."""
    out_videos, out_anns = [], []
    for v in videos:
        out_videos.append(
            {
                "id": v.id,
                "name": v.name,
                "width": v.width,
                "height": v.height,
                "length": v.length,
                "file_names": list(v.file_names),
            }
        )
        for a in v.annotations:
            out_anns.append({
                "id": a.id, "video_id": v.id, "category_id": a.category_id,
                "iscrowd": a.iscrowd, "width": v.width, "height": v.height,
                "segmentations": [_json_rle(s) for s in a.segmentations],
                "areas": [None if x is None else float(x) for x in a.areas],
                "bboxes": [None if b is None else [float(x) for x in b] for b in a.bboxes],
            })  # fmt: skip
    cats = [{"id": int(k), "name": str(n)} for k, n in categories.items()]
    obj = {"videos": out_videos, "annotations": out_anns, "categories": cats}
    return atomic_write_json(path, obj)


def save_ytvis_results(tracks: Iterable[VideoResult | Mapping[str, Any]], path: str | Path) -> Path:
    """Write predicted tracks as a YouTube-VIS results JSON list (atomic)."""
    out = []
    for i, t in enumerate(tracks):
        if isinstance(t, VideoResult):
            out.append(t.to_json())
            continue
        _need(t, ("video_id", "category_id", "score", "segmentations"), f"tracks[{i}]")
        out.append(
            VideoResult(
                int(t["video_id"]),
                int(t["category_id"]),
                float(t["score"]),
                list(t["segmentations"]),
            ).to_json()
        )
    return atomic_write_json(path, out)


# ----------------------------------------------------------------------------- helpers
def _need(obj: Any, keys: Sequence[str], where: str) -> None:
    if not isinstance(obj, Mapping):
        raise ValueError(f"{where}: expected an object, got {type(obj).__name__}")
    missing = [k for k in keys if k not in obj]
    if missing:
        raise ValueError(f"{where}: missing key(s) {missing}")


def _json_rle(rle: Any) -> RLE | None:
    if rle is None:
        return None
    counts = rle["counts"]
    if isinstance(counts, bytes):
        counts = counts.decode("ascii")
    elif isinstance(counts, list):
        h, w = rle["size"]
        return _json_rle(mask_util.frPyObjects(dict(rle), int(h), int(w)))
    return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": counts}


def _bytes(rle: RLE) -> dict[str, Any]:
    c = rle["counts"]
    return {"size": rle["size"], "counts": c.encode("ascii") if isinstance(c, str) else c}


def tracks_to_video_results(
    tracks: dict[int, dict[int, tuple]], length: int, video_id: int, cat_ids: list[int]
) -> list[dict]:
    """One YouTube-VIS result per track: mean score, most frequent label (ties: larger summed
    score), one RLE or null per frame.

    ``tracks``: track id -> {frame index: (RLE, score, contiguous label)}; ``length``: frames
    in the video; ``cat_ids[label]`` is the category id written."""

    out = []
    for frames in tracks.values():
        votes = Counter(lab for _, _, lab in frames.values())
        mass: dict[int, float] = defaultdict(float)
        for _, s, lab in frames.values():
            mass[lab] += s
        label = max(votes, key=lambda k: (votes[k], mass[k]))
        segs = [frames[t][0] if t in frames else None for t in range(length)]
        score = float(np.mean([s for _, s, _ in frames.values()]))
        out.append(VideoResult(video_id, cat_ids[label], score, segs).to_json())
    return out
