"""``instseg track``: video instance segmentation + tracking (PCAN).

Tracking (a trained PCAN; default: the shipped ``weights/pcan_default.pt``)::

    instseg track --weights runs/pcan/model.pt --source VIDEO_OR_FRAME_DIR --out DIR

writes ``DIR/results.json`` (YouTube-VIS results, video id ``--video-id``), ``DIR/tracks.txt``
(KITTI-MOTS txt: frame from 0, ``id = category_id * 1000 + track``, masks made
non-overlapping: a more confident instance wins a pixel), ``DIR/masks/<frame>.png`` (indexed
PNG, value = track id + 1, 0 = background; ids above 253 wrap around) and ``DIR/vis.mp4``
(overlay coloured by track id). No annotations are needed. ``--conf`` (default 0.25),
``--max-det`` and ``--classes`` choose the tracked detections written to all of them (the tracker
itself sees every detection; ``--conf 0`` keeps the low-scoring tail that video AP counts).
``--birth-score`` / ``--track-score`` / ``--motion-weight`` change the association settings
(default: the model's, QDTrack's birth 0.7 and gate 0.5; see
:class:`~instseg.models.video.tracker.Tracker`). Only detections scoring at least the lower of
the two go through the mask head up front, plus the few lower-scored ones whose masks the
tracker's duplicate rules read (``--mask-score`` sets the up-front threshold; 0 = every
detection; the outputs are the same). Unreadable frames are skipped with a warning
each (``--strict``: an error); their index stays empty in ``results.json`` (``null``
segmentations), so frame numbers stay those of the source.

Propagating given first-frame masks is another task with its own command,
``instseg propagate`` (:mod:`instseg.cli.propagate`); ``track --init-masks`` still runs it, with a
deprecation warning.
"""

from __future__ import annotations

import argparse
import logging
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from instseg.cli.options import (
    _unit_float,
    add_amp_argument,
    add_filter_arguments,
    add_strict_argument,
    class_choice,
    drain_to_video,
    run_on_frames,
)
from instseg.data.ytvis import tracks_to_video_results
from instseg.engine.weights import shipped_weights
from instseg.structures.ops import paint_instances
from instseg.utils.errors import MissingFileError

log = logging.getLogger(__name__)

DEFAULT_WEIGHTS = shipped_weights("video")
TRAIN_HINT = (
    "train it with `python scripts/train_pcan.py --install` (a long CPU job, see that script's "
    "docstring) or pass --weights runs/pcan/model.pt from your own training; semi-supervised "
    "propagation of first-frame masks (instseg propagate) needs no weights"
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--weights", default=None, help="PCAN model.pt (default: the shipped model)")
    p.add_argument("--source", required=True, help="video file or folder of frames")
    p.add_argument("--out", default="outputs/track", help="output folder")
    p.add_argument(
        "--init-masks", default=None, help="deprecated: `instseg propagate --init-masks DIR`"
    )
    p.add_argument("--video-id", type=int, default=1, help="video id in results.json")
    add_filter_arguments(p)
    add_strict_argument(p)
    p.add_argument("--min-size", type=int, default=None, help="test short side (default: meta)")
    p.add_argument("--max-size", type=int, default=None, help="test long side cap (default: meta)")
    p.add_argument("--fps", type=float, default=None, help="MP4 frame rate (default: source's)")
    p.add_argument("--no-video", action="store_true", help="do not render vis.mp4")
    p.add_argument("--device", default="auto")
    add_amp_argument(p)
    t = p.add_argument_group("tracker (default: the model's settings, QDTrack's 0.7 / 0.5)")
    t.add_argument(
        "--birth-score",
        type=_unit_float,
        default=None,
        help="score an unmatched detection needs to start a track",
    )
    t.add_argument(
        "--track-score",
        type=_unit_float,
        default=None,
        help="score a detection needs to continue a track (the gate)",
    )
    t.add_argument("--motion-weight", type=_unit_float, default=None,
                   help="weight of the box IoU with a track's predicted box in the "
                        "association similarity (0: appearance only)")  # fmt: skip
    t.add_argument(
        "--mask-score",
        type=_unit_float,
        default=None,
        help="detections scoring at least this go through the mask head up front "
        "(default: the lowest score the tracker can output, min of birth and "
        "gate score; 0: every detection); a speed setting, outputs unchanged",
    )
    g = p.add_argument_group("deprecated: use `instseg propagate` for first-frame masks")
    from instseg.cli.propagate import add_propagation_arguments

    add_propagation_arguments(g)


def run(args: argparse.Namespace) -> int:
    if args.init_masks:
        from instseg.cli.propagate import run_propagation

        log.warning("instseg track --init-masks is deprecated: use instseg propagate")
        return run_on_frames(args, "instseg track", run_propagation)
    return run_on_frames(args, "instseg track", _run_tracking)


def default_weights() -> Path:
    if not DEFAULT_WEIGHTS.is_file():
        raise MissingFileError(
            f"no --weights given and the shipped default PCAN model "
            f"({DEFAULT_WEIGHTS}) is not trained yet; {TRAIN_HINT}"
        )
    return DEFAULT_WEIGHTS


# ---------------------------------------------------------------- tracking


def tracker_overrides(args: argparse.Namespace) -> dict[str, float]:
    """The tracker fields set by --birth-score / --track-score / --motion-weight."""
    names = {"birth_score": "init_score_thresh", "track_score": "obj_score_thresh",
             "motion_weight": "motion_weight"}  # fmt: skip
    return {f: v for a, f in names.items() if (v := getattr(args, a, None)) is not None}


def _run_tracking(args: argparse.Namespace, frames: Iterator, out: Path, fps: float) -> int:
    from instseg.data.davis import write_davis_label
    from instseg.data.mots import MOTSObject, write_mots_txt
    from instseg.data.ytvis import save_ytvis_results
    from instseg.inference.video_predictor import VideoPredictor
    from instseg.inference.visualize import draw_instances
    from instseg.structures.masks import mask_to_rle

    weights = args.weights or default_weights()
    predictor = VideoPredictor.from_weights(
        weights, device=args.device, amp=args.amp, conf=args.conf, max_det=args.max_det,
        classes=class_choice(args), min_size=args.min_size, max_size=args.max_size,
        tracker=tracker_overrides(args) or None, mask_score=getattr(args, "mask_score", None),
    )  # fmt: skip
    cat_ids = predictor.category_ids or list(range(1, predictor.model.segmenter.num_classes + 1))
    tracks: dict[int, dict[int, tuple]] = defaultdict(dict)  # track -> frame -> (rle, s, label)
    mots: list[MOTSObject] = []
    n = 0

    def rendered() -> Iterator[np.ndarray]:
        nonlocal n
        for k, (name, frame, _) in enumerate(frames):
            t = getattr(frames, "index", k)  # the source's index (skipped unreadable frames count)
            inst = predictor(frame)
            index = paint_instances(inst)  # (H, W) int: 1 + index of the instance owning the pixel
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

    drain_to_video(rendered(), out / "vis.mp4", fps, render=not args.no_video)
    save_ytvis_results(
        tracks_to_video_results(tracks, n, args.video_id, cat_ids), out / "results.json"
    )
    write_mots_txt(out / "tracks.txt", mots)
    return n
