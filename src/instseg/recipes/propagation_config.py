"""Config dataclasses of the propagation-embedding recipe (:mod:`instseg.recipes.propagation`,
``instseg train configs/propagation_davis.yaml``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from instseg.data.davis_splits import SEMISUP_TUNING

__all__ = ["PropagationDataConfig", "PropagationSolverConfig", "PropagationTrainConfig"]


@dataclass
class PropagationDataConfig:
    root: str = ""  # DAVIS root ("" = the shared subset beside the repository)
    # training sequences; the held-out ones of scripts/davis_semisup.py are refused
    sequences: list[str] = field(default_factory=lambda: list(SEMISUP_TUNING))
    frames_per_seq: int = 0  # first N frames of each sequence (0: all)
    max_side: int = 480  # longer side of the frames the frozen backbone sees
    max_gap: int = 15  # frame t1 = t0 + d, d uniform in 1..max_gap
    cache_dir: str = ""  # backbone features cache ("" = <out_dir>/features)


@dataclass
class PropagationSolverConfig:
    iters: int = 400
    lr: float = 1e-3  # AdamW, cosine schedule over `iters`
    weight_decay: float = 1e-4


@dataclass
class PropagationTrainConfig:
    task: str = "propagation"  # which recipe `instseg train` runs (must be "propagation")
    data: PropagationDataConfig = field(default_factory=PropagationDataConfig)
    solver: PropagationSolverConfig = field(default_factory=PropagationSolverConfig)
    hidden: int = 256  # width of the embedding's hidden layer
    seed: int = 0
    out_dir: str = "runs/propagation"  # features cache, checkpoints, model.pt, metrics.json
    device: str = "cpu"  # cpu | cuda | auto (features are computed and cached on the CPU)
    checkpoint_period: int = 0  # resumable checkpoint every N iterations (0: only the end)
    log_period: int = 50
    threads: int = 2  # torch CPU threads (0 = leave torch's default)


# Overrides that shrink the recipe to a run of seconds (two sequences, 10 frames, small frames,
# 3 iterations): the CLI test and `scripts/train_propagation.py --tiny` use them.
TINY_OVERRIDES = [
    "data.sequences=[boat, flamingo]", "data.frames_per_seq=10", "data.max_side=96",
    "solver.iters=3", "threads=1",
]  # fmt: skip
