"""Train the propagation embedding (:mod:`instseg.models.video.propagation_embedding`) for
``instseg propagate --init-masks ... --weights W`` on real DAVIS sequences: a thin command line
over :mod:`instseg.recipes.propagation` (which ``instseg train configs/propagation_davis.yaml``
runs too; data, objective and outputs are described there).

    python scripts/train_propagation.py --out runs/propagation
    python scripts/davis_semisup.py --weights runs/propagation/model.pt

Default sequences: the six *tuning* sequences of ``scripts/davis_semisup.py``; its held-out
ones (bus, soccerball, mallard-fly) are refused. Writes ``OUT/model.pt`` (fp16 release,
``{"model": state, "meta": {...}}``) and ``OUT/metrics.json`` (loss at start and end, time).
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from instseg.config import ConfigError
from instseg.data.davis_splits import SEMISUP_TUNING
from instseg.recipes.propagation import train_propagation
from instseg.recipes.propagation_config import PropagationTrainConfig


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = _parser().parse_args(argv)
    try:
        metrics = train_propagation(config_from_args(args), resume=args.resume)
    except ConfigError as e:
        raise SystemExit(f"train_propagation: {e}") from None
    print(json.dumps(metrics))
    return 0


def config_from_args(args: argparse.Namespace) -> PropagationTrainConfig:
    """The recipe config these flags describe."""
    cfg = PropagationTrainConfig(
        hidden=args.hidden, seed=args.seed, out_dir=str(args.out), threads=args.threads
    )
    cfg.data.root, cfg.data.sequences = args.root, list(args.sequences)
    cfg.data.max_gap, cfg.data.max_side = args.max_gap, args.max_side
    cfg.solver.iters, cfg.solver.lr = args.iters, args.lr
    return cfg


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", default="", help="DAVIS root (default: the shared subset)")
    p.add_argument("--sequences", nargs="+", default=list(SEMISUP_TUNING))
    p.add_argument("--out", type=Path, default=Path("runs/propagation"))
    p.add_argument("--iters", type=int, default=400)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--max-gap", type=int, default=15)
    p.add_argument("--max-side", type=int, default=480)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--resume", action="store_true", help="continue OUT/last_checkpoint")
    return p


if __name__ == "__main__":
    raise SystemExit(main())
