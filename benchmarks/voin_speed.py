"""Seconds per 480p frame for each VOIN stage on CPU, against OpenCV Telea measured in the
same run (the peer ratio).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/voin_speed.py [--variant small|paper]
        [--weights W] [--frames 8] [--repeats 1] [--threads 1]

Input: a synthetic 480x854 clip (smooth texture panning 2 px/frame, an elliptical object of
about 200x260 pixels moving with it, a bar occluding 30 % of it). Stage costs do not depend
on the weight values, so without ``--weights`` the chosen variant runs with random weights
(timing only; nothing here is a quality number). Stages:

- shape: ``Inpainter.complete_shape`` (canvas crop, transformer, paste back)
- dis: ``clip_flows`` forward + backward DIS flow (OpenCV)
- flow completion: FlowCompletionNet on every forward and backward pair (``complete_flows``
  minus its DIS part, measured in the same call pattern)
- propagation: ``propagate_pixels`` with the 5 px cycle check
- generator: the occlusion-aware generator on the object box (``use_flow=False``)
- telea: per-frame ``cv2.inpaint`` of the hole (the peer)
- telea, object context: the same drawing on the object's pixels only (``source``, the
  occlusion-aware leftover fill; it also fills the non-object pixels of the object's box)
- VOIN end to end: all of the above with caller-given amodal masks (shape excluded)
- default end to end: flow net and generator off (the shipped file's recommended stages):
  DIS, non-learned flow fill, propagation, object-context Telea
"""

from __future__ import annotations

import argparse
import platform
import time
from collections.abc import Callable

import cv2
import numpy as np
import torch

from instseg.inference.inpainter import Inpainter, InpaintOptions, load_voin_weights
from instseg.models.inpainting.baselines import inpaint_opencv
from instseg.models.inpainting.flow import clip_flows
from instseg.models.inpainting.flow_guided_propagation import propagate_pixels
from instseg.models.inpainting.voin import VOIN_VARIANTS, VOINModel


def make_clip(t: int, h: int = 480, w: int = 854, seed: int = 0) -> tuple[np.ndarray, ...]:
    """frames (T, H, W, 3) uint8, visible / holes / amodal (T, H, W) bool."""
    rng = np.random.default_rng(seed)
    tex = rng.integers(0, 256, (h, w + 2 * t, 3), dtype=np.uint8)
    tex = cv2.GaussianBlur(tex, (9, 9), 0)
    frames = np.stack([tex[:, 2 * (t - i) : 2 * (t - i) + w] for i in range(t)])
    yy, xx = np.mgrid[:h, :w]
    amodal = np.stack(
        [((yy - 240) / 100) ** 2 + ((xx - 400 - 2 * i) / 130) ** 2 < 1 for i in range(t)]
    )
    bar = np.zeros_like(amodal)
    for i in range(t):
        bar[i, 200 + 3 * i : 260 + 3 * i] = True
    frames[bar] = 90
    return frames, amodal & ~bar, amodal & bar, amodal


def timed(fn: Callable[[], object], repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--variant", choices=sorted(VOIN_VARIANTS), default="paper")
    p.add_argument("--weights", default=None, help="VOIN weights file (overrides --variant)")
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--repeats", type=int, default=1, help="best of N")
    p.add_argument("--threads", type=int, default=1, help="torch and OpenCV threads")
    p.add_argument("--preset", default="medium")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    if args.weights:
        nets, wmeta = load_voin_weights(args.weights)
        meta = wmeta.model
        label = f"{args.weights} ({meta['variant']})"
    else:
        torch.manual_seed(0)
        nets, meta = VOIN_VARIANTS[args.variant](num_classes=1), {}
        label = f"{args.variant}, random weights (timing only)"
    canvas = int(meta.get("canvas_size", 64 if args.variant == "paper" else 32))
    frames, vis, holes, am = make_clip(args.frames)
    kw = {"canvas_size": canvas, "flow_preset": args.preset, "window": args.frames, "overlap": 0}
    kw |= {"use_flow_net": True, "use_generator": True}  # time every stage the file has
    model = VOINModel.from_nets(nets)
    full = Inpainter(model=model, options=InpaintOptions(**kw), progress=False)
    gen_only = Inpainter(model=model, options=InpaintOptions(use_flow=False, **kw), progress=False)
    off = kw | {"use_flow_net": False, "use_generator": False}
    default = Inpainter(model=model, options=InpaintOptions(**off), progress=False)
    fwd, bwd = clip_flows(frames, preset=args.preset)
    r = args.repeats
    t_dis = timed(lambda: clip_flows(frames, preset=args.preset), r)
    t_flow_all = timed(lambda: full.complete_flows(frames, vis, am), r)
    rows = {
        "shape": timed(lambda: full.complete_shape(vis, 0), r),
        "dis": t_dis,
        "flow completion": max(t_flow_all - t_dis, 0.0),
        "propagation": timed(lambda: propagate_pixels(frames, holes, fwd, bwd, amodal=am), r),
        "generator": timed(lambda: gen_only.inpaint(frames, vis, amodal=am), r),
        "telea": timed(lambda: inpaint_opencv(frames, holes, method="telea"), r),
        "telea, object context": timed(
            lambda: inpaint_opencv(frames, holes, method="telea", source=am & ~holes), r
        ),
        "VOIN end to end": timed(lambda: full.inpaint(frames, vis, amodal=am), r),
        "default end to end": timed(lambda: default.inpaint(frames, vis, amodal=am), r),
    }
    n = args.frames
    print(
        f"VOIN stages on {n} frames of 480x854, {label}; "
        f"{platform.processor() or platform.machine()}, {args.threads} thread(s), "
        f"DIS '{args.preset}', best of {r}"
    )
    print(f"| {'stage':<22} | {'s/frame':>8} | {'x Telea':>8} |")
    print(f"|{'-' * 24}|{'-' * 10}|{'-' * 10}|")
    for k, v in rows.items():
        print(f"| {k:<22} | {v / n:8.4f} | {v / rows['telea']:8.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
