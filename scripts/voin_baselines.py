"""Non-learned VOIN baselines on a fixed occlusion split of the DAVIS-2016 train subset
(a Table 5.8-style table: hole / frame PSNR and SSIM, flow EPE, timing).

    OMP_NUM_THREADS=1 .venv/bin/python scripts/voin_baselines.py [--frames 20] [--seed 0]

1. ``make_eval_split`` writes the split (moving pasted occluders: cutouts of the objects of the
   *occluder* sequences, or synthetic shapes) to ``--out/split``.
2. Methods, each writing ``--out/pred/<method>/<seq>/%05d.png``:
   - ``input``: the corrupted frames themselves (occluder left in the hole; a floor)
   - ``telea`` / ``navier-stokes``: per-frame ``cv2.inpaint``
   - ``prop(corrupted flow)+telea``: DIS flow computed on the corrupted frames (what a method
     without flow completion has), propagation with the 5 px cycle check inside the amodal mask,
     Telea for the leftovers
   - ``prop(filled flow)+telea``: the corrupted-frame flow with the hole flow replaced by the
     object's own visible flow (``fill_clip_flows``, VOIN's non-learned initial flow
     completion), then the same propagation
   - ``prop(clean flow)+telea``: the same with DIS flow of the *clean* frames, an oracle upper
     bound on what flow completion (Sect. 5.4.2) could give
3. ``evaluate_inpainting`` scores each against the split's ``gt`` inside ``holes``.

``--corruption occluder`` (default) keeps the occluder in the input (scene de-occlusion: the
object is restored *in front of* the occluder, so Telea/NS also draw from occluder pixels around
the hole); ``--corruption zero`` zeroes only the hole (classic video inpainting input).

Sequences: the data folder only holds DAVIS-2016 *train* sequences (the official validation set
is kept out on purpose). Default evaluation sequences: boat, bus, elephant (vehicle, vehicle,
animal; objects large enough that a 20-50 % occlusion is a real hole); the other six sequences
only provide occluder cutouts, so an evaluation clip is never occluded by its own object.
Nothing here is trained, so "held out" only means disjoint from the occluder sources.
The amodal masks given to propagation are the ground-truth ones (VOIN would predict them with
its shape completion module), so the propagation rows are an upper bound in that respect too.
EPE compares the corrupted-frame flow with the clean-frame flow inside the holes (both DIS;
the clean-frame flow is a pseudo ground truth, not real GT flow).
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from instseg.data.davis_splits import VOIN_EVAL, VOIN_TRAIN  # noqa: E402
from instseg.data.video_occlusion import make_eval_split  # noqa: E402
from instseg.evaluation.inpainting import (
    evaluate_inpainting,  # noqa: E402
    flow_epe,  # noqa: E402
)
from instseg.models.inpainting.baselines import inpaint_opencv, propagation_baseline  # noqa: E402
from instseg.models.inpainting.flow import clip_flows, fill_clip_flows  # noqa: E402
from instseg.utils.image import read_image  # noqa: E402
from instseg.utils.io import atomic_write_json  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
EVAL_SEQUENCES = VOIN_EVAL
OCCLUDER_SEQUENCES = VOIN_TRAIN
METHODS = (
    "input",
    "telea",
    "navier-stokes",
    "prop(corrupted flow)+telea",
    "prop(filled flow)+telea",
    "prop(clean flow)+telea",
)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    cv2.setNumThreads(args.threads)
    split = args.out / "split"
    t0 = time.perf_counter()
    manifest = make_eval_split(
        args.davis_root,
        args.sequences,
        seed=args.seed,
        out_dir=split,
        num_frames=args.frames,
        start=args.start,
        occlusion_ratio=tuple(args.ratio),
        occluder_sequences=args.occluder_sequences,
        synthetic_prob=args.synthetic_prob,
        corruption=args.corruption,
    )
    t_split = time.perf_counter() - t0
    print(
        f"split: {split} ({t_split:.1f}s), seed {args.seed}, {args.frames} frames/sequence, "
        f"corruption '{args.corruption}'"
    )
    for name, info in manifest["sequences"].items():
        print(
            f"  {name:<10} occluder {info['occluder']:<22} ratio target "
            f"{info['target_ratio']:.3f} achieved {info['achieved_ratio']:.3f}"
        )
    timing = {m: 0.0 for m in METHODS}
    timing_flow = {"corrupted": 0.0, "filled": 0.0, "clean": 0.0}
    epe_num, epe_den = {"corrupted": 0.0, "filled": 0.0}, 0
    prop_frac = {m: [] for m in METHODS}
    for name, info in manifest["sequences"].items():
        frames, holes, amodal = (
            load_pngs(split / k / name, info["files"]) for k in ("frames", "holes", "amodal")
        )
        holes, amodal = holes > 127, amodal > 127
        clean = np.stack([read_image(p) for p in info["source_frames"]])
        flows = {}
        for kind, src in (("corrupted", frames), ("clean", clean)):
            t = time.perf_counter()
            flows[kind] = clip_flows(src, preset=args.preset)
            timing_flow[kind] += time.perf_counter() - t
        t = time.perf_counter()
        flows["filled"] = fill_clip_flows(*flows["corrupted"], holes, amodal & ~holes)
        timing_flow["filled"] += time.perf_counter() - t
        n = int(holes[:-1].sum())
        if n:
            for kind in ("corrupted", "filled"):
                epe_num[kind] += flow_epe(flows[kind][0], flows["clean"][0], holes[:-1]) * n
            epe_den += n
        for method in METHODS:
            t = time.perf_counter()
            if method == "input":
                out = frames
            elif method in ("telea", "navier-stokes"):
                out = inpaint_opencv(frames, holes, method="telea" if method == "telea" else "ns")
            else:
                fwd, bwd = flows[_flow_kind(method)]
                res = propagation_baseline(
                    frames, holes, fwd, bwd, amodal=amodal, cycle_threshold=args.cycle_threshold
                )
                out = res.frames
                prop_frac[method].append((res.propagated.sum(), holes.sum()))
            timing[method] += time.perf_counter() - t
            save_pngs(args.out / "pred" / method / name, info["files"], out)
    results = {
        m: evaluate_inpainting(args.out / "pred" / m, split / "gt", split / "holes")
        for m in METHODS
    }
    epe = {k: v / max(epe_den, 1) for k, v in epe_num.items()}
    _print_table(results, timing, timing_flow, epe, prop_frac, args, manifest)
    summary = {
        m: {**r["mean"], "per_sequence": r["per_sequence"], "seconds": timing[m]}
        for m, r in results.items()
    }
    atomic_write_json(
        args.out / "results.json",
        {
            "args": {k: str(v) for k, v in vars(args).items()},
            "flow_seconds": timing_flow,
            "epe_vs_clean_flow_in_holes": epe,
            "methods": summary,
        },
        indent=1,
    )
    print(f"wrote {args.out / 'results.json'}")
    return 0


def _print_table(results, timing, timing_flow, epe, prop_frac, args, manifest) -> None:
    n_frames = sum(len(s["files"]) for s in manifest["sequences"].values())
    print(
        f"\n{len(manifest['sequences'])} sequences x {args.frames} frames = {n_frames} frames; "
        f"DIS preset '{args.preset}', cycle threshold {args.cycle_threshold} px; "
        f"{platform.processor() or platform.machine()}, {args.threads} OpenCV thread(s)"
    )
    head = (
        f"| {'method':<29} | flow | {'EPE':>5} | {'hole PSNR':>9} | {'hole SSIM':>9} | "
        f"{'frame PSNR':>10} | {'frame SSIM':>10} | {'prop %':>6} | {'s/frame':>7} |"
    )
    print(head)
    print("|" + "|".join("-" * (len(c)) for c in head.split("|")[1:-1]) + "|")
    for m, r in results.items():
        kind = _flow_kind(m)
        uses = kind != ""
        # the filled flow is computed from the corrupted one: both times count
        flow_t = timing_flow["corrupted"] if uses and kind != "clean" else 0.0
        flow_t += timing_flow[kind] if kind in ("filled", "clean") else 0.0
        e = f"{epe[kind]:5.2f}" if kind in epe else (" 0.00" if kind == "clean" else "    -")
        pf = prop_frac[m]
        prop = (
            f"{100 * sum(a for a, _ in pf) / max(sum(b for _, b in pf), 1):6.1f}"
            if pf
            else "     -"
        )
        mean = r["mean"]
        print(
            f"| {m:<29} | {'yes' if uses else 'no ':<4} | {e} | {mean['hole_psnr']:9.2f} | "
            f"{mean['hole_ssim']:9.4f} | {mean['frame_psnr']:10.2f} | "
            f"{mean['frame_ssim']:10.4f} | {prop} | {(timing[m] + flow_t) / n_frames:7.3f} |"
        )
    print(
        "EPE: the flow used vs the clean-frame DIS flow inside the holes (pseudo-GT). "
        "s/frame includes the flow computation for flow methods."
    )


def _flow_kind(method: str) -> str:
    """Which flow a method uses: "", "corrupted", "filled" (corrupted, hole flow filled from
    the object's visible flow) or "clean"."""
    for kind in ("filled", "corrupted", "clean"):
        if f"({kind}" in method:
            return kind
    return ""


def load_pngs(folder: Path, files: list[str]) -> np.ndarray:
    """Stack ``folder/<file>`` PNGs as stored (RGB (T, H, W, 3) or L (T, H, W) uint8)."""
    return np.stack([np.asarray(Image.open(folder / f)) for f in files])


def save_pngs(folder: Path, files: list[str], frames: np.ndarray) -> None:
    """Write each (H, W[, 3]) uint8 array of ``frames`` as ``folder/<file>``."""
    folder.mkdir(parents=True, exist_ok=True)
    for f, x in zip(files, frames, strict=True):
        Image.fromarray(x).save(folder / f)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--davis-root",
        type=Path,
        default=REPO / ".." / "shared" / "data" / "davis2016-train-subset",
    )
    p.add_argument("--out", type=Path, default=Path("/tmp/voin_baselines"))
    p.add_argument("--sequences", nargs="+", default=list(EVAL_SEQUENCES))
    p.add_argument("--occluder-sequences", nargs="*", default=list(OCCLUDER_SEQUENCES))
    p.add_argument("--frames", type=int, default=20)
    p.add_argument("--start", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--ratio",
        type=float,
        nargs=2,
        default=(0.2, 0.5),
        help="occlusion ratio range, sampled per sequence",
    )
    p.add_argument("--synthetic-prob", type=float, default=0.5)
    p.add_argument(
        "--corruption",
        default="occluder",
        choices=("occluder", "zero"),
        help="occluder: paste the occluder (de-occlusion); zero: zero the hole only",
    )
    p.add_argument("--preset", default="medium", choices=("ultrafast", "fast", "medium", "fine"))
    p.add_argument("--cycle-threshold", type=float, default=5.0)
    p.add_argument("--threads", type=int, default=1, help="cv2.setNumThreads")
    return p


if __name__ == "__main__":
    sys.exit(main())
