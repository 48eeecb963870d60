"""``instseg eval CONFIG --weights W [key=value ...]``: COCO metrics of trained weights on the
config's test set.

- ``--class-split voc`` adds ``voc`` / ``non_voc`` AP inside each IoU type; a direction
  (``voc->non_voc``, ``non_voc->voc``, ``base->novel``) adds ``base`` / ``novel``. Default: the
  config's ``evaluation.class_split`` or ``data.class_split``.
- ``--amodal``: amodal AP (GT segmentation replaced by the amodal mask; synthetic / KINS / COCOA
  layouts). ``--occ``: AP on occluded instances (non-occluded ones become ignore regions) and AP
  on the COCO-OCC images. See :mod:`instseg.evaluation.amodal` for the protocol.

When the config has held-out sequences (``data.synthetic.held_out``) the ``unseen`` split (objects
and backgrounds never seen in training) is scored too, class-agnostically, with a breakdown by
occlusion level (``--split test|unseen`` keeps one). ``--class-agnostic`` scores every predicted
class as the test set's one category (e.g. a multi-class model on the ``object`` scenes; it is
implied when the test set has one category and the weights have several).
The masks are scored as what the weights were trained to predict (``model.mask_target`` in the
weights' meta: visible or amodal).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from instseg.config import load_config


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="YAML config used for training (data section is read)")
    p.add_argument("overrides", nargs="*", help="key.sub=value overrides")
    p.add_argument("--weights", required=True, help="model.pt written by train/demo")
    p.add_argument("--out", default=None, help="folder for results.json and metrics.json")
    p.add_argument(
        "--class-split",
        default=None,
        help="also report AP per class split: 'voc' (voc/non_voc) or a direction such as "
        "'voc->non_voc' / 'base->novel' (base/novel)",
    )
    p.add_argument("--amodal", action="store_true", help="also report amodal AP")
    p.add_argument(
        "--occ",
        action="store_true",
        help="also report AP on occluded instances and on the COCO-OCC image subset",
    )
    p.add_argument(
        "--min-occlusion",
        type=float,
        default=None,
        help="occluded instance: 1 - visible/amodal area above this (default: config, 0.1)",
    )
    p.add_argument(
        "--split",
        choices=("all", "test", "unseen"),
        default="all",
        help="which split to score: the test split, the held-out 'unseen' split (configs with "
        "data.synthetic.held_out), or both (default)",
    )
    p.add_argument(
        "--class-agnostic",
        action="store_true",
        help="score every predicted class as the test set's single category",
    )


def run(args: argparse.Namespace) -> int:
    import dataclasses
    import sys

    from instseg.inference.loading import load_trained_model
    from instseg.recipes.image import (
        build_datasets,
        build_unseen_dataset,
        evaluate,
        evaluate_unseen,
        prepare_data,
        resolve_device,
        resolve_eval_split,
    )
    from instseg.recipes.image_config import ImageTrainConfig
    from instseg.utils.io import atomic_write_json

    cfg = load_config(ImageTrainConfig, args.config, args.overrides)  # ConfigError: one line
    out = Path(args.out or cfg.out_dir)
    splits = prepare_data(cfg.data, Path(cfg.out_dir))
    if args.split == "unseen" and splits.unseen_json is None:
        print(
            f"instseg eval: error: {args.config}: no unseen split (set data.synthetic.held_out; "
            "needs the shared DAVIS data)",
            file=sys.stderr,
        )
        return 2
    device = resolve_device(cfg.device)
    model, meta = load_trained_model(args.weights, device=device)
    target = str(meta.model.get("mask_target", cfg.model.mask_target))
    ev = cfg.evaluation
    ev = dataclasses.replace(
        ev,
        amodal=ev.amodal or args.amodal,
        occluded=ev.occluded or args.occ,
        min_occlusion=ev.min_occlusion if args.min_occlusion is None else args.min_occlusion,
    )
    metrics: dict = {}
    try:
        if args.split in ("all", "test"):
            _, test_ds = build_datasets(cfg.data, splits, mask_target="visible")
            split = resolve_eval_split(
                args.class_split or ev.class_split or cfg.data.class_split, splits.test_json
            )
            agnostic = args.class_agnostic or (
                len(test_ds.category_ids) == 1 and meta.num_classes > 1
            )
            if agnostic and len(test_ds.category_ids) != 1:
                raise ValueError(
                    f"{splits.test_json}: --class-agnostic needs a test set with one category, "
                    f"this one has {len(test_ds.category_ids)}"
                )
            metrics = evaluate(
                model,
                test_ds,
                splits.test_json,
                amp=cfg.solver.amp,
                out_dir=out,
                mask_target=target,
                eval_cfg=ev,
                class_split=split,
                category_ids=test_ds.category_ids * meta.num_classes if agnostic else None,
            )
        if args.split in ("all", "unseen") and splits.unseen_json is not None:
            metrics["unseen"] = evaluate_unseen(
                model,
                build_unseen_dataset(cfg.data, splits),
                splits,
                out_dir=out / "unseen",
                num_classes=meta.num_classes,
                amp=cfg.solver.amp,
                mask_target=target,
            )
    except ValueError as e:
        if getattr(args, "debug", False):
            raise
        print(f"instseg eval: error: {e}", file=sys.stderr)
        return 2
    _print_groups(metrics)
    if "unseen" in metrics:
        print("[unseen: objects and backgrounds never seen in training, class-agnostic]")
        _print_groups(metrics["unseen"])
        for level, m in metrics["unseen"].get("segm_by_occlusion", {}).items():
            ap = m.get("AP", float("nan"))
            print(f"  segm AP {level}: {ap:.1f} ({m.get('instances', 0)} instances)")
    atomic_write_json(out / "metrics.json", metrics, indent=2)
    return 0


def _print_groups(metrics: dict) -> None:
    from instseg.evaluation.coco import format_metrics_table

    for key, group in metrics.items():
        if key == "unseen":
            continue
        if key in ("segm", "bbox"):
            print(f"[{key}]\n" + format_metrics_table(group))
        elif isinstance(group, dict) and any(t in group for t in ("segm", "bbox")):
            print(
                f"[{key}]\n"
                + format_metrics_table({t: group[t] for t in ("segm", "bbox") if t in group})
            )
