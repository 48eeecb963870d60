"""Seconds per 480p frame of PCAN tracking, per stage, with and without mask gating (issue 15,
deliverable 7: "the mask head only processes detections above the tracker's threshold").

    OMP_NUM_THREADS=2 OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/track_speed.py \
        --threads 2 --frames 30

1. A seeded synthetic video (``instseg.data.synthetic_video.make_video``) of ``--frames``
   frames at ``--height`` x ``--width`` (default 480 x 854) in memory.
2. One PCAN (default: the shipped ``pcan_default.pt``), fp32, ``--threads`` intra-op threads,
   two :class:`~instseg.inference.video_predictor.VideoPredictor` over it, run frame by frame
   in the same process (alternating which goes first): *ungated* (``mask_score=0``: mask head
   and pasting for every detection, the path before gating) and *gated* (the default: only
   detections scoring >= the tracker's ``mask_score_thresh`` up front, plus the lower-scored
   ones the tracker's painting rule reads).
3. Stage times are exclusive (a stage called inside another counts only for itself), taken
   with forward hooks and wrappers on public modules and functions:
   detector = backbone + FPN, frame-level PCAM and FCOS; masks = mask RoI pooling, mask head
   and pasting before the tracker (also the masks it asks for); tracker = track RoI pooling,
   track head and ``Tracker.update``; TSM = instance prototypes, TSM and pasting of the
   refined masks; other = the rest of ``VideoPredictor.__call__`` (resizing the frame, and
   the tracked masks back to the frame's size).

Prints per-stage mean seconds per frame and frames/s for both settings and their ratio, the
mask-head RoIs per frame, the process CPU time per frame, whether the tracked outputs were
identical frame by frame, and the CPU model, thread count and load average (stage times are
wall-clock: on a shared machine they include waiting for the cores; compare the ratios; the
CPU time does not count the waiting). ``--warmup`` frames are not counted.
``instseg track`` also reads and writes files (PNG, RLE, optional MP4); ``--cli`` additionally
times the real command on the same frames written as JPEGs (``--no-video``, per-frame
latency from the masks' modification times, as ``track_long_video.py`` does).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

import instseg.models.segmenter as segmenter_module
from instseg.data.synthetic import SceneConfig
from instseg.data.synthetic_video import VideoConfig, make_video
from instseg.engine.weights import shipped_weights
from instseg.inference.video_predictor import VideoPredictor, load_video_model
from instseg.models.video.tracker import Tracker

STAGES = ("detector", "masks", "tracker", "tsm", "other")


class Clock:
    """Exclusive time per stage: entering a stage pauses the enclosing one."""

    def __init__(self) -> None:
        self.totals: dict[str, float] = defaultdict(float)
        self.stack: list[str] = []
        self.t = 0.0
        self.after_tracker = False  # pooling / pasting after the tracker is the TSM's

    def enter(self, stage: str) -> None:
        now = time.perf_counter()
        if self.stack:
            self.totals[self.stack[-1]] += now - self.t
        self.stack.append(stage)
        self.t = now

    def exit(self) -> None:
        now = time.perf_counter()
        self.totals[self.stack.pop()] += now - self.t
        self.t = now

    def mask_stage(self) -> str:
        return "tsm" if self.after_tracker else "masks"


CLOCK = Clock()


def timed(fn: Callable[..., Any], stage: str | Callable[[], str]) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        CLOCK.enter(stage() if callable(stage) else stage)
        try:
            return fn(*args, **kwargs)
        finally:
            CLOCK.exit()

    return wrapper


def hook(module: torch.nn.Module, stage: str | Callable[[], str]) -> None:
    module.register_forward_pre_hook(
        lambda m, a: CLOCK.enter(stage() if callable(stage) else stage)
    )
    module.register_forward_hook(lambda m, a, o: CLOCK.exit())


class TimedTracker(Tracker):
    """The same settings; ``update`` counted as the tracker stage."""

    def update(self, *args: Any, **kwargs: Any) -> Any:
        CLOCK.enter("tracker")
        try:
            return super().update(*args, **kwargs)
        finally:
            CLOCK.exit()
            CLOCK.after_tracker = True


def instrument(model: Any, counts: dict[str, int]) -> None:
    """Stage hooks on the model's parts (see the module docstring); ``counts['rois']`` sums
    the RoIs that go through the mask head."""
    seg = model.segmenter
    features = seg.features

    def frame_start(*args: Any, **kwargs: Any) -> Any:
        CLOCK.after_tracker = False
        return features(*args, **kwargs)

    seg.features = timed(frame_start, "detector")
    hook(model.pcam, "detector")
    seg.detector.predict = timed(seg.detector.predict, "detector")
    hook(seg.mask_roi_pool, CLOCK.mask_stage)
    hook(seg.mask_head, "masks")
    seg.mask_head.register_forward_hook(
        lambda m, a, o: counts.__setitem__("rois", counts["rois"] + len(a[0]))
    )
    paste = segmenter_module.paste_masks
    segmenter_module.paste_masks = timed(paste, CLOCK.mask_stage)
    hook(model.track_pool, "tracker")
    hook(model.track_head, "tracker")
    hook(model.inst_pool, "tsm")
    if model.tsm is not None:
        hook(model.tsm, "tsm")
        att = model.instance_attention
        att.fit = timed(att.fit, "tsm")
        att.attend = timed(att.attend, "tsm")


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def same_outputs(a: Any, b: Any) -> bool:
    return (
        len(a) == len(b)
        and torch.equal(a.track_ids, b.track_ids)
        and torch.equal(a.boxes, b.boxes)
        and torch.equal(a.scores, b.scores)
        and torch.equal(a.masks, b.masks)
    )


def run_cli(frames: list[np.ndarray], args: argparse.Namespace, work: Path) -> dict[str, float]:
    """``instseg track --no-video`` on the frames as JPEGs, ungated and gated -> mean seconds
    per frame after the warm-up (from the masks' modification times)."""
    import cv2

    src = work / "frames"
    src.mkdir(parents=True, exist_ok=True)
    for t, f in enumerate(frames):
        cv2.imwrite(str(src / f"{t:05d}.jpg"), cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "OMP_WAIT_POLICY": "PASSIVE"}
    out = {}
    for name, extra in (("ungated", ["--mask-score", "0"]), ("gated", [])):
        dst = work / name
        cmd = [
            sys.executable, "-c", "from instseg.cli.main import main; raise SystemExit(main())",
            "track", "--source", str(src), "--out", str(dst), "--no-video", "--amp", "none",
            "--weights", str(args.weights), *extra,
        ]  # fmt: skip
        subprocess.run(cmd, env=env, check=True)
        stamps = [(dst / "masks" / f"{t:05d}.png").stat().st_mtime for t in range(len(frames))]
        lat = np.diff(stamps)[args.warmup :]
        out[name] = float(lat.mean())
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--frames", type=int, default=30)
    p.add_argument("--height", type=int, default=480)
    p.add_argument("--width", type=int, default=854)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    p.add_argument("--warmup", type=int, default=2, help="first frames not counted")
    p.add_argument("--weights", type=Path, default=None, help="default: the shipped PCAN")
    p.add_argument("--cli", action="store_true", help="also time `instseg track` end to end")
    args = p.parse_args(argv)
    args.weights = args.weights or shipped_weights("video")
    torch.set_num_threads(args.threads)
    cfg = VideoConfig(
        scene=SceneConfig(image_size=(args.height, args.width), min_objects=3, max_objects=6),
        num_frames=args.frames,
        max_speed=0.01,
    )
    frames, _ = make_video(np.random.default_rng(args.seed), cfg)
    model, meta = load_video_model(args.weights)
    counts = {"rois": 0}
    instrument(model, counts)
    tracker = TimedTracker(**{f.name: getattr(model.tracker, f.name) for f in fields(Tracker)})
    preds = {
        name: VideoPredictor(
            model, meta=meta, device="cpu", amp="none", tracker=tracker, mask_score=ms
        )
        for name, ms in (("ungated", 0.0), ("gated", None))
    }
    per: dict[str, list[dict[str, float]]] = {n: [] for n in preds}
    rois: dict[str, list[int]] = {n: [] for n in preds}
    identical = 0
    for t, frame in enumerate(frames):
        order = list(preds) if t % 2 == 0 else list(preds)[::-1]
        outs = {}
        for name in order:
            CLOCK.totals.clear()
            counts["rois"] = 0
            t0, c0 = time.perf_counter(), time.process_time()
            CLOCK.enter("other")
            outs[name] = preds[name](frame)
            CLOCK.exit()
            total, cpu = time.perf_counter() - t0, time.process_time() - c0
            if t >= args.warmup:
                stages = {s: CLOCK.totals.get(s, 0.0) for s in STAGES}
                per[name].append({**stages, "total": total, "cpu": cpu})
                rois[name].append(counts["rois"])
        identical += same_outputs(outs["ungated"], outs["gated"])
    n = len(per["gated"])
    mean = {k: {s: float(np.mean([r[s] for r in v])) for s in (*STAGES, "total", "cpu")}
            for k, v in per.items()}  # fmt: skip
    h, w = frames[0].shape[:2]
    print(f"CPU: {cpu_name()}, torch threads {torch.get_num_threads()}, load average "
          f"{os.getloadavg()[0]:.1f} (1 min) at the end; fp32; {args.weights.name}")  # fmt: skip
    print(f"{n} frames of {h}x{w} (after {args.warmup} warm-up), network input "
          f"{preds['gated'].min_size}/{preds['gated'].max_size} (short side / long cap); "
          f"up-front mask threshold {tracker.mask_score_thresh} (min of gate "
          f"{tracker.obj_score_thresh}, birth {tracker.init_score_thresh})\n")  # fmt: skip
    names = {"detector": "detector (backbone, PCAM, FCOS)", "masks": "mask head + paste",
             "tracker": "track head + tracker", "tsm": "TSM (instance prototypes)",
             "other": "other (resize in / out)", "total": "total"}  # fmt: skip
    print("| stage | ungated s/frame | gated s/frame | gated / ungated |")
    print("|---|---:|---:|---:|")
    for s in (*STAGES, "total"):
        u, g = mean["ungated"][s], mean["gated"][s]
        print(f"| {names[s]} | {u:.4f} | {g:.4f} | {g / u if u else float('nan'):.2f} |")
    fu, fg = 1 / mean["ungated"]["total"], 1 / mean["gated"]["total"]
    print(f"| frames/s | {fu:.2f} | {fg:.2f} | {fg / fu:.2f} |")
    cu, cg = mean["ungated"]["cpu"], mean["gated"]["cpu"]
    print(f"| CPU s/frame (process time, all threads) | {cu:.4f} | {cg:.4f} | {cg / cu:.2f} |")
    print(f"| mask-head RoIs / frame | {np.mean(rois['ungated']):.1f} | "
          f"{np.mean(rois['gated']):.1f} | "
          f"{np.mean(rois['gated']) / max(np.mean(rois['ungated']), 1e-9):.2f} |")  # fmt: skip
    print(f"\ntracked outputs identical (ids, boxes, scores, masks): {identical}/{len(frames)} "
          f"frames")  # fmt: skip
    if args.cli:
        work = Path(tempfile.mkdtemp(prefix="track_speed_"))
        try:
            cli = run_cli(frames, args, work)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        print("\n`instseg track --no-video` end to end (files read and written), s/frame: "
              f"ungated {cli['ungated']:.4f} ({1 / cli['ungated']:.2f} frames/s), gated "
              f"{cli['gated']:.4f} ({1 / cli['gated']:.2f} frames/s), ratio "
              f"{cli['gated'] / cli['ungated']:.2f}")  # fmt: skip
    return 0 if identical == len(frames) else 1


if __name__ == "__main__":
    raise SystemExit(main())
