"""PCAN video recipe: config -> YouTube-VIS videos -> (key, reference) pairs -> PCAN ->
Trainer -> YouTube-VIS AP on held-out videos; writes an ``instseg track``-ready ``model.pt``.

Training data: every annotated frame of every video with an annotated earlier frame in reach is
a key frame (a few times, with fresh references), its reference drawn uniformly among the
``max_gap`` frames *before* it (:func:`~instseg.data.clips.sample_frame_pairs` with
``past_only``; ``max_gap`` defaults to the model's ``memory_length``, the frames inference
keeps, so training sees every gap the online model reads and never a future frame); the
``memory_frames`` extra memory frames are drawn between the reference and ``max_gap`` frames
before the key (:func:`~instseg.data.clips.past_memory_frames`). All frames of a sample get the
*same* random transform (one seed), so an object's track id, position and scale stay consistent
between them. The stream is the engine's seeded :class:`TrainingSampler`, so a resumed run sees
exactly the pairs and augmentations it would have seen.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from instseg.config import to_dict
from instseg.data.build import build_train_loader, collate_samples
from instseg.data.clips import (
    FramePair,
    annotated_frames,
    memory_frames,
    past_memory_frames,
    sample_frame_pairs,
)
from instseg.data.transforms import Compose, build_transforms
from instseg.data.ytvis import Video, YTVISDataset, class_agnostic, load_ytvis_dataset
from instseg.engine.weights import WeightsMeta
from instseg.models.build import build_video_model_from_config
from instseg.models.video.cross_attention import default_pcam_settings
from instseg.models.video.pcan import PCAN
from instseg.models.video.tracker import Tracker
from instseg.recipes.runner import TrainingRun
from instseg.recipes.video_config import VideoDataConfig, VideoTrainConfig
from instseg.structures.batch import ClipBatch
from instseg.utils.image import read_image

__all__ = [
    "VideoSplits",
    "VideoPairDataset",
    "collate_clips",
    "prepare_video_data",
    "build_pair_dataset",
    "train_max_gap",
    "build_clip_loader",
    "build_video_model_from_config",
    "video_model_meta",
    "train_video",
    "evaluate_video",
    "load_video_data",
    "load_test_split",
    "corrupted_subsets",
]

log = logging.getLogger(__name__)


@dataclass
class VideoSplits:
    """YouTube-VIS JSON + frame root of the train split and (optionally) the test split."""

    train_json: Path
    train_root: Path
    test_json: Path | None
    test_root: Path | None


class VideoPairDataset:
    """(key, reference) frame pairs of YouTube-VIS videos.

    ``get(i, generator)`` -> ``{"key": sample, "reference": sample}``, each sample a dict as
    :func:`collate_samples` takes (``image`` uint8 (3, h, w), ``instances`` with ``track_ids``
    = annotation ids, ``labels`` contiguous, ``masks`` bool (N, h, w); ``file_name``,
    ``orig_size``). Crowd tracks are dropped. ``__getitem__((i, seed))`` seeds the generator
    (the form :class:`TrainingSampler` keys take). With ``memory_frames``, ``"memory"`` holds
    that many earlier frames, oldest first: with ``max_gap`` and a past reference
    :func:`past_memory_frames` (between the reference and ``max_gap`` before the key), else
    :func:`memory_frames` (continuing from the reference away from the key).
    """

    def __init__(
        self,
        videos: Sequence[Video],
        pairs: Sequence[FramePair],
        *,
        label_of: dict[int, int],
        transforms: Compose | None,
        memory_frames: int = 0,
        max_gap: int | None = None,
    ) -> None:
        if not pairs:
            raise ValueError("VideoPairDataset: no frame pairs (are any frames annotated?)")
        if memory_frames < 0:
            raise ValueError(f"memory_frames must be >= 0, got {memory_frames}")
        self.videos, self.pairs = list(videos), list(pairs)
        self.label_of, self.transforms = label_of, transforms
        self.memory_frames, self.max_gap = memory_frames, max_gap

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, dict[str, Any]]:
        if isinstance(key, tuple):
            return self.get(key[0], generator=torch.Generator().manual_seed(key[1]))
        return self.get(key)

    def get(
        self, index: int, *, generator: torch.Generator | None = None
    ) -> dict[str, dict[str, Any]]:
        p = self.pairs[index]
        seed = int(torch.randint(2**62, (), generator=generator))
        video = self.videos[p.video]
        out = {
            "key": self._frame(video, p.key, seed),
            "reference": self._frame(video, p.reference, seed),
        }
        if self.memory_frames:
            if self.max_gap is not None and p.reference < p.key:
                rng = np.random.default_rng(seed)
                ts = past_memory_frames(p, self.memory_frames, max_gap=self.max_gap, rng=rng)
            else:
                ts = memory_frames(p, self.memory_frames, len(video.frame_paths))
            out["memory"] = [self._frame(video, t, seed) for t in ts]
        return out

    def _frame(self, video: Video, t: int, seed: int) -> dict[str, Any]:
        array = read_image(video.frame_paths[t])
        if array.shape[:2] != (video.height, video.width):
            raise ValueError(
                f"{video.frame_paths[t]}: frame is {array.shape[1]}x{array.shape[0]}, the JSON "
                f"says {video.width}x{video.height} (video '{video.name}')"
            )
        image = torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))
        inst = video.instances(t, label_of=self.label_of)
        crowd = inst.extra.get("iscrowd")
        if crowd is not None and bool(crowd.any()):
            inst = inst[crowd == 0]
        if self.transforms is not None:
            image, inst = self.transforms(
                image, inst, generator=torch.Generator().manual_seed(seed)
            )
        return {
            "image": image,
            "instances": inst,
            "file_name": video.file_names[t],
            "orig_size": (video.height, video.width),
        }


def collate_clips(samples: Sequence[dict[str, dict[str, Any]]]) -> ClipBatch:
    """Pair samples -> :class:`ClipBatch` of two :class:`Batch` es (B pairs; images
    (B, 3, Hp, Wp) float32 0..255, targets with ``track_ids``)."""
    num = len(samples[0].get("memory", ()))
    return ClipBatch(
        key=collate_samples([s["key"] for s in samples]),
        reference=collate_samples([s["reference"] for s in samples]),
        memory=tuple(collate_samples([s["memory"][j] for s in samples]) for j in range(num)),
    )


def prepare_video_data(cfg: VideoDataConfig, out_dir: Path) -> VideoSplits:
    """YouTube-VIS paths; generates the synthetic videos (once per settings) when no
    ``train_json`` is given."""
    if cfg.train_json:
        test = (
            (Path(cfg.test_json), Path(cfg.test_root or cfg.train_root)) if cfg.test_json else None
        )
        return VideoSplits(
            Path(cfg.train_json), Path(cfg.train_root), *(test if test else (None, None))
        )
    from instseg.data.synthetic import SceneConfig
    from instseg.data.synthetic_cutouts import find_default_cutout_root
    from instseg.data.synthetic_video import VideoConfig, generate_videos

    s = cfg.synthetic
    cache = Path(cfg.cache_dir) if cfg.cache_dir else out_dir / "data"
    cutouts = find_default_cutout_root() if s.cutouts else None
    scene = SceneConfig(
        image_size=(s.image_size, s.image_size),
        min_objects=s.min_objects,
        max_objects=s.max_objects,
        occlusion=s.occlusion,
    )
    vcfg = VideoConfig(
        scene=scene, num_frames=s.num_frames, max_speed=s.max_speed, effects=s.effects
    )
    found = {}
    for split, num, seed in (
        ("train", s.num_train, s.seed_train),
        ("test", s.num_test, s.seed_test),
    ):
        tag = (
            f"video_{split}_n{num}_f{s.num_frames}_s{seed}_sz{s.image_size}_occ{s.occlusion:g}"
            f"_o{s.min_objects}-{s.max_objects}_v{s.max_speed:g}" + ("_cut" if cutouts else "")
        )
        if cutouts and s.cutout_exclude:
            tag += "_without-" + "-".join(sorted(s.cutout_exclude))
        if s.effects.active:
            tag += "_fx" + _digest(to_dict(s.effects))
        folder = cache / tag
        if not (folder / "annotations.json").is_file():
            log.info("generating %d synthetic %s videos into %s", num, split, folder)
            generate_videos(
                folder,
                num_videos=num,
                seed=seed,
                cutout_root=cutouts,
                cutout_exclude=s.cutout_exclude,
                config=vcfg,
            )
        found[split] = (folder / "annotations.json", folder)
    return VideoSplits(*found["train"], *found["test"])


def build_pair_dataset(
    data: YTVISDataset,
    cfg: VideoDataConfig,
    *,
    seed: int,
    repeats: int = 4,
    memory_length: int = 8,
) -> VideoPairDataset:
    """Training pairs: each annotated frame with an annotated frame among the ``max_gap``
    before it is a key ``repeats`` times (past references drawn with seeds ``seed .. seed +
    repeats - 1``), with the config's train transforms. ``memory_length``: the model's PCAM
    memory T, the gap limit when ``cfg.max_gap`` is 0."""
    valid = annotated_frames(data.videos)
    gap = train_max_gap(cfg, memory_length)
    pairs: list[FramePair] = []
    for r in range(repeats):
        pairs += sample_frame_pairs(
            data.videos, max_gap=gap, seed=seed + r, valid=valid, past_only=True
        )
    tf = build_transforms(
        train=True, min_size=tuple(cfg.min_size), max_size=cfg.max_size, flip_prob=cfg.flip
    )
    label_of = {c: i for i, c in enumerate(data.categories)}
    return VideoPairDataset(
        data.videos, pairs, label_of=label_of, transforms=tf, memory_frames=cfg.memory_frames,
        max_gap=gap,
    )  # fmt: skip


def train_max_gap(cfg: VideoDataConfig, memory_length: int) -> int:
    """The largest key - reference gap in training: ``cfg.max_gap``, or (0) the model's
    ``memory_length``, the frames the online model keeps."""
    if cfg.max_gap < 0 or memory_length < 1:
        raise ValueError(f"need max_gap >= 0 and memory_length >= 1, got {cfg.max_gap}, "
                         f"{memory_length}")  # fmt: skip
    return cfg.max_gap or memory_length


def build_clip_loader(
    dataset: VideoPairDataset,
    *,
    batch_size: int,
    num_workers: int = 0,
    seed: int = 0,
    start_iter: int = 0,
) -> DataLoader:
    """Infinite, seeded, rank-sharded loader of :class:`ClipBatch` (``batch_size`` pairs per
    step); iteration ``i`` with ``start_iter=s`` equals iteration ``s + i`` with 0."""
    return build_train_loader(
        dataset,
        batch_size=batch_size,
        num_workers=num_workers,
        seed=seed,
        start_iter=start_iter,
        collate_fn=collate_clips,
    )


def video_model_meta(
    cfg: VideoTrainConfig,
    data: YTVISDataset,
    *,
    device: torch.device | str = "cpu",
    pcam: dict[str, Any] | None = None,
    instance_rois: str = "mask",
) -> WeightsMeta:
    """Everything :func:`~instseg.inference.video_predictor.load_video_model` needs, plus the
    training precision. ``pcam``: the trained model's ``pcam.settings()`` (default: the
    module's defaults), recorded as ``training["pcam"]``; ``instance_rois``: the model's
    instance RoI pooling (``training["instance_rois"]``)."""
    if pcam is None:
        pcam = default_pcam_settings()
    from instseg.utils.precision import precision_info

    frozen = cfg.model.pretrained if cfg.model.frozen_bn is None else cfg.model.frozen_bn
    return WeightsMeta(
        task="video",
        model=to_dict(cfg.model)
        | {"pretrained": False, "weights": None, "image_weights": None, "frozen_bn": frozen},
        num_classes=len(data.categories),
        category_ids=tuple(data.categories),
        class_names=tuple(data.categories.values()),
        test_min_size=cfg.data.test_min_size,
        max_size=cfg.data.max_size,
        precision=precision_info(cfg.solver.amp, device),
        training={
            "iterations": cfg.solver.max_iters,
            "seed": cfg.seed,
            "pcam": pcam,
            "instance_rois": instance_rois,
            "max_gap": train_max_gap(cfg.data, cfg.model.memory_length),
            "past_only": True,
        },  # fmt: skip
    )


def train_video(
    cfg: VideoTrainConfig, *, resume: bool = False, progress: bool = True
) -> dict[str, Any]:
    """Train PCAN (resumable), evaluate YouTube-VIS AP on the test split at the end, write
    ``out_dir/model.pt`` (weights + meta) and ``metrics.json``. Single process."""
    from instseg.engine.optim import build_optimizer, build_scheduler

    out_dir = Path(cfg.out_dir)
    run = TrainingRun(
        cfg, out_dir=out_dir, seed=cfg.seed, device=cfg.device, amp=cfg.solver.amp,
        threads=cfg.threads,
    )  # fmt: skip
    device = run.device
    splits = prepare_video_data(cfg.data, out_dir)
    train_data = load_video_data(splits.train_json, splits.train_root, cfg.data)
    train_ds = build_pair_dataset(
        train_data, cfg.data, seed=cfg.seed, memory_length=cfg.model.memory_length
    )
    model = build_video_model_from_config(cfg.model, num_classes=len(train_data.categories))
    model = model.to(device)
    if cfg.solver.channels_last:
        model = model.to(memory_format=torch.channels_last)
    s = cfg.solver
    optimizer = build_optimizer(
        model, name=s.optimizer, lr=s.lr, weight_decay=s.weight_decay, momentum=s.momentum
    )
    scheduler = build_scheduler(
        optimizer, name=s.schedule, max_iters=s.max_iters, warmup_iters=s.warmup_iters,
        steps=tuple(s.steps),
    )  # fmt: skip

    def eval_fn() -> dict[str, Any]:
        if splits.test_json is None:
            return {}
        test = load_video_data(splits.test_json, splits.test_root or ".", cfg.data)
        return evaluate_video(
            model, test, category_ids=list(train_data.categories), min_size=cfg.data.test_min_size,
            max_size=cfg.data.max_size, amp=s.amp, max_videos=cfg.eval_videos or None,
            out_dir=out_dir, tracker=cfg.tracker, frame_subsets=corrupted_subsets(splits),
        )  # fmt: skip

    def make_loader(start_iter: int) -> DataLoader:
        return build_clip_loader(
            train_ds, batch_size=cfg.data.batch_size, num_workers=cfg.data.num_workers,
            seed=cfg.seed, start_iter=start_iter,
        )  # fmt: skip

    trainer = run.train(
        model=model, optimizer=optimizer, scheduler=scheduler, make_loader=make_loader,
        max_iters=s.max_iters, resume=resume, progress=progress, amp=s.amp,
        grad_clip=s.grad_clip, channels_last=bool(s.channels_last),
        checkpoint_period=cfg.checkpoint_period, log_period=cfg.log_period, eval_fn=eval_fn,
        eval_period=cfg.eval_period,
    )  # fmt: skip
    metrics = trainer.eval_results
    meta = video_model_meta(
        cfg, train_data, device=device, pcam=model.pcam.settings(),
        instance_rois=model.instance_rois,
    )  # fmt: skip
    run.save_weights(model, meta, metrics=metrics)
    return metrics


def corrupted_subsets(splits: VideoSplits) -> dict[str, dict[int, list[int]]] | None:
    """``{"corrupted": {video id: frames}, "patched": ...}`` of a test split made with video
    effects (its JSON lists ``corrupted_frames``), else None."""
    from instseg.evaluation.vis import read_frame_subset

    if splits.test_json is None:
        return None
    try:
        return {
            "corrupted": read_frame_subset(splits.test_json, "corrupted_frames"),
            "patched": read_frame_subset(splits.test_json, "patched_frames"),
        }
    except ValueError:  # no effects
        return None


def _digest(d: dict[str, Any]) -> str:
    import hashlib
    import json

    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:8]


def load_video_data(json_path: Path, root: Path | str, cfg: VideoDataConfig) -> YTVISDataset:
    """A YouTube-VIS split as the recipe trains/evaluates on it (class-agnostic if configured)."""
    data = load_ytvis_dataset(json_path, root)
    return class_agnostic(data) if cfg.class_agnostic else data


def load_test_split(cfg: VideoTrainConfig) -> tuple[VideoSplits, YTVISDataset]:
    """The held-out split of a training config (synthetic videos generated into, or found in,
    the data cache) and its videos as the recipe evaluates them; ``ValueError`` when the config
    has no test split."""
    splits = prepare_video_data(cfg.data, Path(cfg.out_dir))
    if splits.test_json is None:
        raise ValueError("the config has no test split (data.test_json or data.synthetic)")
    return splits, load_video_data(splits.test_json, splits.test_root or ".", cfg.data)


@torch.no_grad()
def evaluate_video(
    model: PCAN,
    gt: YTVISDataset,
    *,
    category_ids: Sequence[int],
    min_size: int,
    max_size: int,
    amp: str = "auto",
    max_videos: int | None = None,
    out_dir: Path | None = None,
    tracker: Tracker | None = None,
    frame_subsets: dict[str, dict[int, list[int]]] | None = None,
) -> dict[str, Any]:
    """YouTube-VIS AP / AR (percent) of online PCAN tracking on the first ``max_videos``
    videos of ``gt`` (frames at the video's size; see :class:`YTVISEvaluator`); ``tracker``:
    association settings (default: the model's); ``frame_subsets``: per-frame mask AP on these
    frames too (``metrics["frames"]``, e.g. from :func:`corrupted_subsets`)."""
    from instseg.evaluation.vis import YTVISEvaluator
    from instseg.inference.video_predictor import VideoPredictor

    evaluator = YTVISEvaluator(
        gt, category_ids=category_ids, out_dir=out_dir, frame_subsets=frame_subsets
    )
    predictor = VideoPredictor(
        model, min_size=min_size, max_size=max_size, amp=amp, tracker=tracker
    )
    was_training = model.training
    try:
        for video in gt.videos[:max_videos]:
            predictor.reset()
            for t, path in enumerate(video.frame_paths):
                inst = predictor(read_image(path))
                evaluator.process_frame(video.file_names[t], inst)
        return evaluator.evaluate()
    finally:
        model.train(was_training)
