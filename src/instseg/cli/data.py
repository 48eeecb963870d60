"""``instseg data <sub>``: generate / convert / split data sets.

Subcommands (one explicit table, :data:`SUBCOMMANDS`):

- ``synth``: synthetic occlusion scenes with exact amodal COCO annotations
  (``instseg.data.synthetic``). Default seeds: 0 for training, 1000 for held-out data.
- ``synth-video``: synthetic occlusion videos (``instseg.data.synthetic_video``), YouTube-VIS
  style JSON with amodal masks and per-frame depth order.
- ``coco-occ``: the COCO-OCC split of a COCO ground-truth file (images whose objects overlap),
  through ``instseg.data.occlusion.extract_coco_occ``.
- ``convert-amodal``: a synthetic amodal COCO file in the KINS, updated KINS or COCOA-cls layout
  (``instseg.data.amodal_layouts``), for amodal training / evaluation from those layouts.
- ``few-shot``: a seeded K-shot training subset of the novel classes
  (``instseg.cli.data_fewshot``, ``instseg.data.few_shot``).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from instseg.cli import data_fewshot as _fewshot

__all__ = ["SUBCOMMANDS", "add_arguments", "run"]


def _add_synth(p: argparse.ArgumentParser, *, unit: str = "images") -> None:
    p.add_argument(
        "--out", type=Path, required=True, help=f"output folder (gets {unit}/ and annotations.json)"
    )
    p.add_argument("--num", type=int, required=True, help=f"number of {unit}")
    p.add_argument("--seed", type=int, default=0, help="0 for training sets, 1000 for held-out")
    p.add_argument(
        "--size",
        type=_parse_size,
        default=(256, 256),
        help="image size: N (square) or HxW (default 256)",
    )
    p.add_argument(
        "--occlusion",
        type=float,
        default=0.5,
        help="0: objects spread apart ... 1: objects piled onto each other",
    )
    p.add_argument("--min-objects", type=int, default=2)
    p.add_argument("--max-objects", type=int, default=6)
    p.add_argument("--format", choices=("png", "jpg"), default="png", help="image file format")
    p.add_argument(
        "--cutouts",
        default="auto",
        help="DAVIS-style folder of real cutouts/backgrounds; 'none' for procedural "
        "objects only; 'auto' (default) uses the shared DAVIS subset if present; 'all' "
        "(images only) both shared DAVIS-2016 folders, all 30 training sequences",
    )


def _add_synth_images(p: argparse.ArgumentParser) -> None:
    _add_synth(p)
    p.add_argument(
        "--sequences",
        nargs="+",
        default=None,
        metavar="SEQ",
        help="draw cutouts and backgrounds only from these DAVIS sequences (e.g. held-out ones)",
    )
    p.add_argument(
        "--exclude",
        nargs="+",
        default=(),
        metavar="SEQ",
        help="never draw from these DAVIS sequences (objects nor backgrounds)",
    )
    p.add_argument(
        "--frames-per-sequence", type=int, default=8, help="frames read per DAVIS sequence"
    )
    p.add_argument(
        "--class-agnostic", action="store_true", help="one category, 'object', for everything"
    )
    p.add_argument(
        "--jitter", action="store_true", help="colour / contrast / blur jitter of each cutout"
    )
    p.add_argument(
        "--cutout-prob",
        type=float,
        default=None,
        help="share of objects that are real cutouts (default 0.4)",
    )


def _scene_config(args: argparse.Namespace) -> Any:
    """The SceneConfig of the shared ``synth`` / ``synth-video`` options (validated there)."""
    from instseg.data.synthetic import SceneConfig

    extra: dict[str, Any] = {}
    if getattr(args, "class_agnostic", False):
        extra["class_agnostic"] = True
    if getattr(args, "jitter", False):
        from instseg.data.synthetic_cutouts import SpriteJitter

        extra["jitter"] = SpriteJitter()
    if getattr(args, "cutout_prob", None) is not None:
        extra["cutout_prob"] = args.cutout_prob
    return SceneConfig(
        image_size=args.size,
        min_objects=args.min_objects,
        max_objects=args.max_objects,
        occlusion=args.occlusion,
        image_format=args.format,
        **extra,
    )


def _run_synth(args: argparse.Namespace) -> int:
    from instseg.data.synthetic import generate_scenes

    cutouts = _cutout_root(args.cutouts)
    if cutouts is False:
        return 2
    try:
        cfg = _scene_config(args)
        bank = None
        if cutouts is not None:
            from instseg.data.synthetic_cutouts import CutoutBank

            bank = CutoutBank.load(
                cutouts,
                frames_per_sequence=args.frames_per_sequence,
                include=args.sequences,
                exclude=args.exclude,
                class_name="object" if args.class_agnostic else None,
            )
        elif args.sequences or args.exclude:
            raise ValueError("--sequences / --exclude need DAVIS cutouts (--cutouts)")
        path = generate_scenes(
            args.out, num_images=args.num, seed=args.seed, cutout_root=cutouts, config=cfg,
            bank=bank,
        )  # fmt: skip
    except (ValueError, FileNotFoundError) as e:
        print(f"instseg data synth: {e}", file=sys.stderr)
        return 2
    data = json.loads(path.read_text())
    anns = data["annotations"]
    mean_occ = sum(a["occlusion_ratio"] for a in anns) / max(len(anns), 1)
    print(
        f"wrote {len(data['images'])} images, {len(anns)} objects "
        f"({len(data['categories'])} categories, mean occlusion {mean_occ:.3f}, "
        f"cutouts: {_describe(cutouts)}) -> {path}"
    )
    return 0


def _describe(cutouts: Any) -> str:
    if not cutouts:
        return "none"
    if isinstance(cutouts, (str, Path)):
        return str(cutouts)
    return ", ".join(str(c) for c in cutouts)


def _add_synth_video(p: argparse.ArgumentParser) -> None:
    _add_synth(p, unit="videos")
    p.add_argument("--frames", type=int, default=16, help="frames per video")
    p.add_argument(
        "--max-speed",
        type=float,
        default=0.03,
        help="pixels per frame, as a fraction of the image's shorter side",
    )
    g = p.add_argument_group(
        "effects that make the past matter (all off by default; instseg.data.video_effects)"
    )
    g.add_argument("--corrupt-prob", type=float, default=0.0, help="share of corrupted frames")
    g.add_argument(
        "--corruptions", nargs="+", default=["noise", "dark", "blur"], help="kinds drawn from"
    )
    g.add_argument("--patch-prob", type=float, default=0.0, help="occlusion patch per object")
    g.add_argument("--patch-max-frames", type=int, default=3, help="a patch lasts 1..N frames")
    g.add_argument(
        "--patch-in-gt", action="store_true", help="cut patches out of the visible masks"
    )
    g.add_argument("--colour-drift", type=float, default=0.0, help="max gain change per channel")
    g.add_argument("--brightness-drift", type=float, default=0.0, help="max offset / 255")
    g.add_argument("--scale-drift", type=float, default=0.0, help="max relative size change")
    g.add_argument("--camera-speed", type=float, default=0.0, help="max pan per frame / side")
    g.add_argument("--camera-zoom", type=float, default=0.0, help="max zoom change over a clip")


def _video_effects(args: argparse.Namespace) -> Any:
    from instseg.data.video_effects import VideoEffects

    return VideoEffects(
        corrupt_prob=args.corrupt_prob, corruptions=tuple(args.corruptions),
        patch_prob=args.patch_prob, patch_max_frames=args.patch_max_frames,
        patch_in_gt=args.patch_in_gt, colour_drift=args.colour_drift,
        brightness_drift=args.brightness_drift, scale_drift=args.scale_drift,
        camera_speed=args.camera_speed, camera_zoom=args.camera_zoom,
    )  # fmt: skip


def _run_synth_video(args: argparse.Namespace) -> int:
    from instseg.data.synthetic_video import VideoConfig, generate_videos

    cutouts = _cutout_root(args.cutouts)
    if cutouts is False:
        return 2
    try:
        scene = _scene_config(args)
        cfg = VideoConfig(
            scene=scene, num_frames=args.frames, max_speed=args.max_speed,
            effects=_video_effects(args),
        )  # fmt: skip
        path = generate_videos(
            args.out, num_videos=args.num, seed=args.seed, cutout_root=cutouts, config=cfg
        )
    except (ValueError, FileNotFoundError) as e:
        print(f"instseg data synth-video: {e}", file=sys.stderr)
        return 2
    data = json.loads(path.read_text())
    corrupted = sum(len(v.get("corrupted_frames", ())) for v in data["videos"])
    print(
        f"wrote {len(data['videos'])} videos of {args.frames} frames, "
        f"{len(data['annotations'])} tracks, {corrupted} corrupted frames "
        f"(cutouts: {cutouts or 'none'}) -> {path}"
    )
    return 0


def _add_coco_occ(p: argparse.ArgumentParser) -> None:
    p.add_argument("--gt", type=Path, required=True, help="COCO ground-truth JSON")
    p.add_argument("--out", type=Path, required=True, help="output JSON of the COCO-OCC subset")
    p.add_argument(
        "--min-overlap",
        type=float,
        default=0.2,
        help="minimum overlap for a pair of objects to count as occluding",
    )


def _run_coco_occ(args: argparse.Namespace) -> int:
    from instseg.data.occlusion import extract_coco_occ

    try:
        stats = extract_coco_occ(args.gt, args.out, min_overlap=args.min_overlap)
    except (ValueError, FileNotFoundError) as e:
        print(f"instseg data coco-occ: {e}", file=sys.stderr)
        return 2
    print(json.dumps(stats, indent=1, default=str))
    return 0


# = instseg.data.amodal_layouts.AMODAL_LAYOUTS (not imported here: it loads torch)
_AMODAL_LAYOUTS = ("kins", "kins_updated", "cocoa_cls")


def _add_convert_amodal(p: argparse.ArgumentParser) -> None:
    p.add_argument("src", type=Path, help="synthetic amodal COCO JSON (instseg data synth)")
    p.add_argument("dst", type=Path, help="output JSON in the chosen layout")
    p.add_argument(
        "--layout",
        choices=_AMODAL_LAYOUTS,
        required=True,
        help="kins (i_segm/a_segm, oco_id/ico_id), kins_updated (inmodal_seg + amodal "
        "segmentation) or cocoa_cls (amodal segmentation + visible_mask)",
    )


def _run_convert_amodal(args: argparse.Namespace) -> int:
    from instseg.data.amodal_layouts import convert_amodal_layout

    try:
        counts = convert_amodal_layout(args.src, args.dst, layout=args.layout)
    except (ValueError, FileNotFoundError) as e:
        print(f"instseg data convert-amodal: {e}", file=sys.stderr)
        return 2
    print(json.dumps({**counts, "layout": args.layout, "out": str(args.dst)}, indent=1))
    return 0


# name -> (add its arguments, run it, one-line help)
SUBCOMMANDS: dict[
    str, tuple[Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int], str]
] = {
    "synth": (
        _add_synth_images,
        _run_synth,
        "synthetic occlusion scenes with amodal COCO annotations",
    ),
    "synth-video": (
        _add_synth_video,
        _run_synth_video,
        "synthetic occlusion videos with amodal YouTube-VIS annotations",
    ),
    "coco-occ": (_add_coco_occ, _run_coco_occ, "extract the COCO-OCC (occluded) subset"),
    "convert-amodal": (
        _add_convert_amodal,
        _run_convert_amodal,
        "a synthetic amodal COCO file in the KINS / updated KINS / COCOA-cls layout",
    ),
    **_fewshot.SUBCOMMANDS,
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    metavar = "{" + ",".join(SUBCOMMANDS) + "}"
    sub = parser.add_subparsers(dest="sub", required=True, metavar=metavar)
    for name, (add, _, help_text) in SUBCOMMANDS.items():
        add(sub.add_parser(name, help=help_text, description=help_text))


def run(args: argparse.Namespace) -> int:
    _, fn, _ = SUBCOMMANDS[args.sub]
    return fn(args)


def _cutout_root(value: str) -> Path | None | bool:
    """--cutouts value -> folder, None (procedural only), or False after printing an error."""
    from instseg.data.synthetic_cutouts import find_default_cutout_root

    if value == "none":
        return None
    if value == "auto":
        return find_default_cutout_root()
    if value == "all":
        from instseg.data.synthetic_cutouts import find_davis_roots

        roots = find_davis_roots()
        if not roots:
            print("instseg data: --cutouts all: no shared DAVIS folder found", file=sys.stderr)
            return False
        return roots  # type: ignore[return-value]
    root = Path(value)
    if not root.is_dir():
        print(f"instseg data: --cutouts {root}: folder not found", file=sys.stderr)
        return False
    return root


def _parse_size(text: str) -> tuple[int, int]:
    try:
        parts = [int(v) for v in text.lower().split("x")]
    except ValueError:
        parts = []
    if len(parts) == 1:
        parts *= 2
    if len(parts) != 2 or min(parts) <= 0:
        raise argparse.ArgumentTypeError(f"size must be N or HxW with positive ints, got '{text}'")
    return parts[0], parts[1]
