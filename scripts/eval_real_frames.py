"""Does an image model find real objects in whole real frames (not pasted composites)?

For each held-out DAVIS-2016 sequence (default: ``instseg.data.davis_splits.IMAGE_HELD_OUT``,
never seen by ``objects_default.pt`` in training), ``--frames`` evenly spaced frames are run
through :class:`~instseg.inference.predictor.ImagePredictor`; the one annotated object of each
frame is *found* when some detection with score >= ``--conf`` has mask IoU >= 0.5 with it.
DAVIS annotates one object per frame and leaves others (bystanders, cars) unlabelled, so
precision-type metrics (AP) are not meaningful here; the script reports recall-type numbers:
found share, mean best IoU among confident detections, and the number of confident detections
per frame (clutter). ::

    .venv/bin/python scripts/eval_real_frames.py --weights src/instseg/weights/objects_default.pt
    .venv/bin/python scripts/eval_real_frames.py --weights src/instseg/weights/demo_image.pt
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np
import torch

from instseg.data.davis_splits import IMAGE_HELD_OUT
from instseg.data.synthetic_cutouts import find_davis_roots
from instseg.inference.predictor import ImagePredictor
from instseg.structures.masks import mask_iou


def frames_of(sequence: str, n: int) -> list[tuple[Path, Path]]:
    for root in find_davis_roots():
        ann = root / "Annotations" / "480p" / sequence
        if ann.is_dir():
            pngs = sorted(ann.glob("*.png"))
            idx = np.unique(np.linspace(0, len(pngs) - 1, n).round().astype(int))
            img = root / "JPEGImages" / "480p" / sequence
            return [(img / (pngs[i].stem + ".jpg"), pngs[i]) for i in idx]
    raise SystemExit(f"sequence {sequence!r} not found in the shared DAVIS folders")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--weights", default=None, help="image model (default: the shipped default)")
    p.add_argument("--sequences", nargs="+", default=list(IMAGE_HELD_OUT))
    p.add_argument("--frames", type=int, default=5, help="frames per sequence")
    p.add_argument("--conf", type=float, default=0.25)
    p.add_argument("--out", default=None, help="write the numbers as JSON here")
    args = p.parse_args()
    if args.weights is None:
        from instseg.engine.weights import shipped_weights

        args.weights = str(shipped_weights("image"))
    predictor = ImagePredictor(args.weights, device="cpu", score_thresh=args.conf)
    per_seq: dict[str, dict[str, float]] = {}
    for seq in args.sequences:
        found, best, counts = [], [], []
        for jpg, png in frames_of(seq, args.frames):
            rgb = cv2.imread(str(jpg))[..., ::-1].copy()
            gt = torch.from_numpy(cv2.imread(str(png), cv2.IMREAD_GRAYSCALE) > 0)[None]
            inst = predictor(rgb)
            counts.append(len(inst))
            iou = float(mask_iou(inst.masks, gt).max()) if len(inst) else 0.0
            best.append(iou)
            found.append(iou >= 0.5)
        per_seq[seq] = {
            "found": float(np.mean(found)),
            "best_iou": float(np.mean(best)),
            "detections_per_frame": float(np.mean(counts)),
        }
        print(f"{seq:>14}: found {per_seq[seq]['found']:.2f}  best IoU "
              f"{per_seq[seq]['best_iou']:.2f}  detections/frame "
              f"{per_seq[seq]['detections_per_frame']:.1f}")  # fmt: skip
    mean = {
        k: float(np.mean([v[k] for v in per_seq.values()])) for k in next(iter(per_seq.values()))
    }
    print(f"{'mean':>14}: found {mean['found']:.2f}  best IoU {mean['best_iou']:.2f}  "
          f"detections/frame {mean['detections_per_frame']:.1f}  ({args.weights})")  # fmt: skip
    if args.out:
        data = {"weights": args.weights, "conf": args.conf, "mean": mean, "sequences": per_seq}
        Path(args.out).write_text(json.dumps(data, indent=2))


if __name__ == "__main__":
    main()
