"""Table 5.8-style VOIN comparison on held-out DAVIS sequences and on synthetic videos.

    # tiny check (minutes on one core; tiny weights from train_voin.py --stage all --tiny)
    OMP_NUM_THREADS=1 .venv/bin/python scripts/repro_voin.py --weights runs/voin_tiny/voin.pt \\
        --sequences boat --frames 6 --synthetic 2 --synth-frames 6 --out /tmp/repro_voin_tiny
    # the table of the shipped default's model card
    .venv/bin/python scripts/repro_voin.py --weights src/instseg/weights/voin_default.pt \\
        --frames 20 --synthetic 4 --out runs/repro_voin

Data (both written in the ``make_eval_split`` layout, ``<kind>/<seq>/%05d.png``):

- ``davis``: :func:`make_eval_split` on the held-out sequences (boat, bus, elephant; the
  training script leaves them out) with moving pasted occluders, seed ``--seed``; the same split
  as ``scripts/voin_baselines.py``.
- ``synthetic``: the clips ``instseg data synth-video --seed 1000 --size S --frames T
  --occlusion 0.8 --cutouts none`` writes (same generator and per-clip RNG
  ``default_rng([seed, v])``), re-drawn in process to get each sprite: the target is the object
  with the most occluded pixels among those in every frame; the occluded part is real (other
  sprites), ``amodal`` is exact and ``gt`` is the frame with the target drawn back on top.

Methods (all given the ground-truth hole and amodal masks, scored inside the hole):

=====================  ==========================================================================
telea / navier-stokes  per-frame ``cv2.inpaint``
prop (DIS)             DIS flow of the corrupted frames, propagation (5 px cycle check), Telea
prop (filled DIS)      the same after the non-learned initial completion of the hole flow
                       (``fill_clip_flows``: the object's own visible flow, normalised convolution)
prop + obj. Telea      the same, Telea drawing on the object's own known pixels only (VOIN's
                       occlusion-aware leftover fill, ``leftover_context="object"``, non-learned;
                       the learned rows use it too, the rows above plain Telea)
prop (completed flow)  the filled flow refined by FlowCompletionNet inside the amodal mask
generator only         VOIN with ``InpaintOptions(use_flow=False)``
VOIN (no flow net)     VOIN without the learned flow completion (``use_flow_net=False``):
                       propagation on the non-learned filled flow, then the generator
VOIN                   flow completion + propagation over the whole clip + generator (crops at
                       the generator's trained scale, the file's ``model.stage_sizes``)
VOIN (pred. amodal)    VOIN with amodal masks from its shape completion (scored on the GT hole)
=====================  ==========================================================================

Timing is wall time on this machine, seconds per frame, for each stage (shape completion, DIS,
flow completion = ``Inpainter.complete_flows`` time minus the DIS time of the same clip,
propagation, generator, Telea) and end to end per method. Without weights the learned rows are
skipped.
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import sys
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from voin_baselines import EVAL_SEQUENCES, OCCLUDER_SEQUENCES, load_pngs, save_pngs  # noqa: E402

from instseg.data.synthetic import SceneConfig, composite  # noqa: E402
from instseg.data.synthetic_video import VideoConfig, make_video  # noqa: E402
from instseg.data.video_occlusion import SPLIT_KINDS, make_eval_split  # noqa: E402
from instseg.engine.weights import WeightsMeta  # noqa: E402
from instseg.evaluation.inpainting import evaluate_inpainting  # noqa: E402
from instseg.inference.inpainter import (  # noqa: E402
    DEFAULT_WEIGHTS,
    Inpainter,
    InpaintOptions,
    load_voin_weights,
)
from instseg.models.inpainting.baselines import (  # noqa: E402
    inpaint_opencv,
    propagation_baseline,
)
from instseg.models.inpainting.flow import clip_flows, fill_clip_flows  # noqa: E402
from instseg.models.inpainting.voin import VOINModel, VOINNets  # noqa: E402
from instseg.utils.io import atomic_write_json  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
BASELINES = ("telea", "navier-stokes", "prop (DIS)", "prop (filled DIS)", "prop + obj. Telea")
LEARNED = (
    "prop (completed flow)",
    "generator only",
    "VOIN (no flow net)",
    "VOIN",
    "VOIN (pred. amodal)",
)
STAGES = ("shape", "dis", "flow completion", "propagation", "generator", "telea")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    cv2.setNumThreads(args.threads)
    nets, meta = _load_nets(args.weights)
    splits = {"davis": _davis_split(args), "synthetic": _synthetic_split(args)}
    results: dict[str, Any] = {}
    for name, (split, manifest) in splits.items():
        if not manifest["sequences"]:
            print(f"{name}: no usable clips, skipped")
            continue
        results[name] = _run_split(name, split, manifest, nets, meta, args)
        _print_table(name, results[name], nets is not None)
    atomic_write_json(
        args.out / "results.json",
        {
            "args": {k: str(v) for k, v in vars(args).items()},
            "weights_meta": meta,
            "machine": _machine(args),
            "results": results,
        },
        indent=1,
    )
    print(f"wrote {args.out / 'results.json'}")
    return 0


# ---------------------------------------------------------------------------------- splits
def _davis_split(args: argparse.Namespace) -> tuple[Path, dict]:
    split = args.out / "davis" / "split"
    manifest = make_eval_split(
        args.davis_root,
        args.sequences,
        seed=args.seed,
        out_dir=split,
        num_frames=args.frames,
        occlusion_ratio=tuple(args.ratio),
        occluder_sequences=args.occluder_sequences,
        synthetic_prob=0.5,
    )
    return split, manifest


def make_synthetic_split(
    out: Path,
    *,
    num_videos: int,
    seed: int,
    size: tuple[int, int],
    frames: int,
    occlusion: float = 0.8,
) -> dict[str, Any]:
    """Synthetic clips with real occlusion and exact de-occluded ground truth (module
    docstring), written like :func:`make_eval_split`; returns the manifest."""
    cfg = VideoConfig(scene=SceneConfig(image_size=size, occlusion=occlusion), num_frames=frames)
    manifest: dict[str, Any] = {
        "seed": seed,
        "size": list(size),
        "frames": frames,
        "occlusion": occlusion,
        "sequences": {},
        "skipped": 0,
    }
    for v in range(num_videos):
        rendered, objects = make_video(np.random.default_rng([seed, v]), cfg)
        fr = np.stack(rendered)
        best, best_n = None, 0
        for i, o in enumerate(objects):
            am, vis = np.stack(o["amodal"]), np.stack(o["visible"])
            n = int((am & ~vis).sum())
            if vis.any((1, 2)).all() and n > best_n:
                best, best_n = i, n
        if best is None:
            manifest["skipped"] += 1
            continue
        o = objects[best]
        am, vis = np.stack(o["amodal"]), np.stack(o["visible"])
        near = [np.stack(x["amodal"]) for x in objects[:best]]
        occ = np.any(near, axis=0) if near else np.zeros_like(am)
        gt = np.stack(
            [composite(f, [(o["sprite"], p)]) for f, p in zip(fr, o["positions"], strict=True)]
        )
        arrays = {
            "frames": fr,
            "gt": gt,
            "visible": vis,
            "holes": am & ~vis,
            "amodal": am,
            "occluder": occ,
        }
        name = f"{v + 1:06d}"
        files = [f"{t:05d}.png" for t in range(frames)]
        for kind in SPLIT_KINDS:
            a = arrays[kind]
            save_pngs(
                out / kind / name, files, a if a.dtype == np.uint8 else a.astype(np.uint8) * 255
            )
        manifest["sequences"][name] = {
            "files": files,
            "object": o["name"],
            "achieved_ratio": float(
                np.mean((am & ~vis).sum((1, 2)) / np.maximum(am.sum((1, 2)), 1))
            ),
        }
    atomic_write_json(out / "manifest.json", manifest, indent=1)
    return manifest


def _synthetic_split(args: argparse.Namespace) -> tuple[Path, dict]:
    split = args.out / "synthetic" / "split"
    m = make_synthetic_split(
        split,
        num_videos=args.synthetic,
        seed=args.synth_seed,
        size=(args.synth_size, args.synth_size),
        frames=args.synth_frames,
    )
    return split, m


# ------------------------------------------------------------------------------------ methods
def _run_split(
    name: str,
    split: Path,
    manifest: dict,
    nets: VOINNets | None,
    meta: dict,
    args: argparse.Namespace,
) -> dict[str, Any]:
    methods = BASELINES + (LEARNED if nets is not None else ())
    timing = {m: 0.0 for m in methods}
    stages = {s: 0.0 for s in STAGES}
    n_frames, shape_iou = 0, []
    pipes = _pipelines(nets, meta, args) if nets is not None else {}
    for seq, info in manifest["sequences"].items():
        frames = load_pngs(split / "frames" / seq, info["files"])
        vis, holes, am = (
            load_pngs(split / k / seq, info["files"]) > 127 for k in ("visible", "holes", "amodal")
        )
        n_frames += len(frames)
        outs = _baselines(frames, holes, am, timing, stages, args)
        if nets is not None:
            outs.update(_learned(pipes, frames, vis, holes, am, timing, stages, shape_iou))
        for m, out in outs.items():
            save_pngs(args.out / name / "pred" / m / seq, info["files"], out)
    res = {
        m: evaluate_inpainting(args.out / name / "pred" / m, split / "gt", split / "holes")
        for m in methods
    }
    return {
        "num_frames": n_frames,
        "hw": list(frames.shape[1:3]),
        "methods": {m: {**r["mean"], "s_per_frame": timing[m] / n_frames} for m, r in res.items()},
        "per_sequence": {m: r["per_sequence"] for m, r in res.items()},
        "stages_s_per_frame": {s: t / n_frames for s, t in stages.items()},
        "shape_iou": float(np.mean(shape_iou)) if shape_iou else None,
    }


def _baselines(frames, holes, am, timing, stages, args) -> dict[str, np.ndarray]:
    outs = {}
    for m, method in (("telea", "telea"), ("navier-stokes", "ns")):
        t = time.perf_counter()
        outs[m] = inpaint_opencv(frames, holes, method=method)
        dt = time.perf_counter() - t
        timing[m] += dt
        if m == "telea":
            stages["telea"] += dt
    t = time.perf_counter()
    fwd, bwd = clip_flows(frames, preset=args.preset)
    t_dis = time.perf_counter() - t
    t = time.perf_counter()
    res = propagation_baseline(frames, holes, fwd, bwd, amodal=am)
    t_prop = time.perf_counter() - t
    stages["dis"] += t_dis
    stages["propagation"] += t_prop  # includes Telea on the leftovers (small)
    timing["prop (DIS)"] += t_dis + t_prop
    outs["prop (DIS)"] = res.frames
    t = time.perf_counter()
    fwd, bwd = fill_clip_flows(fwd, bwd, holes, am & ~holes)
    res = propagation_baseline(frames, holes, fwd, bwd, amodal=am)
    timing["prop (filled DIS)"] += t_dis + time.perf_counter() - t
    outs["prop (filled DIS)"] = res.frames
    t = time.perf_counter()
    res = propagation_baseline(frames, holes, fwd, bwd, amodal=am, object_context=True)
    timing["prop + obj. Telea"] += t_dis + time.perf_counter() - t
    outs["prop + obj. Telea"] = res.frames
    return outs


def _pipelines(nets: VOINNets, meta: dict, args: argparse.Namespace) -> dict[str, Inpainter]:
    opts = InpaintOptions(  # every learned stage on, whatever the file recommends (its rows)
        use_flow_net=True,
        use_generator=True,
        window=args.window,
        overlap=args.overlap,
        flow_preset=args.preset,
        canvas_size=int(meta.get("model", {}).get("canvas_size", 64)),
    )
    model = VOINModel.from_nets(nets)
    no_flow = dataclasses.replace(opts, use_flow=False)
    wmeta = WeightsMeta.from_dict(meta)  # the generator's trained scale (model.stage_sizes)
    return {
        "VOIN": Inpainter(model=model, options=opts, meta=wmeta, progress=False),
        "generator only": Inpainter(model=model, options=no_flow, meta=wmeta, progress=False),
        "VOIN (no flow net)": Inpainter(
            model=model,
            options=dataclasses.replace(opts, use_flow_net=False),
            meta=wmeta,
            progress=False,
        ),
    }


def _learned(pipes, frames, vis, holes, am, timing, stages, shape_iou) -> dict[str, np.ndarray]:
    outs = {}
    t = time.perf_counter()
    fwd, bwd = pipes["VOIN"].complete_flows(frames, vis, am)
    t_flow = time.perf_counter() - t
    t = time.perf_counter()
    clip_flows(frames, preset=pipes["VOIN"].options.flow_preset)
    stages["flow completion"] += max(t_flow - (time.perf_counter() - t), 0.0)
    t = time.perf_counter()
    outs["prop (completed flow)"] = propagation_baseline(frames, holes, fwd, bwd, amodal=am).frames
    timing["prop (completed flow)"] += t_flow + time.perf_counter() - t
    t = time.perf_counter()
    outs["generator only"] = pipes["generator only"].inpaint(frames, vis, amodal=am).frames
    timing["generator only"] += (dt := time.perf_counter() - t)
    stages["generator"] += dt
    t = time.perf_counter()
    outs["VOIN (no flow net)"] = pipes["VOIN (no flow net)"].inpaint(frames, vis, amodal=am).frames
    timing["VOIN (no flow net)"] += time.perf_counter() - t
    t = time.perf_counter()
    outs["VOIN"] = pipes["VOIN"].inpaint(frames, vis, amodal=am).frames
    timing["VOIN"] += time.perf_counter() - t
    t = time.perf_counter()
    pred = pipes["VOIN"].complete_shape(vis, 0)
    stages["shape"] += time.perf_counter() - t
    inter, union = (pred & am).sum(), (pred | am).sum()
    shape_iou.append(float(inter / union) if union else 1.0)
    t = time.perf_counter()
    outs["VOIN (pred. amodal)"] = pipes["VOIN"].inpaint(frames, vis, label=0).frames
    timing["VOIN (pred. amodal)"] += time.perf_counter() - t
    return outs


# -------------------------------------------------------------------------------------- output
def _print_table(name: str, r: dict[str, Any], learned: bool) -> None:
    h, w = r["hw"]
    print(f"\n{name}: {r['num_frames']} frames of {h}x{w}")
    head = (
        f"| {'method':<22} | {'hole PSNR':>9} | {'hole SSIM':>9} | {'frame PSNR':>10} | "
        f"{'frame SSIM':>10} | {'s/frame':>7} |"
    )
    print(head)
    print("|" + "|".join("-" * len(c) for c in head.split("|")[1:-1]) + "|")
    for m, v in r["methods"].items():
        print(
            f"| {m:<22} | {v['hole_psnr']:9.2f} | {v['hole_ssim']:9.4f} | "
            f"{v['frame_psnr']:10.2f} | {v['frame_ssim']:10.4f} | {v['s_per_frame']:7.3f} |"
        )
    st = r["stages_s_per_frame"]
    print(
        "stages, s/frame: "
        + ", ".join(
            f"{s} {t:.4f}" for s, t in st.items() if learned or s in ("dis", "propagation", "telea")
        )
    )
    if r["shape_iou"] is not None:
        print(f"shape completion amodal IoU vs GT: {r['shape_iou']:.3f}")


def _load_nets(path: Path | None) -> tuple[VOINNets | None, dict]:
    if path is None:
        if not DEFAULT_WEIGHTS.is_file():
            print(f"no --weights and no {DEFAULT_WEIGHTS}: learned rows skipped")
            return None, {}
        path = DEFAULT_WEIGHTS
    nets, wmeta = load_voin_weights(path)
    overlap = set(wmeta.training.get("train_sequences", [])) & set(EVAL_SEQUENCES)
    if overlap:
        print(f"WARNING: {path} was trained on evaluation sequences {sorted(overlap)}")
    print(
        f"weights: {path} (variant {wmeta.model.get('variant')}, iterations "
        f"{wmeta.training.get('iterations')}, trained={wmeta.trained})"
    )
    return nets, wmeta.to_dict()


def _machine(args: argparse.Namespace) -> str:
    return f"{platform.processor() or platform.machine()}, {args.threads} OpenCV thread(s)"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--weights", type=Path, default=None, help="VOIN weights file")
    p.add_argument(
        "--davis-root",
        type=Path,
        default=REPO / ".." / "shared" / "data" / "davis2016-train-subset",
    )
    p.add_argument("--out", type=Path, default=Path("/tmp/repro_voin"))
    p.add_argument("--sequences", nargs="+", default=list(EVAL_SEQUENCES))
    p.add_argument("--occluder-sequences", nargs="*", default=list(OCCLUDER_SEQUENCES))
    p.add_argument("--frames", type=int, default=20, help="frames per DAVIS sequence")
    p.add_argument("--seed", type=int, default=0, help="DAVIS split seed")
    p.add_argument("--ratio", type=float, nargs=2, default=(0.2, 0.5))
    p.add_argument("--synthetic", type=int, default=4, help="synthetic videos (0: none)")
    p.add_argument("--synth-seed", type=int, default=1000)
    p.add_argument("--synth-size", type=int, default=256)
    p.add_argument("--synth-frames", type=int, default=12)
    p.add_argument("--preset", default="medium", choices=("ultrafast", "fast", "medium", "fine"))
    p.add_argument("--window", type=int, default=12)
    p.add_argument("--overlap", type=int, default=4)
    p.add_argument("--threads", type=int, default=1, help="cv2.setNumThreads")
    return p


if __name__ == "__main__":
    sys.exit(main())
