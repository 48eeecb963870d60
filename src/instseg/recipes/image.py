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

from instseg.config import to_dict
from instseg.engine.weights import WeightsMeta
from instseg.models.build import build_model_from_config
from instseg.recipes.image_config import DataConfig, EvalConfig, ImageTrainConfig
from instseg.recipes.runner import TrainingRun, resolve_device

__all__ = [
    "DataSplits",
    "prepare_data",
    "build_datasets",
    "build_model_from_config",
    "model_meta",
    "train",
    "evaluate",
    "eval_class_split",
    "resolve_device",
    "MASK_TARGETS",
]

MASK_TARGETS = ("visible", "amodal")

log = logging.getLogger(__name__)


@dataclass
class DataSplits:
    """Paths of a COCO-format train/test pair."""

    train_json: Path
    train_root: Path
    test_json: Path
    test_root: Path


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
        tag = f"{split}_n{num}_s{seed}_sz{s.image_size}_occ{s.occlusion:g}"
        tag += f"_o{s.min_objects}-{s.max_objects}"
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


def build_datasets(
    cfg: DataConfig, splits: DataSplits, *, mask_target: str = "visible"
) -> tuple[Any, Any]:
    """(train dataset, test dataset) with the config's transforms.

    Training transforms end with :class:`PartialMaskSupervision` when ``cfg.class_split`` is
    set (novel classes: boxes only) and with :class:`UseAmodalMasks` when ``mask_target`` is
    ``"amodal"`` (masks and boxes become amodal)."""
    from instseg.data.coco import CocoInstanceDataset
    from instseg.data.transforms import Compose, build_transforms

    if mask_target not in MASK_TARGETS:
        raise ValueError(f"model.mask_target must be one of {MASK_TARGETS}, got {mask_target!r}")
    train_tf = build_transforms(
        train=True,
        min_size=tuple(cfg.min_size),
        max_size=cfg.max_size,
        flip=cfg.flip > 0,
        flip_prob=cfg.flip,
    )
    test_tf = build_transforms(train=False, min_size=(cfg.test_min_size,), max_size=cfg.max_size)
    train_ds = CocoInstanceDataset(
        splits.train_json,
        splits.train_root,
        transforms=train_tf,
        filter_empty=cfg.filter_empty,
        skip_bad_images=cfg.skip_bad_images,
    )
    extra: list[Any] = []
    if cfg.class_split:
        from instseg.data.class_split import PartialMaskSupervision

        base, novel = _resolve_direction(cfg.class_split, splits.train_json)
        log.info(
            "class split %s: %d base, %d novel classes", cfg.class_split, len(base), len(novel)
        )
        extra.append(PartialMaskSupervision.from_category_ids(train_ds.category_ids, base))
    if mask_target == "amodal":
        from instseg.data.amodal_target import UseAmodalMasks

        if train_ds.layout == "coco":
            raise ValueError(
                f"{splits.train_json}: model.mask_target=amodal needs amodal masks "
                "(synthetic, KINS or COCOA layout); this is a plain COCO file"
            )
        extra.append(UseAmodalMasks())
    if extra:
        train_ds.transforms = Compose([train_tf, *extra])
    test_ds = CocoInstanceDataset(
        splits.test_json,
        splits.test_root,
        transforms=test_tf,
        category_ids=train_ds.category_ids,
    )
    return train_ds, test_ds


def eval_class_split(cfg: ImageTrainConfig, gt_json: Path) -> Any:
    """The class split the evaluation reports: ``evaluation.class_split`` or else
    ``data.class_split``. ``"voc"`` stays ``"voc"`` (:class:`COCOEvaluator` adds ``voc`` /
    ``non_voc``); a direction ("voc->non_voc", "base->novel", ...) becomes
    ``{"base": ids, "novel": ids}``; None when neither is set."""
    name = cfg.evaluation.class_split or cfg.data.class_split
    return resolve_eval_split(name, gt_json)


def resolve_eval_split(name: str | None, gt_json: str | Path) -> Any:
    """``None``/"none" -> None, "voc" -> "voc", a direction -> {"base": ids, "novel": ids}."""
    if not name or name == "none":
        return None
    if name == "voc":
        return "voc"
    base, novel = _resolve_direction(name, gt_json)
    return {"base": base, "novel": novel}


def _resolve_direction(name: str, gt_json: str | Path) -> tuple[list[int], list[int]]:
    from instseg.data.class_split import resolve_split
    from instseg.data.coco import detect_layout
    from instseg.utils.io import read_json

    data = read_json(gt_json)
    cats = data.get("categories") if isinstance(data, dict) else None
    if cats is None and isinstance(data, dict):
        if detect_layout(data.get("annotations") or []) == "cocoa":  # COCOA: no categories
            cats = [{"id": 1, "name": "thing"}, {"id": 2, "name": "stuff"}]
    if not isinstance(cats, list):
        raise ValueError(f"{gt_json}: no 'categories' to resolve class split {name!r}")
    try:
        return resolve_split(cats, name)
    except ValueError as e:
        raise ValueError(f"{gt_json}: {e}") from None


def model_meta(
    cfg: ImageTrainConfig, train_ds: Any, *, device: torch.device | str = "cpu"
) -> WeightsMeta:
    """Everything needed to rebuild the model for inference from a weights file, plus the
    precision it was trained in (see :func:`~instseg.utils.precision.precision_info`)."""
    from instseg.utils.precision import precision_info

    return WeightsMeta(
        task="image",
        # rebuilt without any weight file, with the BatchNorm layout it was trained with
        model=to_dict(cfg.model)
        | {
            "pretrained": False,
            "weights": None,
            "backbone_weights": None,
            "freeze": [],
            "frozen_bn": cfg.model.pretrained
            if cfg.model.frozen_bn is None
            else cfg.model.frozen_bn,
        },
        num_classes=len(train_ds.category_ids),
        category_ids=tuple(train_ds.category_ids),
        class_names=tuple(train_ds.category_names),
        test_min_size=cfg.data.test_min_size,
        max_size=cfg.data.max_size,
        precision=precision_info(cfg.solver.amp, device),
        training={"iterations": cfg.solver.max_iters, "seed": cfg.seed},
    )


def train(cfg: ImageTrainConfig, *, resume: bool = False, progress: bool = True) -> dict[str, Any]:
    """Train (resumable), evaluate at the end, write ``model.pt`` + ``metrics.json``.

    Returns the final evaluation metrics (on rank 0; {} on other ranks).
    """
    from instseg.data.build import build_train_loader
    from instseg.engine import distributed as dist
    from instseg.engine.optim import build_optimizer, build_scheduler

    distributed = dist.init_distributed()
    out_dir = Path(cfg.out_dir)
    run = TrainingRun(
        cfg, out_dir=out_dir, seed=cfg.seed + dist.get_rank(), device=cfg.device,
        amp=cfg.solver.amp, threads=cfg.threads, main_process=dist.is_main_process(),
    )  # fmt: skip
    device = run.device
    if dist.is_main_process():
        splits = prepare_data(cfg.data, out_dir)
    dist.barrier()
    splits = prepare_data(cfg.data, out_dir)  # no-op when already generated
    train_ds, test_ds = build_datasets(cfg.data, splits, mask_target=cfg.model.mask_target)
    class_split = eval_class_split(cfg, splits.test_json)
    model = build_model_from_config(cfg.model, num_classes=len(train_ds.category_ids)).to(device)
    if distributed and device.type == "cuda":
        # trainable BatchNorm (random-init backbones) synchronises statistics across GPUs;
        # frozen BN is folded into convs and untouched. SyncBatchNorm has no CPU kernel.
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
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
    channels_last = s.channels_last if s.channels_last is not None else device.type == "cpu"
    if channels_last:
        model = model.to(memory_format=torch.channels_last)

    def eval_fn() -> dict[str, Any]:
        return evaluate(
            model,
            test_ds,
            splits.test_json,
            amp=s.amp,
            out_dir=out_dir,
            progress=progress,
            mask_target=cfg.model.mask_target,
            eval_cfg=cfg.evaluation,
            class_split=class_split,
        )

    def make_loader(start_iter: int) -> Any:
        return build_train_loader(
            train_ds,
            batch_size=cfg.data.batch_size,
            num_workers=cfg.data.num_workers,
            seed=cfg.seed,
            start_iter=start_iter,
        )

    trainer = run.train(
        model=model,
        train_model=dist.wrap_ddp(model) if distributed else model,
        optimizer=optimizer,
        scheduler=scheduler,
        make_loader=make_loader,
        max_iters=s.max_iters,
        resume=resume,
        progress=progress,
        amp=s.amp,
        channels_last=channels_last,
        grad_clip=s.grad_clip,
        checkpoint_period=cfg.checkpoint_period,
        log_period=cfg.log_period,
        eval_fn=eval_fn,
        eval_period=cfg.eval_period,
    )
    metrics = trainer.eval_results
    run.save_weights(model, model_meta(cfg, train_ds, device=device), metrics=metrics)
    return metrics


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    dataset: Any,
    gt_json: Path,
    *,
    amp: str = "auto",
    out_dir: Path | None = None,
    batch_size: int = 2,
    progress: bool = True,
    mask_target: str = "visible",
    eval_cfg: EvalConfig | None = None,
    class_split: Any = None,
) -> dict[str, Any]:
    """COCO bbox+segm metrics of ``model`` on ``dataset`` (distributed-aware).

    ``gt_json`` may be in any layout of :mod:`instseg.data.coco`; the masks are scored against
    its ``mask_target`` masks (a converted GT is written to ``out_dir`` where needed, see
    :func:`instseg.evaluation.amodal.write_eval_gt`). ``class_split`` ("voc" or a dict name ->
    category ids) nests per-split metrics in each IoU type. ``eval_cfg.amodal`` /
    ``eval_cfg.occluded`` add the groups of :func:`~instseg.evaluation.amodal.evaluate_occlusion`
    (``amodal``, ``amodal_occluded``, ``occluded``, ``coco_occ``) next to ``bbox``/``segm``.
    """
    import tempfile

    if out_dir is None:
        with tempfile.TemporaryDirectory(prefix="instseg_eval_") as tmp:
            return evaluate(
                model,
                dataset,
                gt_json,
                amp=amp,
                out_dir=Path(tmp),
                batch_size=batch_size,
                progress=progress,
                mask_target=mask_target,
                eval_cfg=eval_cfg,
                class_split=class_split,
            )
    from instseg.data.build import build_test_loader
    from instseg.evaluation.amodal import evaluate_occlusion, write_eval_gt
    from instseg.evaluation.coco import COCOEvaluator
    from instseg.evaluation.evaluator import inference_on_dataset, is_main_process

    eval_cfg = eval_cfg or EvalConfig()
    out_dir = Path(out_dir)
    if is_main_process():
        out_dir.mkdir(parents=True, exist_ok=True)
    score_gt = write_eval_gt(gt_json, out_dir, target=mask_target)  # type: ignore[arg-type]
    loader = build_test_loader(dataset, batch_size=batch_size)
    evaluator = COCOEvaluator(
        score_gt, category_ids=list(dataset.category_ids), out_dir=out_dir, class_split=class_split
    )
    was_training = model.training
    model.eval()
    try:
        metrics = inference_on_dataset(model, loader, evaluator, amp=amp, progress=progress)
    finally:
        model.train(was_training)
    if metrics and (eval_cfg.amodal or eval_cfg.occluded):
        metrics.update(
            evaluate_occlusion(
                gt_json,
                out_dir / "results.json",
                work_dir=out_dir,
                target=mask_target,  # type: ignore[arg-type]
                amodal=eval_cfg.amodal,
                occluded=eval_cfg.occluded,
                coco_occ=eval_cfg.occluded,
                min_occlusion=eval_cfg.min_occlusion,
                min_overlap=eval_cfg.min_overlap,
                img_ids=list(dataset.image_ids),
                class_split=class_split,
            )
        )
    return metrics
