"""instseg.engine: training loop, checkpoints, optimizers/schedules, distributed helpers."""

from instseg.engine.checkpoint import (
    Checkpointer,
    CheckpointError,
    UntrustedCheckpointError,
    load_model_weights,
    save_weights,
)
from instseg.engine.distributed import init_distributed, unwrap_model, wrap_ddp
from instseg.engine.optim import build_optimizer, build_scheduler
from instseg.engine.trainer import (
    Callback,
    JSONMetricsWriter,
    PeriodicCheckpoint,
    PeriodicEval,
    ProgressBar,
    TensorBoardWriter,
    Trainer,
    seed_everything,
)

__all__ = [
    "Callback",
    "CheckpointError",
    "Checkpointer",
    "JSONMetricsWriter",
    "PeriodicCheckpoint",
    "PeriodicEval",
    "ProgressBar",
    "TensorBoardWriter",
    "Trainer",
    "UntrustedCheckpointError",
    "build_optimizer",
    "build_scheduler",
    "init_distributed",
    "load_model_weights",
    "save_weights",
    "seed_everything",
    "unwrap_model",
    "wrap_ddp",
]
