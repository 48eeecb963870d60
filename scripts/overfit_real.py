"""Overfit a tiny real COCO-format set to prove the image pipeline end to end on real photos.

Takes ``--per-seq`` frames from each sequence of the DAVIS-2016 train subset in ``../shared/data``
(its per-frame COCO JSON; one class-agnostic object per frame), trains the fast default model on
them and evaluates COCO AP on the same images (memorisation, not generalisation: the point is
that AP rises far above chance through the real loader, transforms, model, evaluator):

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python scripts/overfit_real.py --out runs/overfit_real

Writes ``OUT/subset.json`` (read only from ../shared, nothing copied) and the usual run folder.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from instseg.config import apply_overrides
from instseg.recipes.image import train
from instseg.recipes.image_config import ImageTrainConfig
from instseg.utils.io import atomic_write_json, read_json

DAVIS = Path(__file__).resolve().parents[2] / "shared" / "data" / "davis2016-train-subset"


def subset(gt: Path, out: Path, per_seq: int) -> Path:
    data = read_json(gt)
    by_video: dict[int, list[dict]] = {}
    for im in sorted(data["images"], key=lambda i: (i["video_id"], i["frame_id"])):
        by_video.setdefault(im["video_id"], []).append(im)
    keep = []
    for ims in by_video.values():
        step = max(1, len(ims) // per_seq)
        keep += ims[::step][:per_seq]
    ids = {im["id"] for im in keep}
    anns = [a for a in data["annotations"] if a["image_id"] in ids]
    atomic_write_json(out, {"images": keep, "annotations": anns, "categories": data["categories"]})
    return out


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--out", default="runs/overfit_real")
    p.add_argument("--per-seq", type=int, default=2)
    p.add_argument("--iters", type=int, default=150)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    gt = DAVIS / "annotations_json" / "davis2016_train_subset_coco.json"
    if not gt.is_file():
        raise SystemExit(f"{gt}: not found (needs ../shared/data)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    sub = subset(gt, out / "subset.json", args.per_seq)
    root = DAVIS / "JPEGImages" / "480p"
    cfg = apply_overrides(ImageTrainConfig(), [
        f"data.train_json={sub}", f"data.train_root={root}",
        f"data.test_json={sub}", f"data.test_root={root}",
        "data.min_size=[256]", "data.max_size=456", "data.test_min_size=256",
        "data.batch_size=4", "data.flip=0.0",
        f"solver.max_iters={args.iters}", "solver.warmup_iters=20", "solver.lr=0.002",
        f"out_dir={out}", f"seed={args.seed}", "checkpoint_period=0", "log_period=10",
    ])  # fmt: skip
    metrics = train(cfg, progress=False)
    print(
        json.dumps({k: {m: round(v, 1) for m, v in metrics[k].items()} for k in ("segm", "bbox")})
    )


if __name__ == "__main__":
    main()
