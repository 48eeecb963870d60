"""Config dataclasses of the VOIN recipe (:mod:`instseg.recipes.inpainting`,
``instseg train configs/voin_davis.yaml``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from instseg.data.davis_splits import VOIN_TRAIN

__all__ = [
    "STAGES",
    "InpaintingDataConfig",
    "InpaintingTrainConfig",
    "LeftoverDataConfig",
    "StageConfig",
    "TINY_OVERRIDES",
]

STAGES = ("shape", "flow", "generator")  # trained in this order, seeded seed, seed+1, seed+2


@dataclass
class InpaintingDataConfig:
    root: str = ""  # DAVIS root ("" = the shared DAVIS-2016 subset beside the repository)
    # more DAVIS roots searched for `sequences` after `root` (e.g. the rest of DAVIS-2016
    # train: ../shared/data/davis2016-train-rest)
    extra_roots: list[str] = field(default_factory=list)
    # training sequences; the default leaves out boat, bus and elephant (held out for
    # scripts/voin_baselines.py and scripts/repro_voin.py)
    sequences: list[str] = field(default_factory=lambda: list(VOIN_TRAIN))
    frames_per_seq: int = 40  # first N frames per sequence (0: all)
    clip_len: int = 5  # frames per training clip
    size: int = 128  # frame height after resizing (a stage's `size` overrides it)
    batch: int = 2  # clips per step


@dataclass
class LeftoverDataConfig:
    """The leftover generator's cached training clips (``generator_mode: leftover``,
    :mod:`instseg.recipes.inpainting_leftovers`): ``data.sequences`` occluded like the card's
    evaluation split, propagated + Telea at ``prop_height``, cropped to the object box with its
    longer side ``generator.size``."""

    cache_dir: str = ""  # "" = <out_dir>/leftover_cache
    clips_per_sequence: int = 40
    clip_frames: int = 20  # frames per propagated clip (the card's split: 20)
    prop_height: int = 240  # frame height the clips are propagated at
    synthetic_prob: float = 0.5  # synthetic occluder, else another sequence's object cutout
    # what Telea draws on for the leftovers (InpaintOptions.leftover_context): the object's own
    # pixels (occlusion-aware, inference's default) or every known pixel ("frame")
    context: str = "object"
    # the cache's random draw (occluders, clips); None: the run's seed. Fixing it lets runs of
    # several training seeds share one cache (same data, seed-dependent init and batches)
    seed: int | None = None


@dataclass
class StageConfig:
    iters: int = 1000
    size: int = 0  # frame height of this stage (0: data.size)


@dataclass
class InpaintingTrainConfig:
    task: str = "inpainting"  # which recipe `instseg train` runs (must be "inpainting")
    # shape | flow | generator: train that stage into <out_dir>/<stage>/; all: the three in
    # turn, then pack; pack: pack <pack_from or out_dir>/{shape,flow,generator}/model_final.pth
    stage: str = "all"
    variant: str = "paper"  # network sizes: paper | small (instseg.models.inpainting.voin)
    # smoke run: small networks, 48-pixel frames, 8 frames of the first 2 sequences, 3-frame
    # clips (overrides variant, the sizes, data.frames_per_seq / clip_len / sequences)
    tiny: bool = False
    data: InpaintingDataConfig = field(default_factory=InpaintingDataConfig)
    shape: StageConfig = field(default_factory=StageConfig)
    flow: StageConfig = field(default_factory=StageConfig)
    generator: StageConfig = field(default_factory=StageConfig)
    # hole: the paper's generator on whole occluded regions (data.* clips, generator.size = frame
    # height); leftover: the residual generator on cached propagation leftovers (leftover.*,
    # generator.size = the crops' longer side), see instseg.models.inpainting.generator
    generator_mode: str = "hole"
    leftover: LeftoverDataConfig = field(default_factory=LeftoverDataConfig)
    adv_start: int = 0  # generator iteration the adversarial terms start at (before: L1 only)
    # Adam betas of the generator stage (G and D); [0.0, 0.99] is the GAN setting the shipped
    # generator trained with
    betas: list[float] = field(default_factory=lambda: [0.0, 0.99])
    lr: float = 1e-4  # Adam, every stage
    seed: int = 0  # stage i of (shape, flow, generator) is seeded seed + i
    # autocast of the generator stage's discriminators (auto: bf16 only where the hardware runs
    # it natively); the shape and flow stages train in fp32
    amp: str = "auto"
    device: str = "auto"  # auto | cpu | cuda
    out_dir: str = "runs/voin"  # <stage>/ folders and the packed weights file
    pack_from: str = ""  # folder holding shape/, flow/, generator/ for packing ("" = out_dir)
    # weights file supplying the stages without a model_final.pth in the pack folder (e.g. the
    # shipped voin_default.pt's shape and flow networks under a newly trained generator)
    pack_base: str = ""
    weights_name: str = "voin.pt"  # packed file name inside that folder
    full_precision: bool = False  # pack fp32 instead of fp16
    # the stage switches the packed file recommends (model.defaults: what `instseg inpaint`
    # runs unless told otherwise), e.g. {use_flow_net: false, use_generator: true}; {} = none
    # recorded (inference then runs every stage the file has)
    pack_defaults: dict[str, bool] = field(default_factory=dict)
    checkpoint_period: int = 0  # resumable checkpoint every N iterations (0: only the end)
    log_period: int = 10
    threads: int = 0  # torch CPU threads (0 = leave torch's default)


# Overrides that shrink the recipe to a run of seconds (tiny networks and data, 2 iterations per
# stage, one clip per step): the CLI test and `scripts/train_voin.py --tiny` smoke runs.
TINY_OVERRIDES = [
    "tiny=true", "shape.iters=2", "flow.iters=2", "generator.iters=2", "data.batch=1",
    "device=cpu", "threads=1",
]  # fmt: skip
