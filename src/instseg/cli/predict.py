"""``instseg predict --weights W --source PATH --out DIR``: run a trained image model.

PATH is an image, a folder, a glob or a video file. ``DIR/results.json`` receives COCO results
(image ids from ``--gt`` by file name when given, else from numeric file stems, else the index);
``--save-vis`` writes overlay images (``DIR/vis/<name>.jpg``) or ``DIR/vis.mp4`` for a video.

What is drawn and saved is chosen like Ultralytics does: ``--conf`` (default 0.25),
``--max-det`` (default 100 per image) and ``--classes`` (names or category ids). ``instseg eval``
writes the results for AP with the model's low evaluation threshold instead; ``--conf 0`` here
does the same. An unreadable image or video frame is skipped with one warning (``--strict``: an
error) and counted at the end; ``results.json`` is written atomically once all are done.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from instseg.cli.options import (
    add_amp_argument,
    add_filter_arguments,
    add_strict_argument,
    class_choice,
)
from instseg.utils.errors import InvalidInputError, MissingFileError

log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--weights",
        default=None,
        help="model.pt (default: the shipped class-agnostic 'object' model, objects_default.pt)",
    )
    p.add_argument(
        "--model",
        default=None,
        help="a shipped image model by name: 'objects' (the default, Mask R-CNN head) or "
        "'bcnet' (the same recipe with BCNet's occlusion-aware bilayer head); or a weights path "
        "(the same as --weights)",
    )
    p.add_argument("--source", required=True, help="image, folder, glob or video file")
    p.add_argument("--out", default="outputs/predict", help="output folder")
    p.add_argument(
        "--gt", default=None, help="COCO annotations to take image ids from (by file name)"
    )
    p.add_argument("--save-vis", action="store_true", help="write overlay images / MP4")
    add_filter_arguments(p)
    p.add_argument(
        "--vis-thresh",
        type=float,
        default=None,
        help="draw only detections above this (default: all those --conf keeps)",
    )
    add_strict_argument(p)
    p.add_argument("--device", default="auto")
    add_amp_argument(p)
    p.add_argument(
        "--backend",
        default="auto",
        choices=["auto", "torch", "onnxruntime"],
        help="auto: ONNX Runtime (fp32) on CPU unless --amp forces a low precision, else torch",
    )
    p.add_argument(
        "--explain",
        action="store_true",
        help="also save per-RoI panels of the mask head's maps to DIR/explain/ (top 3 RoIs: "
        "occluder/occludee contours and masks for BCNet heads, boundary and one pixel's "
        "affinity for CPMask heads, then the final mask)",
    )


def image_id_map(gt: str | None) -> dict[str, int]:
    """COCO ``file_name`` (a relative path such as ``boat/00000.jpg``) -> image id."""
    if not gt:
        return {}
    from instseg.utils.io import read_json

    data = read_json(gt)
    if not isinstance(data, dict) or "images" not in data:
        raise InvalidInputError(f"{gt}: not a COCO annotation file (no 'images')")
    return {Path(str(im["file_name"])).as_posix(): int(im["id"]) for im in data["images"]}


def lookup_image_id(ids: dict[str, int], path: Path | None, name: str) -> int | None:
    """The id whose ``file_name`` is the longest trailing part of ``path`` (so ``boat/00000.jpg``
    and ``bus/00000.jpg`` stay apart), else the one whose file name stem equals ``name``."""
    if path is not None:
        parts = path.resolve().parts
        for k in range(len(parts), 0, -1):
            hit = ids.get("/".join(parts[-k:]))
            if hit is not None:
                return hit
    stems = [i for f, i in ids.items() if Path(f).stem == name]
    return stems[0] if len(stems) == 1 else None


def run(args: argparse.Namespace) -> int:
    import sys

    import cv2

    from instseg.evaluation.coco import instances_to_coco_results
    from instseg.inference.predictor import ImagePredictor
    from instseg.inference.visualize import draw_instances
    from instseg.utils.io import atomic_write_json
    from instseg.utils.progress import progress
    from instseg.utils.sources import SourceReader, is_video, video_fps
    from instseg.utils.video_writer import write_video

    reader = SourceReader(args.source, strict=args.strict, warn=_warn)
    total = reader.size_hint()  # a missing source or no images: an error before the model loads
    weights = chosen_weights(args)
    predictor = ImagePredictor(
        weights, device=args.device, amp=args.amp, conf=args.conf, max_det=args.max_det,
        classes=class_choice(args), backend=args.backend,
    )  # fmt: skip
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ids = image_id_map(args.gt)
    video = is_video(args.source)
    results, frames, missing = [], [], 0
    vis_thresh = args.conf if args.vis_thresh is None else args.vis_thresh
    for name, image, path in progress(reader, total=total, desc="predict", unit="img"):
        index = reader.index  # position in the source (skipped unreadable items count)
        if ids:
            found = lookup_image_id(ids, path, name)
            if found is None:
                missing += 1
                continue
            image_id = found
        else:
            image_id = int(name) if name.isdigit() else index
        kw = {"return_head_outputs": True} if args.explain else {}
        inst = predictor(image, **kw)
        cat_ids = predictor.category_ids or list(range(1, len(predictor.class_names) + 1))
        results += instances_to_coco_results(inst, image_id=image_id, category_ids=cat_ids)
        if args.save_vis:
            vis = draw_instances(
                image, inst, class_names=predictor.class_names, score_thresh=vis_thresh
            )
            if video:
                frames.append(vis)
            else:
                (out / "vis").mkdir(exist_ok=True)
                cv2.imwrite(str(out / "vis" / f"{name}.jpg"), vis[..., ::-1])
        if args.explain:
            from instseg.inference.explain import save_explanations

            save_explanations(out / "explain", name, image, inst, class_names=predictor.class_names)
    if reader.total == len(reader.skipped):
        raise InvalidInputError(f"{args.source}: no readable images or frames")
    if missing:
        log.warning("%d images of %s are not in %s and were skipped", missing, args.source, args.gt)
    atomic_write_json(out / "results.json", results)
    if video and frames:
        write_video(out / "vis.mp4", frames, fps=video_fps(args.source))
    print(f"wrote {len(results)} detections to {out / 'results.json'}")
    if not results:
        print(
            f"instseg predict: no detections scored at least --conf {args.conf}"
            + (f" in --classes {' '.join(args.classes)}" if args.classes else "")
            + "; a lower --conf shows more",
            file=sys.stderr,
        )
    if reader.skipped:
        print(f"instseg predict: {reader.summary()}", file=sys.stderr)
    return 0


def _warn(message: str) -> None:
    import sys

    print(f"instseg predict: warning: {message}", file=sys.stderr)


def chosen_weights(args: argparse.Namespace) -> Path:
    """``--model`` (a shipped name or a path) or ``--weights``, else the shipped default."""
    from instseg.engine.weights import shipped_image_model
    from instseg.utils.errors import UserError

    if args.model and args.weights:
        raise UserError("give --model or --weights, not both")
    if args.model:
        return shipped_image_model(args.model)
    return Path(args.weights) if args.weights else default_weights()


def default_weights() -> Path:
    """The shipped default image model (class-agnostic objects, trained by
    ``instseg train configs/objects_davis.yaml``; see its model card)."""
    from instseg.engine.weights import shipped_weights

    p = shipped_weights("image")
    if not p.is_file():
        raise MissingFileError(
            "no --weights given and no shipped default model found; run `./run demo` and pass "
            "--weights runs/demo/model.pt"
        )
    return p
