"""Image instance segmentation recipe: config -> data, model, trainer, evaluator.

Used by ``instseg train``, ``instseg eval`` and ``instseg demo``; each step is a small function
so the CLI stays thin and tests can call them directly.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from instseg.config import ConfigError, to_dict
from instseg.engine.weights import WeightsMeta
from instseg.models.build import build_model_from_config
from instseg.recipes.image_config import (
    DataConfig,
    EvalConfig,
    ImageTrainConfig,
    SyntheticConfig,
)
from instseg.recipes.runner import TrainingRun, resolve_device

__all__ = [
    "DataSplits",
    "prepare_data",
    "build_datasets",
    "build_model_from_config",
    "model_meta",
    "training_provenance",
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
    """Paths of a COCO-format train/test pair, plus the optional held-out ``unseen`` split
    (objects and backgrounds never seen in training, one class-agnostic category)."""

    train_json: Path
    train_root: Path
    test_json: Path
    test_root: Path
    unseen_json: Path | None = None
    unseen_root: Path | None = None


def prepare_data(cfg: DataConfig, out_dir: Path) -> DataSplits:
    """Return COCO paths; generate the built-in synthetic scenes when no train_json is given.

    Synthetic data is generated once per (settings) into ``cache_dir`` and reused. With
    ``synthetic.held_out`` sequences (and the shared DAVIS data present) a third split,
    ``unseen``, is generated from those sequences only (objects and backgrounds).
    """
    if cfg.train_json:
        test_json = cfg.test_json or cfg.train_json
        test_root = cfg.test_root or cfg.train_root
        return DataSplits(
            Path(cfg.train_json), Path(cfg.train_root), Path(test_json), Path(test_root)
        )
    from instseg.data.synthetic import generate_scenes

    s = cfg.synthetic
    cache = Path(cfg.cache_dir) if cfg.cache_dir else out_dir / "data"
    roots = _cutout_roots(s)
    scene_cfg, unseen_cfg = _scene_configs(s)
    # settings added after the first release name the cache folder by a digest of those that
    # differ from their defaults: old settings keep their old folder names, and a new option
    # left at its default changes no name
    changed = {
        k: v
        for k, v in to_dict(s).items()
        if k not in _LEGACY_SYNTHETIC_FIELDS and v != _DEFAULT_NEW_FIELDS.get(k)
    }
    suffix = ""
    if changed:
        digest = json.dumps(changed, sort_keys=True).encode()
        suffix = "_" + hashlib.sha1(digest).hexdigest()[:10]
    plan = [("train", s.num_train, s.seed_train), ("test", s.num_test, s.seed_test)]
    if s.held_out and roots:
        plan.append(("unseen", s.num_unseen, s.seed_unseen))
    elif s.held_out:
        log.warning("synthetic.held_out is set but no shared DAVIS data was found: no unseen split")
    banks: dict[str, Any] = {}
    splits = {}
    for split, num, seed in plan:
        tag = f"{split}_n{num}_s{seed}_sz{s.image_size}_occ{s.occlusion:g}"
        tag += f"_o{s.min_objects}-{s.max_objects}"
        tag += ("_cut" if roots else "") + suffix
        folder = cache / tag
        ann = folder / "annotations.json"
        if not ann.is_file():
            kind = "unseen" if split == "unseen" else "train"
            if roots and kind not in banks:
                banks[kind] = _cutout_bank(s, roots, unseen=kind == "unseen")
            log.info("generating %d synthetic %s scenes into %s", num, split, folder)
            generate_scenes(
                folder,
                num_images=num,
                seed=seed,
                config=unseen_cfg if split == "unseen" else scene_cfg,
                cutout_root=(roots[0] if len(roots) == 1 else roots) or None,
                bank=banks.get(kind),
            )
        splits[split] = (ann, folder)  # file_name in the JSON is "images/<id>.png"
    unseen = splits.get("unseen", (None, None))
    return DataSplits(
        splits["train"][0], splits["train"][1], splits["test"][0], splits["test"][1], *unseen
    )


# SyntheticConfig fields of the first release; the others change the cache folder's name
_LEGACY_SYNTHETIC_FIELDS = frozenset(
    ("num_train", "num_test", "seed_train", "seed_test", "image_size", "occlusion",
     "min_objects", "max_objects", "cutouts")
)  # fmt: skip
_DEFAULT_NEW_FIELDS = {
    k: v for k, v in to_dict(SyntheticConfig()).items() if k not in _LEGACY_SYNTHETIC_FIELDS
}


def _cutout_roots(s: SyntheticConfig) -> tuple[Path, ...]:
    from instseg.data.synthetic_cutouts import find_davis_roots, find_default_cutout_root

    if not s.cutouts:
        return ()
    if s.davis == "all":
        return find_davis_roots()
    if s.davis == "subset":
        root = find_default_cutout_root()
        return (root,) if root is not None else ()
    raise ConfigError(f"data.synthetic.davis must be 'subset' or 'all', got {s.davis!r}")


def _cutout_bank(s: SyntheticConfig, roots: tuple[Path, ...], *, unseen: bool) -> Any:
    """The training bank (every sequence but ``held_out``) or the unseen one (only those)."""
    from instseg.data.synthetic_cutouts import CutoutBank

    if unseen:
        return CutoutBank.load(
            roots, frames_per_sequence=s.frames_per_sequence, include=s.held_out,
            class_name="object",
        )  # fmt: skip
    return CutoutBank.load(
        roots,
        frames_per_sequence=s.frames_per_sequence,
        exclude=s.held_out,
        class_name="object" if s.class_agnostic else None,
    )


def _scene_configs(s: SyntheticConfig) -> tuple[Any, Any]:
    """(SceneConfig of the train and test splits, SceneConfig of the unseen split: only real
    held-out cutouts over held-out frames, no jitter, one category)."""
    from instseg.data.synthetic import SceneConfig
    from instseg.data.synthetic_cutouts import SpriteJitter

    scene = SceneConfig(
        image_size=(s.image_size, s.image_size),
        min_objects=s.min_objects,
        max_objects=s.max_objects,
        occlusion=s.occlusion,
        min_size=s.min_size,
        max_size=s.max_size,
        cutout_prob=s.cutout_prob,
        real_background_prob=s.real_background_prob,
        class_agnostic=s.class_agnostic,
        jitter=SpriteJitter() if s.jitter else None,
        scene_blur=s.scene_blur,
        shape_size_scale=s.shape_size_scale,
        same_class_overlap=s.same_class_overlap,
    )
    unseen = dataclasses.replace(
        scene, cutout_prob=1.0, real_background_prob=1.0, class_agnostic=True, jitter=None,
        scene_blur=0.0, same_class_overlap=0.0,
    )  # fmt: skip
    return scene, unseen


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
        training=training_provenance(cfg),
    )


def training_provenance(cfg: ImageTrainConfig) -> dict[str, Any]:
    """Plain-value provenance stored in the weights' meta: iterations, seed, EMA, and for the
    built-in synthetic data the generator settings, including the held-out sequences."""
    out: dict[str, Any] = {
        "iterations": cfg.solver.max_iters,
        "seed": cfg.seed,
        "ema_decay": cfg.solver.ema_decay,
    }
    if cfg.data.train_json:
        out["train_json"] = cfg.data.train_json
    else:
        out["synthetic"] = to_dict(cfg.data.synthetic)
        out["held_out"] = list(cfg.data.synthetic.held_out)
    return out


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
        model, name=s.optimizer, lr=s.lr, weight_decay=s.weight_decay, momentum=s.momentum,
        lr_factors={"backbone.bottom_up": s.backbone_lr_factor},
    )  # fmt: skip
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
    ema = None
    if s.ema_decay > 0:
        from instseg.engine.ema import ModelEMA

        ema = ModelEMA(model, decay=s.ema_decay, tau=s.ema_tau)
    eval_model = ema.module if ema is not None else model
    unseen_ds = build_unseen_dataset(cfg.data, splits)

    def eval_fn() -> dict[str, Any]:
        metrics = evaluate(
            eval_model,
            test_ds,
            splits.test_json,
            amp=s.amp,
            out_dir=out_dir,
            progress=progress,
            mask_target=cfg.model.mask_target,
            eval_cfg=cfg.evaluation,
            class_split=class_split,
        )
        if unseen_ds is not None and metrics:
            metrics["unseen"] = evaluate_unseen(
                eval_model, unseen_ds, splits, out_dir=out_dir / "unseen", amp=s.amp,
                progress=progress, num_classes=len(train_ds.category_ids),
                mask_target=cfg.model.mask_target,
            )  # fmt: skip
        return metrics

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
        ema=ema,
    )
    metrics = trainer.eval_results
    run.save_weights(eval_model, model_meta(cfg, train_ds, device=device), metrics=metrics)
    return metrics


# occlusion levels of the unseen split's breakdown: "occluded" (> 0.3) is the primary of the
# occlusion-aware heads' benchmarks
UNSEEN_OCCLUSION_LEVELS: tuple[tuple[str, float, float], ...] = (
    ("none (<= 0.1)", -1.0, 0.1),
    ("partial (0.1-0.3]", 0.1, 0.3),
    ("occluded (> 0.3)", 0.3, 1.0),
)


def build_unseen_dataset(cfg: DataConfig, splits: DataSplits) -> Any:
    """The ``unseen`` split as a test dataset (test-time resize), or None when there is none."""
    if splits.unseen_json is None:
        return None
    from instseg.data.coco import CocoInstanceDataset
    from instseg.data.transforms import build_transforms

    tf = build_transforms(train=False, min_size=(cfg.test_min_size,), max_size=cfg.max_size)
    return CocoInstanceDataset(splits.unseen_json, splits.unseen_root, transforms=tf)


def evaluate_unseen(
    model: torch.nn.Module,
    dataset: Any,
    splits: DataSplits,
    *,
    out_dir: Path,
    num_classes: int,
    amp: str = "auto",
    progress: bool = True,
    mask_target: str = "visible",
) -> dict[str, Any]:
    """Class-agnostic COCO metrics on the unseen split (every predicted class counts as
    ``object``): ``bbox`` / ``segm`` groups, ``occluded`` (instances more than 30% occluded)
    and ``segm_by_occlusion`` (:data:`UNSEEN_OCCLUSION_LEVELS`), all scored against the
    ``mask_target`` masks and boxes (an amodal model against the amodal GT)."""
    from instseg.evaluation.amodal import to_coco_gt
    from instseg.evaluation.breakdown import occlusion_level_metrics
    from instseg.utils.io import read_json

    assert splits.unseen_json is not None
    metrics = evaluate(
        model, dataset, splits.unseen_json, amp=amp, out_dir=out_dir, progress=progress,
        eval_cfg=EvalConfig(occluded=True, min_occlusion=0.3), mask_target=mask_target,
        category_ids=[1] * num_classes,
    )  # fmt: skip
    if metrics:
        gt = to_coco_gt(read_json(splits.unseen_json), target=mask_target)  # type: ignore[arg-type]
        metrics["segm_by_occlusion"] = occlusion_level_metrics(
            gt, out_dir / "results.json",
            levels=UNSEEN_OCCLUSION_LEVELS, img_ids=list(dataset.image_ids),
        )  # fmt: skip
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
    category_ids: list[int] | None = None,
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
                category_ids=category_ids,
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
        score_gt,
        category_ids=list(category_ids or dataset.category_ids),
        out_dir=out_dir,
        class_split=class_split,
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
