"""Config dataclasses for PCAN video training (``scripts/train_pcan.py``, ``instseg track``).

YAML files under ``configs/`` (e.g. ``configs/pcan_synthetic.yaml``) set any subset of these
fields; ``key.sub=value`` overrides are type-checked (see :mod:`instseg.config`). The solver is
the image recipe's :class:`~instseg.recipes.image_config.SolverConfig`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from instseg.data.video_effects import VideoEffects
from instseg.models.build import VideoModelConfig
from instseg.models.video.tracker import Tracker
from instseg.recipes.image_config import SolverConfig


@dataclass
class SyntheticVideoConfig:
    num_train: int = 60  # videos in the generated training split
    num_test: int = 8  # videos in the held-out split
    num_frames: int = 12  # frames per video
    seed_train: int = 0  # generator seed of the training split
    seed_test: int = 1000  # generator seed of the held-out split (different clips)
    image_size: int = 192  # square frame side in pixels
    occlusion: float = 0.4  # first-frame layout: 0 = spread apart, 1 = piled up
    min_objects: int = 2
    max_objects: int = 4
    max_speed: float = 0.03  # pixels per frame, as a fraction of the shorter side
    cutouts: bool = True  # paste real object cutouts from ../shared/data when present
    cutout_exclude: list[str] = field(default_factory=list)  # DAVIS sequences kept out
    # corruption / occlusion patches / drift / camera motion (instseg.data.video_effects), on
    # both splits; all off by default. With effects the evaluation also reports per-frame mask
    # AP on the corrupted frames (metrics["frames"]["corrupted"]) and on all frames.
    effects: VideoEffects = field(default_factory=VideoEffects)


@dataclass
class VideoDataConfig:
    # YouTube-VIS JSON + frame root; leave train_json empty to use synthetic videos
    train_json: str = ""
    train_root: str = ""
    test_json: str = ""  # "" with train_json set: no evaluation
    test_root: str = ""
    synthetic: SyntheticVideoConfig = field(default_factory=SyntheticVideoConfig)
    cache_dir: str = ""  # where synthetic data is generated ("" = <out_dir>/data)
    min_size: list[int] = field(default_factory=lambda: [160, 192, 224])  # train short sides
    max_size: int = 400  # longest side cap (train and test)
    test_min_size: int = 192  # test short side
    flip: float = 0.5  # horizontal flip probability (same draw for all frames of a sample)
    # references (and memory frames) are 1..max_gap frames *before* the key, never after;
    # 0 = the model's memory_length (the frames inference keeps: training sees every gap)
    max_gap: int = 0
    memory_frames: int = 0  # extra past frames beyond the reference in the training PCAM memory
    class_agnostic: bool = False  # every track becomes category 1 "object" (train and test)
    batch_size: int = 4  # (key, reference) pairs per step
    num_workers: int = 0  # DataLoader workers per process


@dataclass
class VideoTrainConfig:
    task: str = "video"  # which recipe `instseg train` runs (must be "video" here)
    model: VideoModelConfig = field(default_factory=VideoModelConfig)
    # association settings of the evaluation (QDTrack: tracker.init_score_thresh=0.7 birth,
    # tracker.obj_score_thresh=0.5 gate, backdrops, mask duplicate removal; see
    # instseg.models.video.tracker.Tracker); `instseg track` takes --birth-score etc.
    tracker: Tracker = field(default_factory=Tracker)
    data: VideoDataConfig = field(default_factory=VideoDataConfig)
    solver: SolverConfig = field(default_factory=SolverConfig)
    seed: int = 0
    out_dir: str = "runs/pcan"  # checkpoints, logs, metrics, model.pt
    device: str = "auto"  # auto | cpu | cuda
    eval_period: int = 0  # evaluate every N iterations (0 = only at the end)
    eval_videos: int = 0  # videos of the test split to evaluate (0 = all)
    checkpoint_period: int = 500  # write a resumable checkpoint every N iterations
    log_period: int = 20
    threads: int = 0  # torch CPU threads (0 = leave torch's default)


# Overrides that shrink any video config to a run of seconds (random-init tiny PCAN, 2 tiny
# synthetic videos, 3 iterations): `scripts/train_pcan.py --smoke` and the CLI test use it.
SMOKE_OVERRIDES = [
    "model.name=pcan_tiny", "model.pretrained=false", "model.image_weights=null",
    "data.synthetic.num_train=2", "data.synthetic.num_test=1", "data.synthetic.num_frames=4",
    "data.synthetic.image_size=64", "data.synthetic.cutouts=false", "data.min_size=[64]",
    "data.max_size=96", "data.test_min_size=64", "data.batch_size=2", "solver.max_iters=3",
    "solver.warmup_iters=1", "solver.amp=none",
]  # fmt: skip
