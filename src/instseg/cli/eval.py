"""``instseg eval CONFIG --weights W [key=value ...]``: COCO metrics of trained weights on the
config's test set."""

from __future__ import annotations

import argparse
from pathlib import Path

from instseg.config import ConfigError, load_config


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="YAML config used for training (data section is read)")
    p.add_argument("overrides", nargs="*", help="key.sub=value overrides")
    p.add_argument("--weights", required=True, help="model.pt written by train/demo")
    p.add_argument("--out", default=None, help="folder for results.json and metrics.json")
    p.add_argument("--class-split", default=None, help="also report AP per class split (voc)")


def run(args: argparse.Namespace) -> int:
    from instseg.evaluation.coco import evaluate_coco, format_metrics_table
    from instseg.inference.loading import load_trained_model
    from instseg.recipes.image import build_datasets, evaluate, prepare_data, resolve_device
    from instseg.recipes.image_config import ImageTrainConfig
    from instseg.utils.io import atomic_write_json

    try:
        cfg = load_config(ImageTrainConfig, args.config, args.overrides)
    except ConfigError as e:
        raise SystemExit(f"config error: {e}") from None
    out = Path(args.out or cfg.out_dir)
    splits = prepare_data(cfg.data, Path(cfg.out_dir))
    _, test_ds = build_datasets(cfg.data, splits)
    device = resolve_device(cfg.device)
    model, _meta = load_trained_model(args.weights, device=device)
    metrics = evaluate(model, test_ds, splits.test_json, amp=cfg.solver.amp, out_dir=out)
    if args.class_split:
        results = out / "results.json"
        metrics["class_split"] = {
            t: evaluate_coco(splits.test_json, results, iou_type=t, class_split=args.class_split)
            for t in ("segm", "bbox")
        }
    for iou_type in ("segm", "bbox"):
        if iou_type in metrics:
            print(f"[{iou_type}]\n" + format_metrics_table(metrics[iou_type]))
    atomic_write_json(out / "metrics.json", metrics, indent=2)
    return 0
