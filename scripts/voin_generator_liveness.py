"""Is a leftover generator alive? Its mean absolute correction on cached leftovers and the share
of live features before its last conv, on one seeded batch of a leftover cache (issue 16).

    OMP_NUM_THREADS=2 .venv/bin/python scripts/voin_generator_liveness.py \\
        --cache runs/voin27o/leftover_cache runs/voin27o/s{0,1,2}/voin.pt \\
        runs/voin27w/s{0,1,2}/voin.pt

Per weights file: ``|R|``, the mean of |raw output - input| over the leftover pixels (on
[-1, 1]; 1/127.5 is one grey level); ``alive``, the share of values above 1e-6 in magnitude
of the last gated block's output; the hole L1 to the target of the input (the Telea fill) and
of the raw output.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from instseg.inference.inpainter import load_voin_weights
from instseg.recipes.inpainting_leftovers import leftover_batches, load_leftover_cache


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("weights", nargs="+", type=Path, help="VOIN weights files (leftover mode)")
    p.add_argument("--cache", type=Path, required=True, help="a leftover cache folder")
    p.add_argument("--clips", type=int, default=40, help="first N cached clips")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seed", type=int, default=123)
    args = p.parse_args(argv)
    files = sorted(args.cache.glob("clip_*.npz"))[: args.clips]
    if not files:
        raise SystemExit(f"{args.cache}: no cached clips")
    clips = load_leftover_cache(files)
    size = max(max(c["frames"].shape[-2:]) for c in clips)
    b = next(leftover_batches(clips, batch=args.batch, clip_len=5, crop_size=size, seed=args.seed))
    for w in args.weights:
        nets, _ = load_voin_weights(w)
        g = nets.generator.float().eval()
        if not g.residual:
            print(f"{w}: not a leftover generator, skipped")
            continue
        feats: dict[str, torch.Tensor] = {}
        g.decoder[-1].register_forward_hook(lambda _m, _i, o, f=feats: f.__setitem__("x", o))
        with torch.no_grad():
            y = g(b["frames"], b["holes"], b["occluded"], b["amodal"])
        left = b["holes"].bool().expand_as(y)
        r = (y - b["frames"]).abs()[left].mean().item()
        alive = (feats["x"].abs() > 1e-6).float().mean().item()
        l1_in = (b["frames"] - b["gt"]).abs()[left].mean().item()
        l1_out = (y - b["gt"]).abs()[left].mean().item()
        print(
            f"{w}: |R| {r:.4f}, alive {100 * alive:.1f} %, hole L1 in {l1_in:.4f} out {l1_out:.4f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
