"""``instseg report DIR [--out FILE.html]``: one self-contained HTML page about an output folder
of ``instseg train`` / ``demo`` / ``eval`` / ``predict`` / ``track`` / ``propagate`` /
``inpaint`` (see :mod:`instseg.reporting.builder` for what is detected). Pictures are embedded;
MP4 videos are linked relative to the page. An empty or unrecognised folder is one line naming
it and exit status 2."""

from __future__ import annotations

import argparse
import sys


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("folder", help="a run / output folder written by an instseg command")
    p.add_argument("--out", default=None, help="the HTML file (default: FOLDER/report.html)")
    p.add_argument(
        "--gt", default=None, help="COCO annotations the results were scored on (breakdowns)"
    )
    p.add_argument(
        "--score-thresh", type=float, default=0.4, help="draw detections at or above this"
    )
    p.add_argument("--max-images", type=int, default=12, help="images in the predictions grid")
    p.add_argument(
        "--no-breakdown",
        action="store_true",
        help="skip the per-category / per-occlusion-level AP (re-scores results.json)",
    )


def run(args: argparse.Namespace) -> int:
    from instseg.reporting import ReportError, build_report

    try:
        path = build_report(
            args.folder,
            out=args.out,
            gt=args.gt,
            score_thresh=args.score_thresh,
            max_images=args.max_images,
            breakdown=not args.no_breakdown,
        )
    except ReportError as e:
        print(f"instseg report: {e}", file=sys.stderr)
        return 2
    except (OSError, ValueError) as e:
        print(f"instseg report: {e}", file=sys.stderr)
        return 1
    print(f"report: {path}")
    return 0
