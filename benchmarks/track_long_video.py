"""Per-frame latency and resident memory of ``instseg track`` over a long synthetic video
(issue: "memory and time per frame stay constant as a video grows").

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/track_long_video.py --frames 1000

1. A seeded synthetic video (``instseg.data.synthetic_video.make_video``: textured objects
   moving, occluding, entering and leaving) of ``--frames`` frames is written as JPEGs.
2. ``instseg track --source DIR --out OUT --no-video`` runs in a subprocess (the real command,
   default weights unless ``--weights``); its resident set size (VmRSS, /proc) is sampled every
   0.1 s together with the number of per-frame masks written so far.
3. Per-frame latency comes from the modification times of ``OUT/masks/<frame>.png`` (one per
   input frame, written as soon as the frame is tracked).

Prints, per block of 100 frames, the mean latency and the RSS at the block's end, and the
ratios last block / first block (1.0 = flat). Linux only (reads /proc).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from instseg.data.synthetic import SceneConfig
from instseg.data.synthetic_video import VideoConfig, make_video


def write_video(folder: Path, *, frames: int, size: int, seed: int) -> None:
    cfg = VideoConfig(
        scene=SceneConfig(image_size=(size, size), min_objects=3, max_objects=5),
        num_frames=frames,
        max_speed=0.01,
    )
    rendered, _ = make_video(np.random.default_rng(seed), cfg)
    folder.mkdir(parents=True, exist_ok=True)
    for t, f in enumerate(rendered):
        cv2.imwrite(str(folder / f"{t:05d}.jpg"), cv2.cvtColor(f, cv2.COLOR_RGB2BGR))


def rss_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--frames", type=int, default=1000)
    p.add_argument("--size", type=int, default=192, help="square frame side")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--weights", default=None, help="PCAN weights (default: the shipped model)")
    p.add_argument("--block", type=int, default=100, help="frames per reported block")
    p.add_argument("--work", type=Path, default=None, help="keep the video and outputs here")
    args = p.parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="track_long_"))
    src, out = work / "frames", work / "out"
    t0 = time.perf_counter()
    if not src.is_dir() or len(list(src.glob("*.jpg"))) != args.frames:
        shutil.rmtree(src, ignore_errors=True)
        write_video(src, frames=args.frames, size=args.size, seed=args.seed)
    print(f"video: {args.frames} frames of {args.size}x{args.size} in {src} "
          f"({time.perf_counter() - t0:.0f} s to generate)")  # fmt: skip
    shutil.rmtree(out, ignore_errors=True)
    cmd = [
        sys.executable, "-c", "from instseg.cli.main import main; raise SystemExit(main())",
        "track", "--source", str(src), "--out", str(out), "--no-video",
    ]  # fmt: skip
    if args.weights:
        cmd += ["--weights", args.weights]
    env = {**os.environ, "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}
    proc = subprocess.Popen(cmd, env=env)
    samples: list[tuple[int, float]] = []  # (frames done, RSS MiB)
    masks = out / "masks"
    while proc.poll() is None:
        r = rss_mib(proc.pid)
        done = len(list(masks.glob("*.png"))) if masks.is_dir() else 0
        if r is not None:
            samples.append((done, r))
        time.sleep(0.1)
    if proc.returncode != 0:
        print(f"instseg track failed with exit code {proc.returncode}")
        return proc.returncode
    stamps = np.array([(masks / f"{t:05d}.png").stat().st_mtime for t in range(args.frames)])
    lat = np.diff(stamps) * 1000  # ms, frame t-1 -> t (frame 0 includes model loading)
    print("\n| frames | mean ms/frame | median ms/frame | RSS MiB at block end |")
    print("|---|---|---|---|")
    rows = []
    for s in range(0, args.frames - 1, args.block):
        block = lat[s : s + args.block]
        end = min(s + args.block, args.frames)
        rss = [r for d, r in samples if d <= end]
        rows.append((float(block.mean()), rss[-1] if rss else float("nan")))
        print(f"| {s + 1}-{end} | {block.mean():.1f} | {np.median(block):.1f} | "
              f"{rows[-1][1]:.0f} |")  # fmt: skip
    peak = max(r for _, r in samples)
    first, last = rows[0], rows[-1]
    print(
        f"\npeak RSS {peak:.0f} MiB; last/first block: latency x{last[0] / first[0]:.2f}, "
        f"RSS x{last[1] / first[1]:.2f} (1.00 = flat)"
    )
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
