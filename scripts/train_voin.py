"""Train the learned VOIN stages and pack them into one weights file: a thin command line over
:mod:`instseg.recipes.inpainting` (which ``instseg train configs/voin_davis.yaml`` runs too).

One command, all three stages, one weights file (``--out/voin.pt``, fp16, the format of
:func:`instseg.inference.inpainter.save_voin_weights`, loaded by ``instseg inpaint --weights``)::

    # tiny smoke run (seconds on one CPU core)
    OMP_NUM_THREADS=1 .venv/bin/python scripts/train_voin.py --stage all --tiny --iters 30 \
        --seed 0 --out runs/voin_tiny
    # the shipped src/instseg/weights/voin_default.pt (see its model card):
    .venv/bin/instseg train configs/voin_davis.yaml
    # paper-sized networks (needs a GPU for a useful schedule)
    .venv/bin/python scripts/train_voin.py --stage all --variant paper --iters-shape 20000 \
        --iters-flow 20000 --iters-generator 50000 --size 192 --batch 4 --seed 0 --out runs/voin

Single stages (each writes ``--out/model_final.pth``, engine checkpoint format, seeded
``--seed``) and packing::

    .venv/bin/python scripts/train_voin.py --stage shape --tiny --iters 20 --out runs/shape
    .venv/bin/python scripts/train_voin.py --stage pack --tiny --from runs/voin_tiny

``--stage all`` trains the stages into ``--out/{shape,flow,generator}/`` (seeded ``--seed``,
``--seed + 1``, ``--seed + 2``) and packs ``--out/voin.pt``; ``--resume`` continues each stage
from its ``last_checkpoint``. Data, losses and stages: :mod:`instseg.recipes.inpainting`.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from instseg.data.davis_splits import VOIN_TRAIN
from instseg.models.inpainting.voin import VOIN_VARIANTS
from instseg.recipes.inpainting import pack_voin, train_inpainting, train_voin_stage
from instseg.recipes.inpainting_config import STAGES, InpaintingTrainConfig
from instseg.utils.precision import AMP_CHOICES


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = _parser().parse_args(argv)
    cfg = config_from_args(args)
    if args.stage == "pack":
        if args.from_dir is None:
            raise SystemExit("--stage pack needs --from FOLDER")
        print(f"packed: {pack_voin(cfg, args.from_dir)}")
    elif args.stage == "all":
        out = train_inpainting(cfg, resume=args.resume)
        print(f"done: {out['weights']}")
    else:
        path = train_voin_stage(
            cfg, args.stage, out_dir=args.out, seed=args.seed, resume=args.resume
        )
        print(f"done: {path}")
    return 0


def config_from_args(args: argparse.Namespace) -> InpaintingTrainConfig:
    """The recipe config these flags describe (``--iters`` for every stage without its own)."""
    cfg = InpaintingTrainConfig(
        stage=args.stage, variant=args.variant, tiny=args.tiny, lr=args.lr, seed=args.seed,
        amp=args.amp, device=args.device, out_dir=str(args.out), weights_name=args.weights_name,
        full_precision=args.full_precision,
    )  # fmt: skip
    cfg.data.root = str(args.davis_root or "")
    cfg.data.sequences = list(args.sequences)
    cfg.data.frames_per_seq, cfg.data.clip_len = args.frames_per_seq, args.clip_len
    cfg.data.size, cfg.data.batch = args.size, args.batch
    for stage in STAGES:
        getattr(cfg, stage).iters = getattr(args, f"iters_{stage}") or args.iters
    return cfg


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--stage", choices=(*STAGES, "all", "pack"), required=True)
    p.add_argument(
        "--variant",
        choices=sorted(VOIN_VARIANTS),
        default="paper",
        help="network sizes (--tiny forces 'small')",
    )
    p.add_argument(
        "--davis-root", type=Path, default=None, help="default: the shared DAVIS-2016 subset"
    )
    p.add_argument("--sequences", nargs="+", default=list(VOIN_TRAIN))
    p.add_argument(
        "--frames-per-seq", type=int, default=40, help="first N frames per sequence (0: all)"
    )
    p.add_argument("--iters", type=int, default=1000)
    for stage in STAGES:
        p.add_argument(
            f"--iters-{stage}",
            type=int,
            default=None,
            help=f"iterations of the {stage} stage with --stage all (default --iters)",
        )
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--clip-len", type=int, default=5)
    p.add_argument("--size", type=int, default=128, help="frame height after resizing")
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--tiny", action="store_true", help="tiny networks and data (smoke run)")
    p.add_argument("--out", type=Path, default=Path("runs/voin"))
    p.add_argument(
        "--from",
        dest="from_dir",
        type=Path,
        default=None,
        help="--stage pack: folder holding shape/, flow/, generator/",
    )
    p.add_argument("--weights-name", default="voin.pt", help="packed file name inside the folder")
    p.add_argument("--full-precision", action="store_true", help="pack fp32 instead of fp16")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--amp", choices=AMP_CHOICES, default="auto",
        help="autocast for the discriminators of the generator stage (auto: bf16 only where "
        "the hardware runs it natively)",
    )  # fmt: skip
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--resume", action="store_true", help="continue each stage's checkpoint")
    return p


if __name__ == "__main__":
    raise SystemExit(main())
