"""Semi-supervised VOS (first-frame mask propagation) on held-out DAVIS-2016-subset sequences
and, with ``--synthetic N``, on N seeded multi-object synthetic videos: instance-prototype
propagation (``instseg propagate``), the standard label-propagation protocol and the baselines
side by side, J&F by ``instseg.evaluation.vos`` (DAVIS protocol: first and last frame excluded,
means over objects).

Methods (all get only frame 0's GT mask):

- ``prototypes``: :class:`PrototypePropagator` with its defaults (GMM-EM fg/bg key prototypes
  with soft-label values, running set = last frame's (Eq. 5.8 "off"), first-frame prototypes
  kept, spatial window 1 object radius / at least 10 cells);
- ``nn-affinity``: :class:`FeatureNNPropagator` (top-20 softmax(cos/0.05) vote of first-frame
  pixel labels, same features, same spatial window);
- ``nn-affinity-nowin``: the same without the window (plain first-frame label propagation);
- ``labelprop``: :class:`ContextLabelPropagator`, the standard label-propagation protocol of
  self-supervised correspondence work: top-10 softmax(cos/0.07) vote over the first frame (GT
  labels) and the 20 most recent frames (propagated soft labels, only within 12 feature cells
  of the pixel);
- ``labelprop-first``: the same with the first frame only (no queue);
- ``dis-flow``: chained OpenCV DIS (medium) backward-flow warping of the first mask;
- ``prototypes:KEY=VALUE,...`` / ``labelprop:KEY=VALUE,...``: other settings (ablations), e.g.
  ``prototypes:update=momentum,momentum=0.5`` or ``labelprop:num_recent=5,radius=8``;
- any feature method with the suffix ``-trained`` (needs ``--weights W``): the same on W's
  features (a propagation embedding such as ``propagation_default.pt`` on top of the ImageNet
  features, or the fine-tuned backbone of an image / PCAN model). ``prototypes-trained`` with
  the shipped embedding is what ``instseg propagate --weights`` runs. Given ``--weights`` and no
  ``-trained`` method, ``prototypes-trained`` is added.

Held-out sequences (default): bus, soccerball, mallard-fly (also kept out of the PCAN video
training data, ``configs/pcan_synthetic.yaml``). Hyper-parameters were set on boat, flamingo,
rollerblade, breakdance-flare, dance-jump and elephant only. The frames are processed at
``--max-side`` pixels (longer side; DAVIS is 854x480, the default keeps it) and J&F is computed
at the full 854x480 GT resolution. ``--sequences none`` skips DAVIS.

Synthetic videos (``--synthetic N``): clip v is ``instseg.data.synthetic_video.render_video``
drawn from ``numpy.random.default_rng([--synthetic-seed, v])`` (procedural textured shapes over
a procedural background, straight-line motion, occlusions as they pass), 2-4 objects, all in
the first frame (no entering objects), ``--synthetic-frames`` frames of ``--synthetic-size``
pixels. DAVIS-style label maps from the visible masks: object k = the k-th object (nearest
first) visible in frame 0 with at least ``min_visible_area`` pixels; objects hidden in frame 0
count as background (no method is told about them).

Examples (about 10 minutes each on 2 shared CPU cores)::

    python scripts/davis_semisup.py --weights src/instseg/weights/pcan_default.pt
    python scripts/davis_semisup.py --threads 1 --max-frames 25 --synthetic 8 \\
        --weights src/instseg/weights/propagation_default.pt \\
        --methods dis-flow nn-affinity labelprop-first labelprop prototypes-trained \\
        labelprop-trained
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from instseg.data.davis import list_davis_sequences, read_davis_label
from instseg.data.davis_splits import SEMISUP_HELD_OUT
from instseg.data.synthetic import SceneConfig
from instseg.data.synthetic_video import VideoConfig, render_video
from instseg.evaluation.vos import db_statistics, evaluate_sequence
from instseg.inference.mask_propagation import BackboneFeatures, propagate_features
from instseg.models.video.mask_propagation import PrototypePropagator
from instseg.models.video.mask_propagation_baselines import FeatureNNPropagator, flow_propagate
from instseg.models.video.mask_propagation_labelprop import ContextLabelPropagator
from instseg.utils.image import read_image

DEFAULT_ROOT = (
    Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "davis2016-train-subset"
)
HELD_OUT = SEMISUP_HELD_OUT


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--root", default=str(DEFAULT_ROOT), help="DAVIS folder (JPEGImages/, Annotations/)"
    )
    p.add_argument("--sequences", nargs="+", default=list(HELD_OUT), help="'none': no DAVIS")
    p.add_argument("--max-side", type=int, default=854, help="longer side the methods see")
    p.add_argument(
        "--weights",
        default=None,
        help="propagation embedding or PCAN/image model file for the '-trained' methods",
    )
    p.add_argument("--max-frames", type=int, default=0, help="first N frames per sequence (0: all)")
    p.add_argument(
        "--methods",
        nargs="+",
        default=["prototypes", "nn-affinity", "nn-affinity-nowin", "dis-flow"],
    )
    p.add_argument("--synthetic", type=int, default=0, help="also N synthetic multi-object videos")
    p.add_argument("--synthetic-seed", type=int, default=1000)
    p.add_argument("--synthetic-frames", type=int, default=16)
    p.add_argument("--synthetic-size", type=int, nargs=2, default=[240, 320], help="H W")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=None, help="write results JSON here")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    trained_methods = [m for m in args.methods if m.endswith("-trained")]
    if args.weights and not trained_methods:
        args.methods = [*args.methods, "prototypes-trained"]
    elif trained_methods and not args.weights:
        raise SystemExit(f"{trained_methods} need --weights")
    extractors = {"imagenet": BackboneFeatures(max_side=args.max_side)}
    if args.weights:
        extractors["trained"] = BackboneFeatures(max_side=args.max_side, weights=args.weights)
    out: dict[str, object] = {"settings": vars(args)}
    tables = []
    if args.sequences != ["none"]:
        davis = _evaluate(_davis_videos(args), extractors, args)
        tables.append("DAVIS held-out sequences\n" + _table(*davis, args, columns=True))
        out["davis"] = _results(*davis)
    if args.synthetic > 0:
        synth = _evaluate(_synthetic_videos(args), extractors, args)
        tables.append(
            f"synthetic multi-object videos ({args.synthetic}, seed {args.synthetic_seed})\n"
            + _table(*synth, args, columns=False)
        )
        out["synthetic"] = _results(*synth)
    table = "\n\n".join(tables)
    print(table)
    if args.out:
        out["table"] = table
        Path(args.out).write_text(json.dumps(out, indent=2))


Video = tuple[str, list[np.ndarray], list[np.ndarray]]  # name, RGB frames, label maps


def _davis_videos(args: argparse.Namespace) -> Iterator[Video]:
    for seq in list_davis_sequences(args.root, sequences=args.sequences):
        n = len(seq) if args.max_frames <= 0 else min(len(seq), args.max_frames)
        frames = [read_image(f) for f in seq.frame_paths[:n]]
        gts = [read_davis_label(lp) for lp in seq.label_paths[:n]]  # type: ignore[arg-type]
        yield seq.name, frames, gts


def _synthetic_videos(args: argparse.Namespace) -> Iterator[Video]:
    """Seeded multi-object clips with DAVIS-style label maps (see the module docstring)."""
    scene = SceneConfig(
        image_size=tuple(args.synthetic_size), min_objects=2, max_objects=4, occlusion=0.3
    )
    cfg = VideoConfig(scene=scene, num_frames=args.synthetic_frames, enter_prob=0.0)
    for v in range(args.synthetic):
        clip = render_video(np.random.default_rng([args.synthetic_seed, v]), cfg)
        shown = [o for o in clip.objects if o["annotated"][0]]
        gts = []
        for t in range(cfg.num_frames):
            lab = np.zeros(scene.image_size, np.uint8)
            for k, o in enumerate(shown, 1):
                lab[o["visible"][t]] = k  # visible masks are disjoint
            gts.append(lab)
        yield f"synthetic-{v:03d}", clip.frames, gts


def _evaluate(videos, extractors, args):  # noqa: ANN001, ANN202
    rows: dict[str, dict[str, list]] = {
        m: {"J": [], "F": [], "time": [], "frames": []} for m in args.methods
    }
    per_video: dict[str, dict[str, float]] = {}
    for name, frames, gts in videos:
        n = len(frames)
        feats, t_feat = {}, {}
        for key, extract in extractors.items():
            if any(_source(m) == key for m in args.methods):
                t0 = time.perf_counter()
                feats[key] = [extract(f) for f in frames]
                t_feat[key] = time.perf_counter() - t0
        stride = extractors["imagenet"].stride(gts[0].shape)
        for method in args.methods:
            t0 = time.perf_counter()
            src = _source(method)
            base = method.removesuffix("-trained")
            if base == "dis-flow":
                preds = list(
                    flow_propagate(frames, gts[0], preset="medium", max_side=args.max_side)
                )
                extra = 0.0
            else:
                prop = _propagator(base)
                preds = list(propagate_features(feats[src], gts[0], propagator=prop, stride=stride))
                extra = t_feat[src]
            dt = time.perf_counter() - t0 + extra
            res = evaluate_sequence(preds, gts)
            js = [db_statistics(o["J"])[0] for o in res.values()]
            fs = [db_statistics(o["F"])[0] for o in res.values()]
            rows[method]["J"] += js
            rows[method]["F"] += fs
            rows[method]["time"].append(dt)
            rows[method]["frames"].append(n)
            per_video.setdefault(name, {})[method] = (np.mean(js) + np.mean(fs)) * 50
            print(
                f"{name:14s} {method:22s} J&F {per_video[name][method]:5.1f}  "
                f"({n} frames, {len(res)} objects, {dt:.1f} s)",
                flush=True,
            )
    return rows, per_video


def _source(method: str) -> str:
    """Which features a method reads: "trained" (``-trained``), "imagenet" or "" (flow)."""
    if method.removesuffix("-trained") == "dis-flow":
        return ""
    return "trained" if method.endswith("-trained") else "imagenet"


def _propagator(method: str):  # noqa: ANN202
    if method == "prototypes":
        return PrototypePropagator()
    if method.startswith("prototypes:"):  # e.g. prototypes:update=momentum,momentum=0.5
        return PrototypePropagator(**_kwargs(method.split(":", 1)[1]))
    if method == "nn-affinity":
        return FeatureNNPropagator()
    if method == "nn-affinity-nowin":
        return FeatureNNPropagator(window=0.0)
    if method == "labelprop":
        return ContextLabelPropagator()
    if method == "labelprop-first":
        return ContextLabelPropagator(num_recent=0)
    if method.startswith("labelprop:"):  # e.g. labelprop:num_recent=5,radius=8
        return ContextLabelPropagator(**_kwargs(method.split(":", 1)[1]))
    raise SystemExit(f"unknown method {method!r}")


def _kwargs(spec: str) -> dict[str, object]:
    """ "update=momentum,momentum=0.5,num_fg=5" -> keyword arguments (numbers parsed)."""
    out: dict[str, object] = {}
    for item in filter(None, spec.split(",")):
        key, _, value = item.partition("=")
        try:
            out[key] = int(value)
        except ValueError:
            try:
                out[key] = float(value)
            except ValueError:
                out[key] = value
    return out


def _summary(r: dict[str, list]) -> dict[str, float]:
    j, f = float(np.nanmean(r["J"])) * 100, float(np.nanmean(r["F"])) * 100
    ms = 1000 * sum(r["time"]) / max(1, sum(r["frames"]))
    return {"J&F-Mean": (j + f) / 2, "J-Mean": j, "F-Mean": f, "ms_per_frame": ms}


def _results(rows, per_video) -> dict[str, object]:  # noqa: ANN001
    return {"per_video": per_video, "overall": {m: _summary(r) for m, r in rows.items()}}


def _table(rows, per_video, args, *, columns: bool) -> str:  # noqa: ANN001
    """Markdown table: overall J&F, J, F (means over objects), per-video J&F (``columns``)."""
    names = list(per_video) if columns else []
    head = "| method | J&F | J | F | " + "".join(f"{s} J&F | " for s in names) + "ms/frame |"
    lines = [head, "|" + "---|" * (5 + len(names))]
    for m, r in rows.items():
        s = _summary(r)
        cells = "".join(f"{per_video[q][m]:.1f} | " for q in names)
        lines.append(
            f"| {m} | {s['J&F-Mean']:.1f} | {s['J-Mean']:.1f} | {s['F-Mean']:.1f} | "
            f"{cells}{s['ms_per_frame']:.0f} |"
        )
    frames = "all" if args.max_frames <= 0 or not columns else f"first {args.max_frames}"
    objects = sum(len(r["J"]) for r in rows.values()) // max(1, len(rows))
    lines.append(
        f"\n{len(per_video)} videos, {objects} objects; frames: {frames} per video; methods see "
        f"frames at longer side <= {args.max_side}px; J&F at the GT resolution; ms/frame includes "
        f"feature extraction (shared by the feature methods, counted for each)."
    )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
