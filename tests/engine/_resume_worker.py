"""Train the toy model with periodic checkpoints, then SIGKILL itself mid-run.

Usage: python _resume_worker.py OUT_DIR MAX_ITERS CKPT_PERIOD KILL_AT
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

from _engine_toy import run_toy_training

from instseg.engine.trainer import Callback


class KillAt(Callback):
    def __init__(self, it: int) -> None:
        self.it = it

    def after_step(self, trainer) -> None:  # noqa: ANN001
        if trainer.iter == self.it:
            os.kill(os.getpid(), signal.SIGKILL)


if __name__ == "__main__":
    out, max_iters, period, kill_at = Path(sys.argv[1]), *map(int, sys.argv[2:5])
    run_toy_training(
        out, max_iters=max_iters, checkpoint_period=period, callbacks=[KillAt(kill_at)]
    )
    sys.exit(3)  # not reached: the process is killed first
