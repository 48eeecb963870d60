"""`instseg evaluate <benchmark>`: score result files with the official metrics.

One sub-command per benchmark in :data:`SUBCOMMANDS`, each an ``(add_arguments, run)`` pair;
the first line of ``run``'s docstring is its help. Bad input files give a one-line error
naming the file and exit status 2 (like every user error of the ``instseg`` command).
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from instseg.utils.errors import one_line
from instseg.utils.io import atomic_write_json, read_json

__all__ = ["SUBCOMMANDS", "add_arguments", "run"]


def _coco_add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--gt", required=True, type=Path, help="COCO-format ground-truth JSON")
    p.add_argument("--results", required=True, type=Path, help="COCO results JSON (a list)")
    p.add_argument(
        "--iou-type",
        choices=("segm", "bbox", "both"),
        default="segm",
        help="mask AP, box AP or both (default: segm)",
    )
    p.add_argument(
        "--class-split",
        default="none",
        metavar="voc|none|SPLIT.json",
        help="also report AP on VOC / non-VOC classes, or on the splits of a JSON "
        "object name -> list of category ids or names (default: none)",
    )
    p.add_argument(
        "--backend",
        choices=("pycocotools", "faster"),
        default="pycocotools",
        help="pycocotools (reference) or faster-coco-eval (same numbers)",
    )
    p.add_argument("--out", type=Path, help="write the metrics here as JSON (NaN -> null)")


def _coco_run(args: argparse.Namespace) -> int:
    """COCO box / mask AP of a results file (pycocotools protocol)."""
    from instseg.evaluation.coco import evaluate_coco, format_metrics_table, load_coco_gt

    split: Any = args.class_split
    if split.endswith(".json"):
        split = read_json(split)
        if not isinstance(split, dict):
            raise ValueError(f"{args.class_split}: a class split must be a JSON object")
    iou_types = ("segm", "bbox") if args.iou_type == "both" else (args.iou_type,)
    gt = load_coco_gt(args.gt, iou_types=iou_types)
    per_type = {}
    for t in iou_types:
        per_type[t] = evaluate_coco(
            gt, args.results, iou_type=t, class_split=split, backend=args.backend
        )
    metrics = per_type if len(iou_types) > 1 else per_type[iou_types[0]]
    print(format_metrics_table(per_type))
    if args.out is not None:
        atomic_write_json(args.out, _nan_to_none(metrics), indent=2)
        print(f"metrics written to {args.out}")
    return 0


# sub-command -> (add_arguments, run)
SUBCOMMANDS: dict[
    str, tuple[Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]
] = {
    "coco": (_coco_add_arguments, _coco_run),
}


def _all_subcommands() -> dict[str, Any]:
    """COCO plus the video (vis, mots, davis) and inpainting benchmarks from their modules."""
    from instseg.cli.evaluate_inpaint import SUBCOMMANDS as inpaint
    from instseg.cli.evaluate_video import SUBCOMMANDS as video

    return {**SUBCOMMANDS, **video, **inpaint}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="benchmark", metavar="BENCHMARK", required=True)
    for name, (add, run_fn) in _all_subcommands().items():
        help_text = (run_fn.__doc__ or "").strip().splitlines()[0] if run_fn.__doc__ else ""
        p = sub.add_parser(name, help=help_text, description=help_text)
        add(p)
        p.set_defaults(_run=run_fn)


def run(args: argparse.Namespace) -> int:
    try:
        return int(args._run(args) or 0)
    except (ValueError, FileNotFoundError) as e:
        if getattr(args, "debug", False):
            raise
        print(f"instseg evaluate {args.benchmark}: error: {one_line(e)}", file=sys.stderr)
        return 2


def _nan_to_none(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _nan_to_none(v) for k, v in x.items()}
    return None if isinstance(x, float) and math.isnan(x) else x
