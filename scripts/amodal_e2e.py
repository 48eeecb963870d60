"""Amodal instance segmentation end to end on KINS- and COCOA-layout files (issue 14,
deliverable 4; survey Tables 3.5-3.6): BCNet against the Mask R-CNN head, detector and head
trained together on amodal masks and boxes, at equal budget.

    OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE .venv/bin/python scripts/amodal_e2e.py \\
        --out runs/amodal_e2e [--heads maskrcnn bcnet] [--iters 400] [--seed 0] [--threads 1]

1. Data: the synthetic scenes of the shared objects recipe (``--config``, default
   ``configs/objects_davis.yaml``: real DAVIS cutouts over real frames with exact amodal ground
   truth; train, in-distribution test and the ``unseen`` split of held-out sequences), generated
   once into the config's cache (``instseg.recipes.image.prepare_data``), then exported to the
   KINS and COCOA-cls layouts (:func:`instseg.data.amodal_layouts.convert_amodal_layout`, the
   same as ``instseg data convert-amodal``) under ``OUT/data``.
2. Training (per head, ``instseg.recipes.image.train``): reads the ``--train-layout`` file
   (default KINS), ``model.mask_target=amodal`` (masks and boxes amodal), every head starting
   from the same state: backbone + FCOS detector of ``--weights`` (the shipped objects model,
   ``model.weights_modules=[backbone,detector]``: the partial load logs which modules loaded),
   the mask head freshly initialised; ``--iters`` iterations of the config's batches, schedule
   and seed. Finished runs (``OUT/<head>/model.pt``) are not retrained.
3. Evaluation: every model predicts the test and unseen images once; the same predictions are
   scored against the KINS-layout and the COCOA-layout GT of each split
   (:func:`instseg.evaluation.amodal.evaluate_occlusion`, pycocotools): amodal mask AP over all
   instances and over those more than 30% occluded (the primary metric, fixed before running),
   amodal box AP. ``--reference`` (default: the shipped objects model without amodal training)
   adds a row scored the same way.

Writes ``OUT/report.json`` and ``OUT/report.md`` (also printed). One seed per head: the
intervals of the head comparison are in the cached-feature head benchmark's amodal table.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import torch

from instseg.config import load_config
from instseg.data.amodal_layouts import convert_amodal_layout
from instseg.data.coco import CocoInstanceDataset
from instseg.data.transforms import build_transforms
from instseg.evaluation.amodal import evaluate_occlusion
from instseg.inference.loading import load_trained_model
from instseg.recipes.image import evaluate, prepare_data, train
from instseg.recipes.image_config import ImageTrainConfig
from instseg.utils.io import atomic_write_json, atomic_write_text
from instseg.utils.precision import cpu_name

ROOT = Path(__file__).resolve().parents[1]
LAYOUTS = ("kins", "cocoa_cls")
SETS = ("test", "unseen")
log = logging.getLogger("amodal_e2e")


def export_layouts(cfg: ImageTrainConfig, out: Path) -> dict[str, dict[str, tuple[Path, Path]]]:
    """``{split: {layout: (json, image root)}}`` for train / test / unseen x KINS / COCOA-cls."""
    splits = prepare_data(cfg.data, out)
    if splits.unseen_json is None:
        raise SystemExit("the config has no unseen split (data.synthetic.held_out + shared DAVIS)")
    src = {
        "train": (splits.train_json, splits.train_root),
        "test": (splits.test_json, splits.test_root),
        "unseen": (splits.unseen_json, splits.unseen_root),
    }
    files: dict[str, dict[str, tuple[Path, Path]]] = {}
    for split, (json_path, root) in src.items():
        files[split] = {}
        for layout in LAYOUTS:
            dst = out / "data" / f"{split}_{layout}.json"
            if not dst.is_file():
                counts = convert_amodal_layout(Path(json_path), dst, layout=layout)
                log.info("%s %s: %s", split, layout, counts)
            files[split][layout] = (dst, Path(root))
    return files


def train_head(
    head: str, files: dict[str, Any], args: argparse.Namespace, out: Path
) -> tuple[Path, float]:
    """Train ``head`` amodally; returns (model.pt, seconds; 0 when it was already trained)."""
    run = out / head
    if (run / "model.pt").is_file():
        log.info("%s: %s exists, not retrained", head, run / "model.pt")
        return run / "model.pt", 0.0
    train_json, train_root = files["train"][args.train_layout]
    test_json, test_root = files["test"][args.train_layout]
    overrides = [
        f"model.name=effl0_fcos_{head}",
        f"model.weights={args.weights}",
        "model.weights_modules=[backbone,detector]",
        "model.mask_target=amodal",
        f"data.train_json={train_json}",
        f"data.train_root={train_root}",
        f"data.test_json={test_json}",
        f"data.test_root={test_root}",
        f"solver.max_iters={args.iters}",
        f"solver.warmup_iters={min(100, args.iters // 8)}",
        "evaluation.occluded=true",
        "evaluation.min_occlusion=0.3",
        f"seed={args.seed}",
        f"threads={args.threads}",
        "eval_period=0",
        f"out_dir={run}",
    ]
    cfg = load_config(ImageTrainConfig, args.config, overrides)
    t0 = time.perf_counter()
    train(cfg, progress=False)
    return run / "model.pt", time.perf_counter() - t0


def score(
    name: str, weights: Path, files: dict[str, Any], cfg: ImageTrainConfig, out: Path
) -> dict[str, Any]:
    """Predict each evaluation set once, score it against both layouts' amodal GT."""
    model, _ = load_trained_model(weights)
    model = model.float().eval()
    tf = build_transforms(
        train=False, min_size=(cfg.data.test_min_size,), max_size=cfg.data.max_size
    )
    row: dict[str, Any] = {}
    for split in SETS:
        pred_dir = out / "eval" / name / split
        json_path, root = files[split]["kins"]
        ds = CocoInstanceDataset(json_path, root, transforms=tf)
        evaluate(model, ds, json_path, out_dir=pred_dir, progress=False, mask_target="amodal")
        row[split] = {}
        for layout in LAYOUTS:
            gt_json, _ = files[split][layout]
            m = evaluate_occlusion(
                gt_json, pred_dir / "results.json", work_dir=pred_dir / layout,
                target="amodal", amodal=True, occluded=True, coco_occ=False,
                min_occlusion=0.3, img_ids=list(ds.image_ids),
            )  # fmt: skip
            row[split][layout] = {
                "AP": m["amodal"]["segm"]["AP"],
                "AP50": m["amodal"]["segm"]["AP50"],
                "AP_occluded": m["amodal_occluded"]["segm"]["AP"],
                "box_AP": m["amodal"]["bbox"]["AP"],
            }
    return row


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("runs/amodal_e2e"))
    p.add_argument("--config", default=str(ROOT / "configs/objects_davis.yaml"))
    p.add_argument("--weights", default=str(ROOT / "src/instseg/weights/objects_default.pt"))
    p.add_argument("--heads", nargs="*", default=["maskrcnn", "bcnet"])
    p.add_argument("--train-layout", choices=LAYOUTS, default="kins")
    p.add_argument("--iters", type=int, default=400)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument(
        "--reference",
        default="",
        help="weights scored as an extra row (default: --weights, no amodal training; 'none')",
    )
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    out = args.out
    cfg = load_config(ImageTrainConfig, args.config, [])
    files = export_layouts(cfg, out)
    rows: dict[str, Any] = {}
    seconds: dict[str, float] = {}
    for head in args.heads:
        weights, seconds[head] = train_head(head, files, args, out)
        rows[head] = score(head, weights, files, cfg, out)
    ref = args.reference or args.weights
    if ref != "none":
        rows["reference (no amodal training)"] = score("reference", Path(ref), files, cfg, out)
    report = {
        "command": " ".join(["scripts/amodal_e2e.py", *(argv or sys.argv[1:])]),
        "cpu": cpu_name(),
        "threads": args.threads,
        "train_layout": args.train_layout,
        "iters": args.iters,
        "seed": args.seed,
        "train_seconds": seconds,
        "rows": rows,
    }
    atomic_write_json(out / "report.json", report, indent=1)
    lines = [
        f"`{report['command']}`; CPU {report['cpu']}, {args.threads} thread(s), fp32; trained on "
        f"the {args.train_layout} file, {args.iters} iterations, seed {args.seed}.",
        "",
        "Amodal mask AP (pycocotools; > 30% occluded = the primary metric), scored against the "
        "KINS-layout / COCOA-layout GT of the same images:",
        "",
        "| model | set | AP occl. > 30% (KINS / COCOA) | AP (KINS / COCOA) | AP50 | box AP |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for name, row in rows.items():
        for split in SETS:
            k, c = row[split]["kins"], row[split]["cocoa_cls"]
            lines.append(
                f"| {name} | {split} | {k['AP_occluded']:.1f} / {c['AP_occluded']:.1f} | "
                f"{k['AP']:.1f} / {c['AP']:.1f} | {k['AP50']:.1f} | {k['box_AP']:.1f} |"
            )
    text = "\n".join(lines) + "\n"
    atomic_write_text(out / "report.md", text)
    print(text)
    print(json.dumps(seconds))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
