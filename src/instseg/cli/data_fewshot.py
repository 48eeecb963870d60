"""``instseg data few-shot``: a seeded K-shot training subset of a COCO ground-truth file.

Example (the few-shot setting of survey Table 4.2: non-VOC base classes, VOC novel classes)::

    instseg data few-shot --gt instances_train2017.json --k 10 --seed 0 --out train_10shot.json
    instseg data few-shot --gt ... --k 20 --seed 0 --no-base --out train_20shot_nobase.json
    instseg data few-shot --gt synth/annotations.json --split base->novel --k 10 --out ...

:data:`SUBCOMMANDS` follows the table of :mod:`instseg.cli.data`: name -> (add its arguments,
run it, one-line help).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

__all__ = ["SUBCOMMANDS", "HELP", "add_arguments", "run"]

HELP = "seeded K-shot training subset of the novel classes (few-shot setting)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from instseg.data.class_split import SPLITS

    p.add_argument("--gt", type=Path, required=True, help="COCO ground-truth JSON (training set)")
    p.add_argument("--out", type=Path, required=True, help="output COCO JSON of the subset")
    p.add_argument("--k", type=int, required=True, help="shots per novel class (paper: 10, 20)")
    p.add_argument("--seed", type=int, default=0, help="random seed of the draw (default 0)")
    p.add_argument(
        "--split",
        default="non_voc->voc",
        help=f"class split 'base->novel side': one of {', '.join(SPLITS)} (default non_voc->voc)",
    )
    p.add_argument(
        "--no-base",
        action="store_true",
        help="drop base-class annotations (the paper's 'no base' setting)",
    )


def run(args: argparse.Namespace) -> int:
    from instseg.data.class_split import resolve_split
    from instseg.data.few_shot import sample_k_shot
    from instseg.utils.io import atomic_write_json, read_json

    try:
        data = read_json(args.gt)  # its errors name the file
    except (ValueError, FileNotFoundError) as e:
        print(f"instseg data few-shot: {e}", file=sys.stderr)
        return 2
    try:
        if not isinstance(data, dict) or not isinstance(data.get("categories"), list):
            raise ValueError("missing or invalid key 'categories' (COCO format)")
        _, novel = resolve_split(data["categories"], args.split)
        out = sample_k_shot(
            data, novel_ids=novel, k=args.k, seed=args.seed, keep_base=not args.no_base
        )
    except ValueError as e:
        print(f"instseg data few-shot: {args.gt}: {e}", file=sys.stderr)
        return 2
    atomic_write_json(args.out, out)
    counts = out["few_shot"]["novel_counts"]
    short = sorted(c for c, n in counts.items() if n < args.k)
    print(
        f"wrote {len(out['images'])} images, {len(out['annotations'])} annotations "
        f"({len(counts)} novel classes, {args.k}-shot, seed {args.seed}, "
        f"{'no base' if args.no_base else 'with base'}) -> {args.out}"
    )
    if short:
        print(f"classes with fewer than {args.k} instances in the data: {', '.join(short)}")
    return 0


SUBCOMMANDS: dict[
    str, tuple[Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int], str]
] = {"few-shot": (add_arguments, run, HELP)}
