"""Semi-supervised VOS on held-out DAVIS-2016-subset sequences: instance-prototype propagation
(``instseg propagate``, ImageNet EfficientNet-Lite0 features, no video training)
side by side with two baselines, J&F by ``instseg.evaluation.vos`` (DAVIS protocol: first and
last frame excluded, means over objects).

Methods (all get only frame 0's GT mask):

- ``prototypes``: :class:`PrototypePropagator` with its defaults (GMM-EM fg/bg key prototypes
  with soft-label values, running set = last frame's (Eq. 5.8 "off"), first-frame prototypes
  kept, spatial window 1 object radius / at least 10 cells);
- ``prototypes-trained`` (with ``--weights W``): the same on W's fine-tuned backbone;
- ``nn-affinity``: :class:`FeatureNNPropagator` (top-20 softmax(cos/0.05) vote of first-frame
  pixel labels, same features, same spatial window);
- ``nn-affinity-nowin``: the same without the window (plain label propagation);
- ``dis-flow``: chained OpenCV DIS (medium) backward-flow warping of the first mask;
- ``prototypes:KEY=VALUE,...``: the propagator with other settings (ablations), e.g.
  ``prototypes:update=momentum,momentum=0.5`` or ``prototypes:num_fg=5,num_bg=10``.

Held-out sequences (default): bus, soccerball, mallard-fly (also kept out of the PCAN video
training data, ``configs/pcan_synthetic.yaml``). Hyper-parameters were set on boat, flamingo,
rollerblade, breakdance-flare, dance-jump and elephant only. The frames are processed at
``--max-side`` pixels (longer side; DAVIS is 854x480, the default keeps it) and J&F is computed
at the full 854x480 GT resolution.

Example (about 10 minutes on 2 shared CPU cores)::

    python scripts/davis_semisup.py --weights src/instseg/weights/pcan_default.pt
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from instseg.data.davis import list_davis_sequences, read_davis_label
from instseg.data.davis_splits import SEMISUP_HELD_OUT
from instseg.evaluation.vos import db_statistics, evaluate_sequence
from instseg.inference.mask_propagation import BackboneFeatures, propagate_features
from instseg.models.video.mask_propagation import PrototypePropagator
from instseg.models.video.mask_propagation_baselines import FeatureNNPropagator, flow_propagate
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
    p.add_argument("--sequences", nargs="+", default=list(HELD_OUT))
    p.add_argument("--max-side", type=int, default=854, help="longer side the methods see")
    p.add_argument(
        "--weights",
        default=None,
        help="trained PCAN/image model: adds 'prototypes-trained' (its fine-tuned backbone)",
    )
    p.add_argument("--max-frames", type=int, default=0, help="first N frames per sequence (0: all)")
    p.add_argument(
        "--methods",
        nargs="+",
        default=["prototypes", "nn-affinity", "nn-affinity-nowin", "dis-flow"],
    )
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=None, help="write results JSON here")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    features = BackboneFeatures(max_side=args.max_side)
    trained = None
    if args.weights:
        trained = BackboneFeatures(max_side=args.max_side, weights=args.weights)
        args.methods = [*args.methods, "prototypes-trained"]
    rows: dict[str, dict[str, list]] = {
        m: {"J": [], "F": [], "time": [], "frames": []} for m in args.methods
    }
    per_seq: dict[str, dict[str, float]] = {}
    for seq in list_davis_sequences(args.root, sequences=args.sequences):
        n = len(seq) if args.max_frames <= 0 else min(len(seq), args.max_frames)
        frames = [read_image(f) for f in seq.frame_paths[:n]]
        gts = [read_davis_label(lp) for lp in seq.label_paths[:n]]  # type: ignore[arg-type]
        t0 = time.perf_counter()
        feats = [features(f) for f in frames]
        t_feat = time.perf_counter() - t0
        if trained is not None:
            t0 = time.perf_counter()
            tfeats = [trained(f) for f in frames]
            t_tfeat = time.perf_counter() - t0
        stride = features.stride(gts[0].shape)
        for method in args.methods:
            t0 = time.perf_counter()
            if method == "prototypes-trained":
                prop = PrototypePropagator()
                run = propagate_features(tfeats, gts[0], propagator=prop, stride=stride)
                preds, extra = list(run), t_tfeat
            else:
                preds = list(_run(method, frames, feats, gts[0], stride, args.max_side))
                extra = t_feat if method != "dis-flow" else 0.0
            dt = time.perf_counter() - t0 + extra
            res = evaluate_sequence(preds, gts)
            js = [db_statistics(o["J"])[0] for o in res.values()]
            fs = [db_statistics(o["F"])[0] for o in res.values()]
            rows[method]["J"] += js
            rows[method]["F"] += fs
            rows[method]["time"].append(dt)
            rows[method]["frames"].append(n)
            per_seq.setdefault(seq.name, {})[method] = (np.mean(js) + np.mean(fs)) * 50
            print(
                f"{seq.name:12s} {method:18s} J&F {per_seq[seq.name][method]:5.1f}  "
                f"({n} frames, {dt:.1f} s)",
                flush=True,
            )
    table = _table(rows, per_seq, args)
    print(table)
    if args.out:
        out = {
            "settings": vars(args),
            "per_sequence": per_seq,
            "overall": {m: _summary(r) for m, r in rows.items()},
            "table": table,
        }
        Path(args.out).write_text(json.dumps(out, indent=2))


def _run(method, frames, feats, first, stride, max_side):
    if method == "prototypes":
        return propagate_features(feats, first, propagator=PrototypePropagator(), stride=stride)
    if method.startswith("prototypes:"):  # e.g. prototypes:update=momentum,momentum=0.5
        prop = PrototypePropagator(**_kwargs(method.split(":", 1)[1]))
        return propagate_features(feats, first, propagator=prop, stride=stride)
    if method == "nn-affinity":
        return propagate_features(feats, first, propagator=FeatureNNPropagator(), stride=stride)
    if method == "nn-affinity-nowin":
        prop = FeatureNNPropagator(window=0.0)
        return propagate_features(feats, first, propagator=prop, stride=stride)
    if method == "dis-flow":
        return flow_propagate(frames, first, preset="medium", max_side=max_side)
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


def _table(rows, per_seq, args) -> str:
    seqs = list(per_seq)
    head = "| method | J&F | J | F | " + " | ".join(f"{s} J&F" for s in seqs) + " | ms/frame |"
    lines = [head, "|" + "---|" * (5 + len(seqs))]
    for m, r in rows.items():
        s = _summary(r)
        cells = " | ".join(f"{per_seq[q][m]:.1f}" for q in seqs)
        lines.append(
            f"| {m} | {s['J&F-Mean']:.1f} | {s['J-Mean']:.1f} | {s['F-Mean']:.1f} | "
            f"{cells} | {s['ms_per_frame']:.0f} |"
        )
    frames = "all" if args.max_frames <= 0 else f"first {args.max_frames}"
    lines.append(
        f"\nframes: {frames} per sequence; methods see frames at longer side "
        f"{args.max_side}px; J&F at 854x480; ms/frame includes feature extraction "
        f"(shared by the feature methods, counted for each)."
    )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
