"""``instseg train CONFIG [key=value ...] [--resume]``: train the model a config describes.

Every shipped model is trained by this command. The config's top-level ``task`` picks the
recipe (default ``image``); all of them share :class:`instseg.recipes.runner.TrainingRun`:

- ``image``: :func:`instseg.recipes.image.train` (:class:`ImageTrainConfig`; BCNet, CPMask and
  the baseline on COCO-format data or the built-in synthetic scenes, e.g.
  ``src/instseg/configs/demo.yaml``). Under
  ``torchrun --nproc_per_node=N -m instseg.cli.main train ...`` it trains with DDP.
- ``video``: :func:`instseg.recipes.video.train_video` (:class:`VideoTrainConfig`; PCAN on
  YouTube-VIS-format data or synthetic videos, e.g. ``configs/pcan_synthetic.yaml``).
- ``propagation``: :func:`instseg.recipes.propagation.train_propagation`
  (:class:`PropagationTrainConfig`; the embedding of ``instseg propagate --weights``, e.g.
  ``configs/propagation_davis.yaml``).
- ``inpainting``: :func:`instseg.recipes.inpainting.train_inpainting`
  (:class:`InpaintingTrainConfig`; the three VOIN stages packed into one file for
  ``instseg inpaint --weights``, e.g. ``configs/voin_davis.yaml``).
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from instseg.config import ConfigError, load_config

TASKS = ("image", "video", "propagation", "inpainting")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="YAML config (see configs/); its `task` picks the recipe")
    p.add_argument("overrides", nargs="*", help="key.sub=value overrides, e.g. solver.lr=0.01")
    p.add_argument("--resume", action="store_true", help="continue from OUT_DIR/last_checkpoint")
    p.add_argument("--no-progress", action="store_true", help="disable the progress bar")


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    try:
        task = config_task(args.config, args.overrides)
        config_class, train_fn = recipe(task)
        cfg = load_config(config_class, args.config, args.overrides)
        metrics = train_fn(cfg, resume=args.resume, progress=not args.no_progress)
    except ConfigError as e:
        raise SystemExit(f"config error: {e}") from None
    if metrics:
        print(json.dumps(metrics, indent=2))
    return 0


def recipe(task: str) -> tuple[type, Callable[..., dict[str, Any]]]:
    """(config class, train function) of ``task`` (imported on demand: each pulls its own
    dependencies)."""
    if task == "video":
        from instseg.recipes.video import train_video
        from instseg.recipes.video_config import VideoTrainConfig

        return VideoTrainConfig, train_video
    if task == "propagation":
        from instseg.recipes.propagation import train_propagation
        from instseg.recipes.propagation_config import PropagationTrainConfig

        return PropagationTrainConfig, train_propagation
    if task == "inpainting":
        from instseg.recipes.inpainting import train_inpainting
        from instseg.recipes.inpainting_config import InpaintingTrainConfig

        return InpaintingTrainConfig, train_inpainting
    from instseg.recipes.image import train
    from instseg.recipes.image_config import ImageTrainConfig

    return ImageTrainConfig, train


def config_task(path: str | Path, overrides: list[str]) -> str:
    """The ``task`` of a config file (following its ``_base_``), a ``task=...`` override
    winning; ``image`` when unset. Raises ConfigError for an unknown task."""
    from instseg.config import read_yaml_with_base

    task = str(read_yaml_with_base(Path(path)).get("task", "image"))
    for o in overrides:
        if o.startswith("task="):
            task = o.split("=", 1)[1]
    if task not in TASKS:
        raise ConfigError(f"{path}: task must be one of {', '.join(TASKS)}, got {task!r}")
    return task
