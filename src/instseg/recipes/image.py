"""Image instance segmentation recipe: config -> data, model, trainer, evaluator.

Used by ``instseg train``, ``instseg eval`` and ``instseg demo``; each step is a small function
so the CLI stays thin and tests can call them directly.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from instseg.config import dump_config, to_dict
from instseg.recipes.image_config import DataConfig, ImageTrainConfig, ModelConfig
from instseg.utils.io import atomic_write_json

__all__ = [
    "DataSplits",
    "prepare_data",
    "build_datasets",
    "build_model_from_config",
    "model_meta",
    "train",
    "evaluate",
    "resolve_device",
]

log = logging.getLogger(__name__)


@dataclass
class DataSplits:
    """Paths of a COCO-format train/test pair."""

    train_json: Path
    train_root: Path
    test_json: Path
    test_root: Path


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def prepare_data(cfg: DataConfig, out_dir: Path) -> DataSplits:
    """Return COCO paths; generate the built-in synthetic scenes when no train_json is given.

    Synthetic data is generated once per (settings) into ``cache_dir`` and reused.
    """
    if cfg.train_json:
        test_json = cfg.test_json or cfg.train_json
        test_root = cfg.test_root or cfg.train_root
        return DataSplits(
            Path(cfg.train_json), Path(cfg.train_root), Path(test_json), Path(test_root)
        )
    from instseg.data.synthetic import generate_scenes
    from instseg.data.synthetic_cutouts import find_default_cutout_root

    s = cfg.synthetic
    cache = Path(cfg.cache_dir) if cfg.cache_dir else out_dir / "data"
    cutouts = find_default_cutout_root() if s.cutouts else None
    splits = {}
    for split, num, seed in (
        ("train", s.num_train, s.seed_train),
        ("test", s.num_test, s.seed_test),
    ):
        tag = f"{split}_n{num}_s{seed}_sz{s.image_size}_occ{s.occlusion:g}_o{s.min_objects}-{s.max_objects}"
        tag += "_cut" if cutouts else ""
        folder = cache / tag
        ann = folder / "annotations.json"
        if not ann.is_file():
            log.info("generating %d synthetic %s scenes into %s", num, split, folder)
            generate_scenes(
                folder,
                num_images=num,
                seed=seed,
                image_size=(s.image_size, s.image_size),
                min_objects=s.min_objects,
                max_objects=s.max_objects,
                occlusion=s.occlusion,
                cutout_root=cutouts,
            )
        splits[split] = (ann, folder)  # file_name in the JSON is "images/<id>.png"
    return DataSplits(splits["train"][0], splits["train"][1], splits["test"][0], splits["test"][1])


def build_datasets(cfg: DataConfig, splits: DataSplits) -> tuple[Any, Any]:
    """(train dataset, test dataset) with the config's transforms."""
    from instseg.data.coco import CocoInstanceDataset
    from instseg.data.transforms import build_transforms

    train_tf = build_transforms(
        train=True, min_size=tuple(cfg.min_size), max_size=cfg.max_size, flip=cfg.flip
    )
    test_tf = build_transforms(train=False, min_size=(cfg.test_min_size,), max_size=cfg.max_size)
    train_ds = CocoInstanceDataset(
        splits.train_json,
        splits.train_root,
        transforms=train_tf,
        filter_empty=cfg.filter_empty,
        skip_bad_images=cfg.skip_bad_images,
    )
    test_ds = CocoInstanceDataset(
        splits.test_json,
        splits.test_root,
        transforms=test_tf,
        category_ids=train_ds.category_ids,
    )
    return train_ds, test_ds


def build_model_from_config(cfg: ModelConfig, *, num_classes: int, **extra: Any) -> torch.nn.Module:
    """Zoo model for ``cfg``; ``extra`` keywords go to the builder (segmenter overrides)."""
    from instseg.models.zoo import build_model

    kw: dict[str, Any] = {
        **extra,
        "num_classes": num_classes,
        "pretrained": cfg.pretrained,
        "class_aware_masks": cfg.class_aware_masks,
    }
    if cfg.backbone_weights:
        kw["weights"] = cfg.backbone_weights
    if cfg.frozen_bn is not None:
        kw["frozen_bn"] = cfg.frozen_bn
    model = build_model(cfg.name, **kw)
    if cfg.weights:
        from instseg.engine.checkpoint import load_model_weights

        load_model_weights(model, cfg.weights, strict=False)
    return model


def model_meta(cfg: ImageTrainConfig, train_ds: Any) -> dict[str, Any]:
    """Everything needed to rebuild the model for inference from a weights file."""
    return {
        "task": "image",
        # rebuilt without any weight file, with the BatchNorm layout it was trained with
        "model": to_dict(cfg.model)
        | {
            "pretrained": False,
            "weights": None,
            "backbone_weights": None,
            "frozen_bn": cfg.model.pretrained
            if cfg.model.frozen_bn is None
            else cfg.model.frozen_bn,
        },
        "num_classes": len(train_ds.category_ids),
        "category_ids": list(train_ds.category_ids),
        "class_names": list(train_ds.category_names),
        "test_min_size": cfg.data.test_min_size,
        "max_size": cfg.data.max_size,
    }


def train(cfg: ImageTrainConfig, *, resume: bool = False, progress: bool = True) -> dict[str, Any]:
    """Train (resumable), evaluate at the end, write ``model.pt`` + ``metrics.json``.

    Returns the final evaluation metrics (on rank 0; {} on other ranks).
    """
    from instseg.data.build import build_train_loader
    from instseg.engine import distributed as dist
    from instseg.engine.checkpoint import Checkpointer, save_weights
    from instseg.engine.optim import build_optimizer, build_scheduler
    from instseg.engine.trainer import ProgressBar, TensorBoardWriter, Trainer, seed_everything

    distributed = dist.init_distributed()
    out_dir = Path(cfg.out_dir)
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    seed_everything(cfg.seed + dist.get_rank())
    device = resolve_device(cfg.device)
    if dist.is_main_process():
        out_dir.mkdir(parents=True, exist_ok=True)
        dump_config(cfg, out_dir / "config.yaml")
        splits = prepare_data(cfg.data, out_dir)
    dist.barrier()
    splits = prepare_data(cfg.data, out_dir)  # no-op when already generated
    train_ds, test_ds = build_datasets(cfg.data, splits)
    model = build_model_from_config(cfg.model, num_classes=len(train_ds.category_ids)).to(device)
    s = cfg.solver
    optimizer = build_optimizer(
        model, name=s.optimizer, lr=s.lr, weight_decay=s.weight_decay, momentum=s.momentum
    )
    scheduler = build_scheduler(
        optimizer,
        name=s.schedule,
        max_iters=s.max_iters,
        warmup_iters=s.warmup_iters,
        steps=tuple(s.steps),
    )
    checkpointer = Checkpointer(model, optimizer=optimizer, scheduler=scheduler, save_dir=out_dir)
    train_model = dist.wrap_ddp(model) if distributed else model

    def eval_fn() -> dict[str, Any]:
        return evaluate(
            model, test_ds, splits.test_json, amp=s.amp, out_dir=out_dir, progress=progress
        )

    callbacks: list[Any] = [ProgressBar(enabled=progress)]
    if dist.is_main_process():
        callbacks.append(TensorBoardWriter(out_dir / "tb"))
    trainer = Trainer(
        model=train_model,
        optimizer=optimizer,
        scheduler=scheduler,
        data_loader=[],  # set below, once the start iteration is known
        max_iters=s.max_iters,
        device=device,
        amp=s.amp,
        grad_clip=s.grad_clip,
        checkpointer=checkpointer,
        checkpoint_period=cfg.checkpoint_period,
        callbacks=callbacks,
        log_period=cfg.log_period,
        eval_fn=eval_fn,
        eval_period=cfg.eval_period,
        out_dir=out_dir,
    )
    start_iter = trainer.resume_or_load(resume=True) if resume else 0
    trainer.data_loader = build_train_loader(
        train_ds,
        batch_size=cfg.data.batch_size,
        num_workers=cfg.data.num_workers,
        seed=cfg.seed,
        start_iter=start_iter,
    )
    trainer.train()
    metrics = trainer.eval_results
    if dist.is_main_process():
        save_weights(model, out_dir / "model.pt", half=False, meta=model_meta(cfg, train_ds))
        atomic_write_json(out_dir / "metrics.json", metrics, indent=2)
    return metrics


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    dataset: Any,
    gt_json: Path,
    *,
    amp: str = "bf16",
    out_dir: Path | None = None,
    batch_size: int = 2,
    progress: bool = True,
) -> dict[str, Any]:
    """COCO bbox+segm metrics of ``model`` on ``dataset`` (distributed-aware)."""
    from instseg.data.build import build_test_loader
    from instseg.evaluation.coco import COCOEvaluator
    from instseg.evaluation.evaluator import inference_on_dataset

    loader = build_test_loader(dataset, batch_size=batch_size)
    evaluator = COCOEvaluator(gt_json, category_ids=list(dataset.category_ids), out_dir=out_dir)
    was_training = model.training
    model.eval()
    try:
        return inference_on_dataset(model, loader, evaluator, amp=amp == "bf16", progress=progress)
    finally:
        model.train(was_training)
