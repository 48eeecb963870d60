"""Reproduce the BCNet ablations (survey Tables 3.1-3.4) on the synthetic occlusion benchmark.

Every variant is the same detector (default EfficientNet-Lite0 + FCOS) with a different mask
head from the zoo, trained with the same budget and seeds on heavily occluded synthetic scenes
(``data.synthetic.occlusion=0.9``), then scored on the held-out scenes:

- full set: mask AP / AP50 on every test image ("COCO" columns of the paper);
- COCO-OCC: the test images with a pair of boxes of IoU >= 0.2 (``extract_coco_occ``);
- occluded instances: AP with only instances whose visible/amodal area ratio shows > 10 %
  occlusion as positives (others are ignore regions; :mod:`instseg.evaluation.amodal`).

Tables (markdown on stdout, everything in ``OUT/results.json``):

- 3.1 occluder modelling: no occluder target / contour / mask / both (``bcnet_no_occ_targets``,
  ``bcnet_occ_contour``, ``bcnet_occ_mask``, ``bcnet``);
- 3.2 occludee modelling: no guidance, guidance with the occludee mask only, guidance with
  mask + contour (``bcnet_no_guidance``, ``bcnet_no_occludee_contour``, ``bcnet``);
- 3.3 structure: single/bilayer x FCN/GCN (``single_fcn``, ``single_gcn``, ``bilayer_fcn``,
  ``bcnet``) with parameter counts (whole model and mask head);
- 3.4-style: the Mask R-CNN head baseline (``maskrcnn``) vs BCNet on the same detector.

Example (tiny check)::

    python scripts/repro_bcnet.py --out runs/repro_bcnet_tiny --iters 20 --num-train 40 \\
        --num-test 20 --seeds 0 --variants bcnet single_fcn

Re-running the same command skips finished runs and resumes interrupted ones.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from repro_common import (  # noqa: E402
    add_common_args,
    cell,
    count_params,
    get,
    markdown_table,
    mean,
    num_classes_of,
    run_all,
)

VARIANTS = (
    "maskrcnn",
    "bcnet_no_occ_targets",
    "bcnet_occ_contour",
    "bcnet_occ_mask",
    "bcnet",
    "bcnet_no_guidance",
    "bcnet_no_occludee_contour",
    "single_fcn",
    "single_gcn",
    "bilayer_fcn",
)
TABLES = {
    "Table 3.1: occluder modelling (first GCN layer)": (
        ("bcnet_no_occ_targets", "no occluder target"),
        ("bcnet_occ_contour", "occluder contour"),
        ("bcnet_occ_mask", "occluder mask"),
        ("bcnet", "contour + mask (joint)"),
    ),
    "Table 3.2: occludee modelling (second GCN layer)": (
        ("bcnet_no_guidance", "no guidance (contour + mask)"),
        ("bcnet_no_occludee_contour", "guidance + mask"),
        ("bcnet", "guidance + contour + mask"),
    ),
    "Table 3.3: bilayer vs single layer, GCN vs FCN": (
        ("single_fcn", "single layer FCN"),
        ("single_gcn", "single layer GCN"),
        ("bilayer_fcn", "bilayer FCN"),
        ("bcnet", "bilayer GCN"),
    ),
    "Table 3.4: mask head on the same detector": (
        ("maskrcnn", "baseline (Mask R-CNN head)"),
        ("bcnet", "BCNet"),
    ),
}
COLUMNS = (
    ("COCO-OCC AP", ("coco_occ", "segm", "AP")),
    ("COCO-OCC AP50", ("coco_occ", "segm", "AP50")),
    ("occluded AP", ("occluded", "segm", "AP")),
    ("occluded AP50", ("occluded", "segm", "AP50")),
    ("full AP", ("segm", "AP")),
    ("full AP50", ("segm", "AP50")),
)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_common_args(p, variants=VARIANTS)
    p.add_argument("--occlusion", type=float, default=0.9, help="synthetic occlusion level")
    args = p.parse_args(argv)
    common = [f"data.synthetic.occlusion={args.occlusion}", "evaluation.occluded=true"]
    runs = run_all(args, lambda v: [*common, f"model.name={args.detector}_{v}"])
    k = num_classes_of(args.out)
    params = {v: count_params(f"{args.detector}_{v}", k) for v in args.variants}
    text, tables = [], {}
    for title, rows in TABLES.items():
        body, data = [], []
        for variant, label in rows:
            if variant not in runs:
                continue
            seeds = runs[variant]
            vals = {name: [get(m, *path) for m in seeds.values()] for name, path in COLUMNS}
            total, head = params[variant]
            body.append(
                [label, variant, *(cell(v) for v in vals.values()),
                 f"{total / 1e6:.2f}M", f"{head / 1e6:.3f}M"]
            )  # fmt: skip
            data.append(
                {"variant": variant, "label": label, "seeds": sorted(seeds),
                 "mean": {n: mean(v) for n, v in vals.items()}, "values": vals,
                 "params": total, "mask_head_params": head}
            )  # fmt: skip
        if body:
            headers = ["model", "variant", *(n for n, _ in COLUMNS), "params", "head params"]
            text.append(markdown_table(title, headers, body))
            tables[title] = data
    report = "\n".join(text) or "(no finished runs)\n"
    print(report)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.md").write_text(report)
    payload = {"settings": {k2: str(v) for k2, v in vars(args).items()}, "tables": tables,
               "runs": {v: {str(s): m for s, m in r.items()} for v, r in runs.items()}}  # fmt: skip
    (args.out / "results.json").write_text(json.dumps(payload, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
