"""BCNet cost (issue item 8, survey Table 3.3 "Params"): parameters, FLOPs and CPU latency of
the bilayer GCN head vs the baseline Mask R-CNN head (and the other ablation heads) on 20 RoIs.

Input: 20 RoI features (20, C, 14, 14), C = 64 (our EfficientNet-Lite0 FPN) and 256 (the
paper's ResNet-50-FPN); class-agnostic heads; forward only (inference), float32, no_grad;
latency = the best of ``--rounds`` interleaved rounds (all heads in turn), each the median of
``--runs`` timed runs after warm-up (robust to a shared, noisy CPU); ``--threads`` CPU threads.
Ratios are against the baseline head measured in the same run.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/bcnet_head_cost.py [--runs 30]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from instseg.models.heads.mask_rcnn import MaskRCNNHead  # noqa: E402
from instseg.models.zoo import BILAYER_HEADS, COMMONALITY_HEADS  # noqa: E402

HEADS: dict[str, Callable[..., torch.nn.Module]] = {
    "baseline (Mask R-CNN, 4 convs)": lambda *, in_channels: MaskRCNNHead(
        in_channels=in_channels, num_classes=1, conv_dims=in_channels, num_convs=4
    ),
    "single layer FCN": BILAYER_HEADS["single_fcn"],
    "single layer GCN": BILAYER_HEADS["single_gcn"],
    "bilayer FCN": BILAYER_HEADS["bilayer_fcn"],
    "bilayer GCN (BCNet)": BILAYER_HEADS["bcnet"],
    "BCNet paper (1 conv/GCN/1 conv)": BILAYER_HEADS["bcnet_paper"],
    "CPMask": COMMONALITY_HEADS["cpmask"],
}


def measure(fn: Callable[[], object], runs: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rois", type=int, default=20)
    p.add_argument("--channels", type=int, nargs="+", default=[64, 256])
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"{args.rois} RoIs of 14x14, forward only, float32, {args.threads} CPU threads\n")
    for c in args.channels:
        x = torch.randn(args.rois, c, 14, 14, generator=torch.Generator().manual_seed(0))
        heads, rows = {}, []
        for name, factory in HEADS.items():
            torch.manual_seed(0)
            build = partial(factory, in_channels=c)
            heads[name] = (build() if "baseline" in name else build(num_classes=1)).eval()
        best = {name: float("inf") for name in heads}
        with torch.no_grad():
            for _ in range(args.rounds):
                for name, head in heads.items():
                    ms = measure(partial(head, x), args.runs) * 1e3
                    best[name] = min(best[name], ms)
            for name, head in heads.items():
                with FlopCounterMode(display=False) as fc:
                    head(x)
                params = sum(q.numel() for q in head.parameters())
                rows.append((name, params, fc.get_total_flops(), best[name]))
        base = rows[0]
        print(f"C = {c}")
        print("| head | params | x base | GFLOPs | x base | latency ms | x base |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        for name, params, flops, ms in rows:
            print(
                f"| {name} | {params / 1e6:.3f}M | {params / base[1]:.2f} | {flops / 1e9:.2f} | "
                f"{flops / base[2]:.2f} | {ms:.1f} | {ms / base[3]:.2f} |"
            )
        print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
