"""One VOIN pipeline configuration on the model card's held-out DAVIS split, one row: hole / frame
PSNR and SSIM (mean and per sequence), the share of the hole filled by propagation, seconds per
frame. Each configuration is one command (minutes on one core), so a table is built row by row
and a row can be rerun under another source tree (``PYTHONPATH=<old tree>/src``: the options it
passes exist in every version of :class:`InpaintOptions`).

    # the card's split (boat, bus, elephant x 20 frames, seed 0, GT amodal masks), written once
    OMP_NUM_THREADS=1 .venv/bin/python scripts/voin_pipeline_eval.py --split runs/voin16/split \\
        --make-split --model none --no-generator --out runs/voin16/prop_telea_whole
    # propagation inside each generator window, as the pipeline did before issue 16
    ... --model none --no-generator --windowed-propagation --out runs/voin16/prop_telea_windows
    # the shipped VOIN (default options: the file's recommended stage switches, flow net and
    # generator off since issue 16, deliverable 4; on before); its learned stages on:
    ... --out runs/voin16/voin
    ... --flow-net --generator --out runs/voin16/voin_all_stages

``--model none``: the non-learned pipeline (DIS, filled flow, propagation, Telea);
``--model default``: the installed ``voin_default.pt``; else a weights file.
``--flow-net`` / ``--generator`` (``--no-...``) set the learned stage switches; without them the
weights file's recommendation applies (``InpaintOptions`` None; with an older source tree, on).
``--leftover-context frame``: Telea for the leftovers draws on every known pixel (the plain
"propagation + Telea" row; the default, ``object``, draws on the object's own pixels only).
``--windowed-propagation`` runs each generator window as its own clip (propagation inside it
only), keeping each frame from its window: the pre-issue-16 pipeline on the current code.
Also printed: the PSNR on the leftovers alone (hole pixels propagation did not fill, where the
generator or Telea acts; MSE pooled over the pixels of each sequence / of all). Results also go
to ``--out/results.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

# instseg comes from PYTHONPATH or the installed package (not put on sys.path here, so that
# PYTHONPATH=<another tree>/src runs that tree's pipeline)
from instseg.data.davis_splits import VOIN_EVAL, VOIN_TRAIN
from instseg.data.video_occlusion import make_eval_split
from instseg.evaluation.inpainting import evaluate_inpainting
from instseg.inference.inpainter import Inpainter, InpaintOptions, temporal_windows

REPO = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    cv2.setNumThreads(args.threads)
    if args.make_split:
        make_eval_split(
            args.davis_root,
            args.sequences,
            seed=args.seed,
            out_dir=args.split,
            num_frames=args.frames,
            occlusion_ratio=(0.2, 0.5),
            occluder_sequences=args.occluder_sequences or list(VOIN_TRAIN),
            synthetic_prob=0.5,
        )
    manifest = json.loads((args.split / "manifest.json").read_text())
    inp = _inpainter(args)
    print(f"{inp.describe()} [instseg from {Path(sys.modules['instseg'].__file__).parent}]")
    n_frames, seconds, prop, holes_total = 0, 0.0, 0, 0
    left_se: dict[str, tuple[float, int]] = {}  # sequence -> (squared error sum, values)
    for seq in args.sequences:
        files = manifest["sequences"][seq]["files"]
        frames = _load(args.split / "frames" / seq, files)
        vis, holes, am = (
            _load(args.split / k / seq, files) > 127 for k in ("visible", "holes", "amodal")
        )
        t = time.perf_counter()
        if args.windowed_propagation:
            out, propagated = _windowed(inp, frames, vis, am)
        else:
            res = inp.inpaint(frames, vis, amodal=am, label=0)
            out, propagated = res.frames, res.propagated
        seconds += time.perf_counter() - t
        n_frames += len(frames)
        prop += int((propagated & holes).sum())
        left = holes & ~propagated
        gt = _load(args.split / "gt" / seq, files).astype(np.float64)
        left_se[seq] = (
            float(((out.astype(np.float64) - gt)[left] ** 2).sum()),
            3 * int(left.sum()),
        )
        holes_total += int(holes.sum())
        (args.out / "pred" / seq).mkdir(parents=True, exist_ok=True)
        for f, x in zip(files, out, strict=True):
            Image.fromarray(x).save(args.out / "pred" / seq / f)
    res = evaluate_inpainting(args.out / "pred", args.split / "gt", args.split / "holes")
    row = {
        "config": inp.describe() + (" [windowed propagation]" if args.windowed_propagation else ""),
        "argv": sys.argv[1:] if argv is None else argv,
        "mean": res["mean"],
        "per_sequence": res["per_sequence"],
        "propagated_share": prop / max(holes_total, 1),
        "leftover_psnr": {k: _psnr(*v) for k, v in left_se.items()}
        | {"all": _psnr(*(sum(x) for x in zip(*left_se.values(), strict=True)))},
        "s_per_frame": seconds / max(n_frames, 1),
        "num_frames": n_frames,
    }
    (args.out / "results.json").write_text(json.dumps(row, indent=1, default=float))
    m = res["mean"]
    per = ", ".join(
        f"{s} {v['hole_psnr']:.2f}/{v['hole_ssim']:.3f}" for s, v in res["per_sequence"].items()
    )
    lp = row["leftover_psnr"]
    print("leftover PSNR " + ", ".join(f"{k} {v:.2f}" for k, v in lp.items()))
    print(
        f"hole PSNR {m['hole_psnr']:.2f} SSIM {m['hole_ssim']:.4f} | frame PSNR "
        f"{m['frame_psnr']:.2f} SSIM {m['frame_ssim']:.4f} | propagated "
        f"{100 * row['propagated_share']:.1f}% | {row['s_per_frame']:.2f} s/frame | {per}"
    )
    return 0


def _inpainter(args: argparse.Namespace) -> Inpainter:
    kw: dict = {"window": args.window, "overlap": args.overlap, "flow_preset": args.preset}
    if args.generator is not None:
        kw["use_generator"] = args.generator
    for name in ("propagation_range", "generator_max_side", "flow_dtype", "leftover_context"):
        if getattr(args, name) is not None:
            kw[name] = getattr(args, name)
    if args.flow_net is not None:
        kw["use_flow_net"] = args.flow_net
    opts = InpaintOptions(**kw)
    if args.model == "none":
        return Inpainter(model=None, options=opts, progress=False)
    weights = None if args.model == "default" else Path(args.model)
    return Inpainter.from_weights(weights, options=opts, progress=False)


def _windowed(inp: Inpainter, frames, vis, am) -> tuple[np.ndarray, np.ndarray]:
    """Each generator window inpainted as its own clip, each frame kept from its window."""
    o = inp.options
    out, prop = frames.copy(), np.zeros_like(vis)
    for s, e, k0, k1 in temporal_windows(len(frames), o.window, o.overlap):
        r = inp.inpaint(frames[s:e], vis[s:e], amodal=am[s:e], label=0)
        out[k0:k1], prop[k0:k1] = r.frames[k0 - s : k1 - s], r.propagated[k0 - s : k1 - s]
    return out, prop


def _psnr(se: float, n: int) -> float:
    """PSNR (8-bit) of a squared-error sum over ``n`` values (inf for no error / no values)."""
    return float("inf") if se == 0 or n == 0 else float(10 * np.log10(255**2 * n / se))


def _load(folder: Path, files: list[str]) -> np.ndarray:
    return np.stack([np.asarray(Image.open(folder / f)) for f in files])


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--split", type=Path, required=True, help="make_eval_split folder")
    p.add_argument("--make-split", action="store_true", help="write the split first")
    p.add_argument(
        "--davis-root",
        type=Path,
        default=REPO / ".." / "shared" / "data" / "davis2016-train-subset",
    )
    p.add_argument("--sequences", nargs="+", default=list(VOIN_EVAL))
    p.add_argument(
        "--occluder-sequences",
        nargs="+",
        default=None,
        help="sequences of --davis-root whose objects are the cutout occluders (default: the "
        "VOIN training subset's six; a sequence is never its own occluder)",
    )
    p.add_argument("--frames", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--model", default="default", help="none | default | a weights file")
    p.add_argument("--out", type=Path, required=True)
    for name in ("generator", "flow-net"):  # default: the weights file's recommendation
        p.add_argument(f"--{name}", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--windowed-propagation", action="store_true")
    p.add_argument("--propagation-range", type=int, default=None)
    p.add_argument("--generator-max-side", type=int, default=None)
    p.add_argument("--flow-dtype", default=None, choices=("float16", "float32"))
    p.add_argument(
        "--leftover-context",
        default=None,
        choices=("object", "frame"),
        help="Telea's context for the leftovers (default: InpaintOptions', object; frame: the "
        "plain 'propagation + Telea' row)",
    )
    p.add_argument("--window", type=int, default=12)
    p.add_argument("--overlap", type=int, default=4)
    p.add_argument("--preset", default="medium")
    p.add_argument("--threads", type=int, default=1, help="cv2.setNumThreads")
    return p


if __name__ == "__main__":
    sys.exit(main())
