"""``instseg evaluate inpaint --pred DIR --gt DIR --holes DIR [--out metrics.json]``.

Hole / whole-frame PSNR and SSIM (see :mod:`instseg.evaluation.inpainting`). Files are matched
by relative path without extension, e.g. ``<seq>/00000``. The main ``evaluate`` command wires
this in through :data:`SUBCOMMANDS`.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any

__all__ = ["SUBCOMMANDS", "add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pred", required=True, type=Path, help="folder of inpainted frames")
    parser.add_argument("--gt", required=True, type=Path, help="folder of ground-truth frames")
    parser.add_argument(
        "--holes", required=True, type=Path, help="folder of hole masks (L PNG, >127 = hole)"
    )
    parser.add_argument("--out", type=Path, default=None, help="write metrics JSON here")
    parser.add_argument(
        "--per-frame", action="store_true", help="keep per-frame rows in the JSON (always computed)"
    )


def run(args: argparse.Namespace) -> int:
    from instseg.evaluation.inpainting import evaluate_inpainting
    from instseg.utils.io import atomic_write_json

    try:
        res = evaluate_inpainting(args.pred, args.gt, args.holes)
    except (OSError, ValueError) as e:
        if getattr(args, "debug", False):
            raise
        print(f"instseg evaluate inpaint: error: {e}", file=sys.stderr)
        return 2
    if not args.per_frame:
        res.pop("per_frame")
    print(format_table(res))
    if args.out is not None:
        atomic_write_json(args.out, _jsonable(res), indent=1)
        print(f"wrote {args.out}")
    return 0


def format_table(res: dict[str, Any]) -> str:
    """Per-sequence and mean rows: hole PSNR / SSIM, frame PSNR / SSIM."""
    head = f"{'sequence':<24} {'hole PSNR':>9} {'hole SSIM':>9} {'frm PSNR':>9} {'frm SSIM':>9}"
    rows = [head, "-" * len(head)]
    items = list(res["per_sequence"].items()) + [("mean", res["mean"])]
    for name, m in items:
        rows.append(
            f"{name or '.':<24} {m['hole_psnr']:>9.2f} {m['hole_ssim']:>9.4f} "
            f"{m['frame_psnr']:>9.2f} {m['frame_ssim']:>9.4f}"
        )
    rows.append(
        f"{res['num_frames']} frames, {res['empty_hole_frames']} with an empty hole; "
        f"PSNR capped at {res['psnr_cap']:.0f} dB"
    )
    return "\n".join(rows)


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_jsonable(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


SUBCOMMANDS = {"inpaint": (add_arguments, run)}
