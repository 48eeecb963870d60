"""Config dataclasses for image instance segmentation (train / eval / demo).

YAML files under ``configs/`` set any subset of these fields; ``key.sub=value`` overrides on the
command line are type-checked (see :mod:`instseg.config`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from instseg.models.build import ModelConfig

__all__ = [
    "DataConfig",
    "EvalConfig",
    "ImageTrainConfig",
    "ModelConfig",
    "SolverConfig",
    "SyntheticConfig",
]


@dataclass
class SyntheticConfig:
    num_train: int = 1200  # images in the generated training split
    num_test: int = 200  # images in the held-out split
    seed_train: int = 0  # generator seed of the training split
    seed_test: int = 1000  # generator seed of the held-out split (different scenes)
    image_size: int = 256  # square image side in pixels
    occlusion: float = 0.5  # 0 = objects rarely overlap, 1 = heavy occlusion
    min_objects: int = 2
    max_objects: int = 6
    cutouts: bool = True  # paste real object cutouts from ../shared/data when present
    # which shared DAVIS-2016 folders give cutouts and backgrounds: "subset" (9 sequences) or
    # "all" (all 30: subset + rest)
    davis: str = "subset"
    frames_per_sequence: int = 8  # evenly spaced frames read per sequence (pose/scale variety)
    # sequences whose objects and frames never enter the training scenes; when given, an
    # "unseen" split is made only of them (real held-out objects over held-out backgrounds,
    # scored class-agnostically) and evaluated beside the in-distribution test split
    held_out: list[str] = field(default_factory=list)
    num_unseen: int = 200
    seed_unseen: int = 2000
    class_agnostic: bool = False  # one category "object" (objectness) instead of the classes
    cutout_prob: float = 0.4  # share of objects that are real cutouts
    real_background_prob: float = 0.7  # share of images on a crop of a real frame
    min_size: float = 0.15  # object's longer side / image's shorter side, drawn in [min, max]
    max_size: float = 0.45
    shape_size_scale: float = 1.0  # procedural shapes' size relative to that range
    jitter: bool = False  # colour / contrast / saturation / blur jitter of each pasted cutout
    scene_blur: float = 0.0  # probability of blurring a whole training image
    # probability that an object is a look-alike of an earlier one (same class, same texture or
    # DAVIS sequence) placed onto it: the same-class overlaps BCNet targets
    same_class_overlap: float = 0.0


@dataclass
class DataConfig:
    # COCO JSON + image folder; leave train_json empty to use the built-in synthetic scenes
    train_json: str = ""
    train_root: str = ""
    test_json: str = ""
    test_root: str = ""
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    cache_dir: str = ""  # where synthetic data is generated ("" = <out_dir>/data)
    min_size: list[int] = field(default_factory=lambda: [224, 256, 288])  # train short sides
    max_size: int = 512  # longest side cap (train and test)
    test_min_size: int = 256  # test short side
    flip: float = 0.5  # horizontal flip probability (train)
    batch_size: int = 8
    num_workers: int = 0  # DataLoader workers per process
    filter_empty: bool = True  # drop training images without annotations
    skip_bad_images: bool = True  # skip (and count) unreadable training images instead of failing
    # partially supervised training (CPMask): "voc->non_voc" | "non_voc->voc" | "base->novel";
    # novel classes keep box supervision only; evaluation adds "base" / "novel" AP
    class_split: str | None = None


@dataclass
class SolverConfig:
    optimizer: str = "adamw"  # adamw | sgd
    lr: float = 1e-3
    weight_decay: float = 1e-4
    momentum: float = 0.9  # SGD only
    schedule: str = "cosine"  # cosine | step | constant
    steps: list[int] = field(default_factory=list)  # step schedule milestones (iterations)
    max_iters: int = 1500
    warmup_iters: int = 100
    grad_clip: float | None = 10.0  # max gradient norm (None = off)
    # learning-rate factor of the bottom-up backbone (e.g. 0.1: the ImageNet-pretrained
    # EfficientNet is fine-tuned 10x slower than the new FPN and heads; at the full rate of
    # 2e-3 its last stage's ReLUs died and C5 became constant for every image)
    backbone_lr_factor: float = 1.0
    # exponential moving average of the weights (0 = off): evaluated and saved instead of the
    # raw weights; the decay ramps up as decay * (1 - exp(-updates / ema_tau)) (timm/Ultralytics)
    ema_decay: float = 0.0
    ema_tau: float = 2000.0
    # auto | bf16 | fp16 | none: auto = bf16 on a CPU with native bf16, fp32 on other CPUs,
    # bf16/fp16 on CUDA by capability (instseg.utils.precision); fp16 only on CUDA
    amp: str = "auto"
    # NHWC memory layout for model and images; None: on for CPU, where it makes a training step
    # 1.6x faster in fp32 and in bf16 (measured on Zen 4 and with AVX2 only; off for the video
    # recipe unless set)
    channels_last: bool | None = None


@dataclass
class EvalConfig:
    amodal: bool = False  # also report amodal AP (GT segmentation replaced by the amodal mask)
    occluded: bool = False  # also report AP on occluded instances and on the COCO-OCC images
    min_occlusion: float = 0.1  # an instance is occluded when 1 - visible/amodal area > this
    # COCO-OCC images: some pair of boxes has IoU >= this (also the occluded-instance rule for
    # plain COCO data, which has no amodal masks)
    min_overlap: float = 0.2
    # AP per class split without changing training: "voc" or a data.class_split direction
    # (e.g. the fully supervised "oracle" of survey Table 4.1); default: data.class_split
    class_split: str | None = None


@dataclass
class ImageTrainConfig:
    task: str = "image"  # which recipe `instseg train` runs (must be "image" here)
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    solver: SolverConfig = field(default_factory=SolverConfig)
    evaluation: EvalConfig = field(default_factory=EvalConfig)
    seed: int = 0
    out_dir: str = "runs/image"  # checkpoints, logs, metrics
    device: str = "auto"  # auto | cpu | cuda
    eval_period: int = 0  # evaluate every N iterations (0 = only at the end)
    checkpoint_period: int = 500  # write a resumable checkpoint every N iterations
    log_period: int = 20
    threads: int = 0  # torch CPU threads (0 = leave torch's default)
