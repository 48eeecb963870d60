"""``instseg track``: video instance segmentation + tracking (PCAN), or semi-supervised
propagation of first-frame masks.

Tracking (a trained PCAN; default: the shipped ``weights/pcan_default.pt``)::

    instseg track --weights runs/pcan/model.pt --source VIDEO_OR_FRAME_DIR --out DIR

writes ``DIR/results.json`` (YouTube-VIS results, video id ``--video-id``), ``DIR/tracks.txt``
(KITTI-MOTS txt: frame from 0, ``id = category_id * 1000 + track``, masks made
non-overlapping: a more confident instance wins a pixel), ``DIR/masks/<frame>.png`` (indexed
PNG, value = track id + 1, 0 = background; ids above 253 wrap around) and ``DIR/vis.mp4``
(overlay coloured by track id). No annotations are needed.

Semi-supervised (no video training and no weights: ImageNet EfficientNet-Lite0 features)::

    instseg track --source FRAME_DIR --init-masks MASK_DIR --out DIR

``MASK_DIR`` holds the first frame's objects as an indexed PNG (DAVIS style, 0 = background,
k = object k; 0/255 binary PNGs are object 1), named like the first frame (else the first PNG
in sorted order; a single PNG file also works). The objects are propagated with instance
prototypes (:mod:`instseg.inference.propagate`); ``DIR/masks/<frame>.png`` gets one indexed
PNG per input frame (and ``DIR/vis.mp4`` the overlay). With ``--weights W`` (a trained PCAN or
image model) the features come from W's fine-tuned backbone instead of the ImageNet one.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from instseg.engine.checkpoint import CheckpointError
from instseg.utils.precision import AMP_CHOICES

log = logging.getLogger(__name__)

DEFAULT_WEIGHTS = Path(__file__).resolve().parents[1] / "weights" / "pcan_default.pt"
TRAIN_HINT = (
    "train it with `python scripts/train_pcan.py --install` (a long CPU job, see that script's "
    "docstring) or pass --weights runs/pcan/model.pt from your own training; semi-supervised "
    "propagation (--init-masks DIR) needs no weights"
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--weights", default=None, help="PCAN model.pt (default: the shipped model)")
    p.add_argument("--source", required=True, help="video file or folder of frames")
    p.add_argument("--out", default="outputs/track", help="output folder")
    p.add_argument("--init-masks", default=None, help="first-frame object masks (indexed PNG)")
    p.add_argument("--video-id", type=int, default=1, help="video id in results.json")
    p.add_argument("--score-thresh", type=float, default=0.0, help="drop tracked detections below")
    p.add_argument("--min-size", type=int, default=None, help="test short side (default: meta)")
    p.add_argument("--max-size", type=int, default=None, help="test long side cap (default: meta)")
    p.add_argument("--fps", type=float, default=None, help="MP4 frame rate (default: source's)")
    p.add_argument("--no-video", action="store_true", help="do not render vis.mp4")
    p.add_argument("--device", default="auto")
    p.add_argument(
        "--amp",
        default="auto",
        choices=AMP_CHOICES,
        help="autocast precision; auto: bf16 on CPUs with native bf16 and on recent GPUs, "
        "else fp32 (none)",
    )
    g = p.add_argument_group("semi-supervised propagation (--init-masks)")
    g.add_argument("--max-side", type=int, default=854, help="longer side the features see")
    g.add_argument(
        "--update",
        default="off",
        choices=["off", "initial", "momentum"],
        help="Eq. 5.8 running prototypes: last frame's (off), first frame's only, or momentum",
    )
    g.add_argument("--momentum", type=float, default=0.2, help="Eq. 5.8 lambda (--update momentum)")
    g.add_argument("--window", type=float, default=1.0, help="spatial window (object radii)")


def run(args: argparse.Namespace) -> int:
    from instseg.utils.sources import is_video, iter_source, video_fps

    try:
        source = iter_source(args.source)
        first = next(source, None)
    except (FileNotFoundError, OSError) as e:
        print(f"instseg track: {e}", file=sys.stderr)
        return 2
    if first is None:
        print(f"instseg track: {args.source}: no frames", file=sys.stderr)
        return 2
    frames = _chain(first, source)
    fps = args.fps or (video_fps(args.source) if is_video(args.source) else 24.0)
    out = Path(args.out)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    try:
        if args.init_masks:
            n = _run_semisup(args, frames, out, fps)
        else:
            n = _run_tracking(args, frames, out, fps)
    except (FileNotFoundError, ValueError, CheckpointError) as e:
        print(f"instseg track: {e}", file=sys.stderr)
        return 2
    print(f"instseg track: {n} frames -> {out}")
    return 0


def default_weights() -> Path:
    if not DEFAULT_WEIGHTS.is_file():
        raise SystemExit(
            f"instseg track: no --weights given and the shipped default PCAN model "
            f"({DEFAULT_WEIGHTS}) is not trained yet; {TRAIN_HINT}"
        )
    return DEFAULT_WEIGHTS


# ---------------------------------------------------------------- tracking


def _run_tracking(args: argparse.Namespace, frames: Iterator, out: Path, fps: float) -> int:
    from instseg.data.davis import write_davis_label
    from instseg.data.mots import MOTSObject, write_mots_txt
    from instseg.data.ytvis import save_ytvis_results
    from instseg.inference.video_predictor import VideoPredictor
    from instseg.inference.visualize import draw_instances
    from instseg.structures.masks import mask_to_rle

    weights = args.weights or default_weights()
    predictor = VideoPredictor.from_weights(
        weights, device=args.device, amp=args.amp, score_thresh=args.score_thresh,
        min_size=args.min_size, max_size=args.max_size,
    )  # fmt: skip
    cat_ids = predictor.category_ids or list(range(1, predictor.model.segmenter.num_classes + 1))
    tracks: dict[int, dict[int, tuple]] = defaultdict(dict)  # track -> frame -> (rle, s, label)
    mots: list[MOTSObject] = []
    n = 0

    def rendered() -> Iterator[np.ndarray]:
        nonlocal n
        for t, (name, frame, _) in enumerate(frames):
            inst = predictor(frame)
            index = _paint(inst)  # (H, W) int: 1 + index of the instance owning the pixel
            ids = inst.track_ids.tolist() if inst.track_ids is not None else []
            lut = np.array([0] + [i % 254 + 1 for i in ids], dtype=np.uint8)
            write_davis_label(out / "masks" / f"{name}.png", lut[index])
            for i, tid in enumerate(ids):
                m = index == i + 1
                if not m.any():
                    continue
                rle, cat = mask_to_rle(m), cat_ids[int(inst.labels[i])]
                tracks[tid][t] = (rle, float(inst.scores[i]), int(inst.labels[i]))
                mots.append(MOTSObject(t, cat * 1000 + (tid + 1) % 1000, cat, rle))
            n = t + 1
            yield draw_instances(frame, inst, class_names=predictor.class_names, color_by="track",
                                 score_thresh=0.0)  # fmt: skip

    _consume(rendered(), out / "vis.mp4", fps, render=not args.no_video)
    save_ytvis_results(_video_results(tracks, n, args.video_id, cat_ids), out / "results.json")
    write_mots_txt(out / "tracks.txt", mots)
    return n


def _paint(inst: object) -> np.ndarray:
    """(H, W) int32: 1 + index of the instance owning each pixel (higher score on top), 0 =
    background."""
    h, w = inst.image_size  # type: ignore[attr-defined]
    index = np.zeros((h, w), np.int32)
    if inst.masks is None or len(inst) == 0:  # type: ignore[attr-defined]
        return index
    scores = inst.scores if inst.scores is not None else torch.ones(len(inst))  # type: ignore
    for i in scores.argsort().tolist():
        index[inst.masks[i].numpy()] = i + 1  # type: ignore[attr-defined]
    return index


def _video_results(
    tracks: dict[int, dict[int, tuple]], length: int, video_id: int, cat_ids: list[int]
) -> list[dict]:
    """One YouTube-VIS result per track: mean score, most frequent label (ties: larger summed
    score), one RLE or null per frame."""
    from instseg.data.ytvis import VideoResult

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


# ---------------------------------------------------------------- semi-supervised


def _run_semisup(args: argparse.Namespace, frames: Iterator, out: Path, fps: float) -> int:
    from instseg.data.davis import write_davis_label
    from instseg.inference.propagate import (
        BackboneFeatures,
        PrototypePropagator,
        propagate_features,
    )

    name0, frame0, _ = next(frames)
    first = _first_labels(Path(args.init_masks), name0, frame0.shape[:2])
    device = "cuda" if args.device == "auto" and torch.cuda.is_available() else args.device
    features = BackboneFeatures(
        max_side=args.max_side,
        device="cpu" if device == "auto" else device,
        weights=args.weights,  # None: the ImageNet backbone
    )
    if features.source == "backbone":
        log.warning(
            "%s: semi-supervised propagation on this model's fine-tuned backbone; the "
            "ImageNet backbone (no --weights) or a propagation embedding "
            "(weights/propagation_default.pt) propagate better (see its model card)",
            args.weights,
        )
    prop = PrototypePropagator(update=args.update, momentum=args.momentum, window=args.window)
    pending: list[tuple[str, np.ndarray]] = []

    def feats() -> Iterator[torch.Tensor]:
        for name, frame, _ in _chain((name0, frame0, None), frames):
            if frame.shape[:2] != frame0.shape[:2]:
                raise ValueError(f"{args.source}: frame '{name}' is {frame.shape[:2]}, "
                                 f"the first is {frame0.shape[:2]}")  # fmt: skip
            pending.append((name, frame))
            yield features(frame)

    n = 0

    def rendered() -> Iterator[np.ndarray]:
        nonlocal n
        stride = features.stride(first.shape)
        for labels in propagate_features(feats(), first, propagator=prop, stride=stride):
            name, frame = pending.pop(0)
            write_davis_label(out / "masks" / f"{name}.png", labels)
            n += 1
            yield _overlay(frame, labels)

    _consume(rendered(), out / "vis.mp4", fps, render=not args.no_video)
    return n


def _first_labels(path: Path, name: str, size: tuple[int, int]) -> np.ndarray:
    import cv2

    from instseg.data.davis import read_davis_label

    if path.is_dir():
        cand = path / f"{name}.png"
        pngs = sorted(path.glob("*.png"))
        if not cand.is_file() and not pngs:
            raise FileNotFoundError(f"{path}: no .png masks (expected {name}.png)")
        path = cand if cand.is_file() else pngs[0]
    labels = read_davis_label(path)
    if labels.shape != tuple(size):
        log.warning("%s: mask %s resized (nearest) to the frame size %s", path, labels.shape, size)
        labels = cv2.resize(labels, (size[1], size[0]), interpolation=cv2.INTER_NEAREST)
    if not (labels[labels != 255] > 0).any():
        raise ValueError(f"{path}: the first-frame mask has no object (all background)")
    return labels


def _overlay(frame: np.ndarray, labels: np.ndarray) -> np.ndarray:
    from instseg.inference.visualize import draw_instances
    from instseg.structures import Instances
    from instseg.structures.masks import masks_to_boxes

    ids = [int(v) for v in np.unique(labels) if v not in (0, 255)]
    masks = torch.from_numpy(labels[None] == np.array(ids).reshape(-1, 1, 1)) if ids else None
    if masks is None:
        return frame
    inst = Instances(
        image_size=labels.shape, boxes=masks_to_boxes(masks).float(),
        labels=torch.zeros(len(ids), dtype=torch.long), masks=masks,
        track_ids=torch.as_tensor(ids),
    )  # fmt: skip
    return draw_instances(frame, inst, class_names=["object"], color_by="track")


# ---------------------------------------------------------------- helpers


def _chain(first: tuple, rest: Iterator) -> Iterator:
    yield first
    yield from rest


def _consume(frames: Iterator[np.ndarray], path: Path, fps: float, *, render: bool) -> None:
    """Drain ``frames`` (the side effects write the outputs), encoding them to ``path`` when
    ``render``."""
    if not render:
        for _ in frames:
            pass
        return
    from instseg.utils.video_writer import write_video

    write_video(path, frames, fps=fps)
