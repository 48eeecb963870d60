"""Video sub-commands of `instseg evaluate`: ``vis`` (YouTube-VIS AP), ``mots`` (TrackEval
sMOTSA / IDF1 / HOTA) and ``davis`` (J&F).

Same convention as :mod:`instseg.cli.evaluate`: :data:`SUBCOMMANDS` maps a name to an
``(add_arguments, run)`` pair; the first line of ``run``'s docstring is its help. ``run``
raises ``ValueError`` / ``FileNotFoundError`` on bad input (the caller turns them into a
one-line error and exit status 2).
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from instseg.utils.io import atomic_write_json

__all__ = ["SUBCOMMANDS"]


# ----------------------------------------------------------------------------- vis
def _vis_add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--gt", required=True, type=Path, help="YouTube-VIS ground-truth JSON")
    p.add_argument("--results", required=True, type=Path, help="YouTube-VIS results JSON (list)")
    p.add_argument("--out", type=Path, help="write the metrics here as JSON (NaN -> null)")
    p.add_argument(
        "--frames",
        metavar="KEY",
        help="also report per-frame mask AP on the frames the GT lists in videos[].KEY (e.g. "
        "corrupted_frames or patched_frames of `instseg data synth-video` with effects) and "
        "on all frames",
    )


def _vis_run(args: argparse.Namespace) -> int:
    """YouTube-VIS video AP / AR (spatio-temporal mask IoU, official protocol)."""
    from instseg.data.ytvis import load_ytvis_dataset
    from instseg.evaluation.vis import evaluate_vis_frames, evaluate_ytvis, read_frame_subset
    from instseg.utils.io import read_json

    metrics = evaluate_ytvis(args.gt, args.results)
    table = {k: v for k, v in metrics.items() if k != "per_category"}
    if args.frames:
        subset = read_frame_subset(args.gt, args.frames)
        gt, results = load_ytvis_dataset(args.gt, Path(".")), read_json(args.results)
        ids = sorted(v.id for v in gt.videos)
        metrics["frames"] = {
            "all": evaluate_vis_frames(gt, results, None, video_ids=ids),
            args.frames: evaluate_vis_frames(gt, results, subset, video_ids=ids),
        }
        for name, m in metrics["frames"].items():
            table.update({f"frames/{name}/{k}": m.get(k) for k in ("AP", "AP50", "num_frames")})
    _report(table, args.out, metrics)
    return 0


# ----------------------------------------------------------------------------- mots
def _mots_add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--gt",
        required=True,
        type=Path,
        help="GT folder (KITTI label_02/ or <seq>.txt files, MOTSChallenge "
        "<seq>/gt/gt.txt) or one txt file",
    )
    p.add_argument(
        "--results", required=True, type=Path, help="folder of <seq>.txt result files (or one file)"
    )
    p.add_argument(
        "--benchmark",
        choices=("kitti", "motschallenge"),
        default="kitti",
        help="dataset convention: KITTI-MOTS (0-based frames, car + pedestrian) "
        "or MOTSChallenge (1-based, pedestrian)",
    )
    p.add_argument("--seqmap", type=Path, help="KITTI seqmap '<seq> empty <first> <last>'")
    p.add_argument(
        "--classes", nargs="+", help="classes to evaluate (default: all of the benchmark's)"
    )
    p.add_argument("--out", type=Path, help="write the metrics here as JSON")


def _mots_run(args: argparse.Namespace) -> int:
    """MOTS metrics via TrackEval: sMOTSA, MOTSA, MOTSP, IDF1, IDSW, HOTA."""
    from instseg.evaluation.mots import evaluate_mots

    metrics = evaluate_mots(
        args.gt, args.results, benchmark=args.benchmark, seqmap=args.seqmap, classes=args.classes
    )
    table = {f"{c}/{k}": v for c, m in metrics.items() if c != "per_sequence"
             for k, v in m.items()}  # fmt: skip
    _report(table, args.out, metrics)
    return 0


# ----------------------------------------------------------------------------- davis
def _davis_add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--results",
        required=True,
        type=Path,
        help="folder of predicted label PNGs <seq>/<frame>.png",
    )
    p.add_argument(
        "--gt", required=True, type=Path, help="GT annotation folder, e.g. DAVIS/Annotations/480p"
    )
    p.add_argument("--sequences", nargs="+", help="sequences to score (default: all in --gt)")
    p.add_argument(
        "--all-frames",
        action="store_true",
        help="score every frame (default: drop the first and last frame, as the "
        "official semi-supervised protocol does)",
    )
    p.add_argument("--out", type=Path, help="write the metrics here as JSON")


def _davis_run(args: argparse.Namespace) -> int:
    """DAVIS J&F (region similarity J, boundary F; mean, recall, decay)."""
    from instseg.evaluation.vos import evaluate_davis

    metrics = evaluate_davis(
        args.results, args.gt, args.sequences, exclude_first_last=not args.all_frames
    )
    _report({k: v for k, v in metrics.items() if k != "per_sequence"}, args.out, metrics)
    return 0


# sub-command -> (add_arguments, run)
SUBCOMMANDS: dict[
    str, tuple[Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]
] = {
    "vis": (_vis_add_arguments, _vis_run),
    "mots": (_mots_add_arguments, _mots_run),
    "davis": (_davis_add_arguments, _davis_run),
}


def _report(table: Mapping[str, Any], out: Path | None, full: Mapping[str, Any]) -> None:
    width = max((len(k) for k in table), default=0)
    for k, v in table.items():
        text = (
            "nan"
            if isinstance(v, float) and math.isnan(v)
            else (f"{v:.3f}" if isinstance(v, float) else str(v))
        )
        print(f"{k:<{width}}  {text}")
    if out is not None:
        atomic_write_json(out, _nan_to_none(full), indent=2)
        print(f"metrics written to {out}")


def _nan_to_none(x: Any) -> Any:
    if isinstance(x, Mapping):
        return {str(k): _nan_to_none(v) for k, v in x.items()}
    return None if isinstance(x, float) and math.isnan(x) else x
