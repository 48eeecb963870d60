"""``instseg train CONFIG [key=value ...] [--resume]``: train an image instance segmenter.

Under ``torchrun --nproc_per_node=N -m instseg.cli.main train ...`` it trains with DDP.
"""

from __future__ import annotations

import argparse
import json
import logging

from instseg.config import ConfigError, load_config


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="YAML config (see configs/); fields of ImageTrainConfig")
    p.add_argument("overrides", nargs="*", help="key.sub=value overrides, e.g. solver.lr=0.01")
    p.add_argument("--resume", action="store_true", help="continue from OUT_DIR/last_checkpoint")
    p.add_argument("--no-progress", action="store_true", help="disable the progress bar")


def run(args: argparse.Namespace) -> int:
    from instseg.recipes.image import train
    from instseg.recipes.image_config import ImageTrainConfig

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    try:
        cfg = load_config(ImageTrainConfig, args.config, args.overrides)
    except ConfigError as e:
        raise SystemExit(f"config error: {e}") from None
    metrics = train(cfg, resume=args.resume, progress=not args.no_progress)
    if metrics:
        print(json.dumps(metrics, indent=2))
    return 0
